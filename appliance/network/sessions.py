"""Captive-portal sessions: persisted in appliance.db, enforced by nftables set timeouts.

The database is the truth the helper restores the kernel's sets from (at its start, after a
ruleset reload, after a reboot). Each session keeps two expiries: the wall clock, and
CLOCK_BOOTTIME with the boot's id. Within one boot the boot-time expiry is exact whatever the
wall clock does; after a reboot only the wall clock is left, and it may be wrong (no RTC on a
Pi until NTP syncs), so the remaining time is capped at the session length: a session can
never come back longer than it was granted. With a trusted clock (`appliance/clock.py`) the cap
changes nothing (a wall-clock expiry is never more than a session length ahead), so no clock
state is needed here; see docs/network.md, "Sessions across restarts".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from appliance.network.schema import COMPONENT, MIGRATIONS
from appliance.store import migrate, open_db, transaction


@dataclass(frozen=True)
class Session:
    """An accepted client: its MAC, the address it accepted from, every address it uses, and
    when it ends (wall clock, seconds)."""

    mac: str
    ip: str
    started: float
    expires: float
    boot_id: str
    boot_expires: float
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Clock:
    """Now, as the wall clock, CLOCK_BOOTTIME and the boot's id (injected so tests can move it)."""

    wall: float
    boot: float
    boot_id: str


def clock() -> Clock:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # pragma: no cover - every Linux has it
        boot_id = "unknown"
    return Clock(time.time(), time.clock_gettime(time.CLOCK_BOOTTIME), boot_id)


def remaining(session: Session, now: Clock, session_seconds: int) -> float:
    """Seconds `session` has left (0 when over). Pure; the rule is in the module docstring."""
    same_boot = session.boot_id == now.boot_id
    left = session.boot_expires - now.boot if same_boot else session.expires - now.wall
    return max(0.0, min(left, float(session_seconds)))


def open_sessions_db(path: Path) -> sqlite_utils.Database:
    db = open_db(path)
    migrate(db, COMPONENT, MIGRATIONS)
    return db


def accept(db: sqlite_utils.Database, mac: str, ip: str, addresses: tuple[str, ...],
           now: Clock, seconds: int) -> Session:
    """Start (or restart) the session of `mac` for `seconds`."""
    addrs = tuple(dict.fromkeys((ip, *addresses)))
    with transaction(db) as conn:
        conn.execute("DELETE FROM network_sessions WHERE mac = ?", [mac])
        conn.execute(
            "INSERT INTO network_sessions (mac, ip, started, expires, boot_id, boot_expires)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [mac, ip, now.wall, now.wall + seconds, now.boot_id, now.boot + seconds])
        conn.executemany("INSERT INTO network_session_addresses (mac, ip) VALUES (?, ?)",
                         [(mac, a) for a in addrs])
    return Session(mac, ip, now.wall, now.wall + seconds, now.boot_id, now.boot + seconds, addrs)


def add_addresses(db: sqlite_utils.Database, mac: str, addresses: tuple[str, ...]) -> None:
    with transaction(db) as conn:
        conn.executemany(
            "INSERT OR IGNORE INTO network_session_addresses (mac, ip) SELECT ?, ?"
            " WHERE EXISTS (SELECT 1 FROM network_sessions WHERE mac = ?)",
            [(mac, a, mac) for a in addresses])


def revoke(db: sqlite_utils.Database, mac: str) -> Session | None:
    found = get(db, mac)
    if found is not None:
        with transaction(db) as conn:
            conn.execute("DELETE FROM network_sessions WHERE mac = ?", [mac])
    return found


def get(db: sqlite_utils.Database, mac: str) -> Session | None:
    return next((s for s in all_sessions(db) if s.mac == mac), None)


def all_sessions(db: sqlite_utils.Database) -> list[Session]:
    rows = db.execute("SELECT mac, ip, started, expires, boot_id, boot_expires"
                      " FROM network_sessions ORDER BY started").fetchall()
    addrs: dict[str, list[str]] = {}
    for mac, ip in db.execute("SELECT mac, ip FROM network_session_addresses ORDER BY rowid"):
        addrs.setdefault(mac, []).append(ip)
    return [Session(mac=r[0], ip=r[1], started=r[2], expires=r[3], boot_id=r[4], boot_expires=r[5],
                    addresses=tuple(addrs.get(r[0], ()))) for r in rows]


def expire(db: sqlite_utils.Database, now: Clock, session_seconds: int) -> list[Session]:
    """Delete sessions with no time left; return them."""
    over = [s for s in all_sessions(db) if remaining(s, now, session_seconds) <= 0]
    if over:
        with transaction(db) as conn:
            conn.executemany("DELETE FROM network_sessions WHERE mac = ?", [(s.mac,) for s in over])
    return over


def by_address(db: sqlite_utils.Database, ip: str) -> Session | None:
    row = db.execute("SELECT mac FROM network_session_addresses WHERE ip = ?", [ip]).fetchone()
    return get(db, row[0]) if row else None


# -- openings to shared services (open-service) --------------------------------------------------
@dataclass(frozen=True)
class Share:
    """What open-service put into the kernel for one (device, service) pair: the exact
    elements, so close-service and a renewal remove exactly them."""

    from_mac: str
    to_mac: str
    fwd: tuple[str, ...]
    rev: tuple[str, ...]


def put_share(db: sqlite_utils.Database, share: Share, now: Clock, seconds: int) -> None:
    with transaction(db) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO network_shares (from_mac, to_mac, fwd, rev, boot_id,"
            " boot_expires) VALUES (?, ?, ?, ?, ?, ?)",
            [share.from_mac, share.to_mac, "\n".join(share.fwd), "\n".join(share.rev),
             now.boot_id, now.boot + seconds])


def _share(row: tuple[str, str, str, str]) -> Share:
    return Share(row[0], row[1], tuple(filter(None, row[2].split("\n"))),
                 tuple(filter(None, row[3].split("\n"))))


def get_share(db: sqlite_utils.Database, from_mac: str, to_mac: str) -> Share | None:
    row = db.execute("SELECT from_mac, to_mac, fwd, rev FROM network_shares"
                     " WHERE from_mac = ? AND to_mac = ?", [from_mac, to_mac]).fetchone()
    return _share(row) if row else None


def delete_share(db: sqlite_utils.Database, from_mac: str, to_mac: str) -> None:
    with transaction(db) as conn:
        conn.execute("DELETE FROM network_shares WHERE from_mac = ? AND to_mac = ?",
                     [from_mac, to_mac])


def expire_shares(db: sqlite_utils.Database, now: Clock) -> list[Share]:
    """Delete openings whose time is over (or from another boot: the kernel's table is new)."""
    rows = db.execute("SELECT from_mac, to_mac, fwd, rev FROM network_shares"
                      " WHERE boot_id != ? OR boot_expires <= ?", [now.boot_id, now.boot]).fetchall()
    for row in rows:
        delete_share(db, row[0], row[1])
    return [_share(r) for r in rows]
