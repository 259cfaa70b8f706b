"""The device inventory in `appliance.db`: writes from DHCP events and mDNS, reads for the CLI,
the summary and other capabilities.

Every function takes the database (a `sqlite_utils.Database` with the "devices" migrations
applied) and the time; none opens a socket. A row is keyed by MAC alone and never linked to
another MAC: a phone under a new private address is a new row. Sizes are bounded here (rows,
services per device, TXT keys and values), so a flood of fake MACs or records cannot grow the
database without limit: past `max_devices` the least recently seen row goes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from appliance.devices.events import DhcpEvent, clean_text, is_randomized
from appliance.devices.fingerprint import Service, Signals, identify
from appliance.store import transaction

# A device whose lease ended counts as here while mDNS or the neighbour table saw it this
# recently (seconds).
PRESENT_WINDOW = 600.0
MAX_SERVICES_PER_DEVICE = 32
MAX_SERVICE_NAME = 128
MAX_TXT_VALUE = 128
# TXT keys kept: what identifies a model or helps IT find a display or printer. Identifiers
# (`deviceid`, often the MAC; `pk`, `btaddr`, Apple's rotating `rpBA`/`rpHN`/`rpAD`, Cast's
# `id`) are dropped before storage, not merely before export.
TXT_KEYS = frozenset({"model", "md", "fn", "ty", "product", "note", "osvers", "srcvers", "rpmd",
                      "rpvr", "ve", "pdl", "color", "duplex", "usb_mfg", "usb_mdl", "rp",
                      "adminurl", "ca"})

VendorLookup = Callable[[str], str | None]


@dataclass(frozen=True)
class ServiceRecord:
    """An mDNS service instance resolved on the classroom network (untrusted until `clean`)."""

    type: str
    name: str
    server: str | None
    port: int | None
    address: str | None
    txt: Mapping[str, str | None]


def clean_txt(txt: Mapping[str, str | None]) -> dict[str, str]:
    """The TXT keys we keep (`TXT_KEYS`, case ignored), values cleaned and bounded."""
    out: dict[str, str] = {}
    for key, value in list(txt.items())[:64]:
        k = str(key).lower()[:32]
        if k in TXT_KEYS and k not in out:
            out[k] = clean_text(str(value or ""), MAX_TXT_VALUE)
    return out


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(ts))


def _ensure(db: sqlite_utils.Database, mac: str, ts: float, max_devices: int,
            vendor: VendorLookup | None) -> bool:
    """Make sure `mac` has a row; True if it is new (counted in device_days)."""
    if db.execute("SELECT 1 FROM device_inventory WHERE mac = ?", [mac]).fetchone():
        return False
    (count,) = db.execute("SELECT count(*) FROM device_inventory").fetchone()
    if count >= max_devices:
        db.execute("DELETE FROM device_inventory WHERE mac IN (SELECT mac FROM device_inventory "
                   "ORDER BY last_seen LIMIT ?)", [count - max_devices + 1])
    randomized = is_randomized(mac)
    name = None if randomized or vendor is None else vendor(mac)
    db.execute("INSERT INTO device_inventory (mac, randomized, first_seen, last_seen, vendor) "
               "VALUES (?, ?, ?, ?, ?)",
               [mac, int(randomized), ts, ts, clean_text(name, 64) if name else None])
    db.execute("INSERT INTO device_days (day, new_macs) VALUES (?, 1) "
               "ON CONFLICT (day) DO UPDATE SET new_macs = new_macs + 1", [_day(ts)])
    return True


def apply_dhcp(db: sqlite_utils.Database, event: DhcpEvent, *, max_devices: int = 5000,
               vendor: VendorLookup | None = None) -> None:
    """Record one DHCP event. `add`/`old` (and renewals) set the lease; `del` ends it. What
    the client told us (hostname, vendor class, option 55, client id) is only overwritten by
    an event that carries it: dnsmasq's `old` at start has DATA_MISSING and none of it."""
    with transaction(db):
        if event.action in ("arp-add", "arp-del"):
            known = db.execute("SELECT 1 FROM device_inventory WHERE mac = ?",
                               [event.mac]).fetchone()
            if known and event.action == "arp-add":
                db.execute("UPDATE device_inventory SET last_seen = max(last_seen, ?) "
                           "WHERE mac = ?", [event.ts, event.mac])
            return
        _ensure(db, event.mac, event.ts, max_devices, vendor)
        if event.action == "del":
            db.execute("UPDATE device_inventory SET lease_expires = NULL, "
                       "last_seen = max(last_seen, ?) WHERE mac = ? AND (ip = ? OR ? IS NULL)",
                       [event.ts, event.mac, event.ip, event.ip])
        else:
            sets = ["last_seen = max(last_seen, ?)", "ip = ?", "lease_expires = ?"]
            args: list[Any] = [event.ts, event.ip,
                               event.lease_expires if event.lease_expires else event.ts + 3600]
            if not event.data_missing:
                for column, value in (("hostname", event.name),
                                      ("vendor_class", event.vendor_class),
                                      ("client_id", event.client_id),
                                      ("requested_options",
                                       ",".join(map(str, event.requested_options))
                                       if event.requested_options else None)):
                    if value is not None:
                        sets.append(f"{column} = ?")
                        args.append(value)
            # Another MAC that held this IP before has lost it (one lease per address).
            if event.ip:
                db.execute("UPDATE device_inventory SET ip = NULL WHERE ip = ? AND mac != ?",
                           [event.ip, event.mac])
            db.execute(f"UPDATE device_inventory SET {', '.join(sets)} WHERE mac = ?",  # noqa: S608
                       [*args, event.mac])
            _count_peak(db, event.ts)
        reidentify(db, event.mac)


def _count_peak(db: sqlite_utils.Database, ts: float) -> None:
    (leases,) = db.execute("SELECT count(*) FROM device_inventory WHERE lease_expires > ?",
                           [ts]).fetchone()
    db.execute("INSERT INTO device_days (day, peak_leases) VALUES (?, ?) ON CONFLICT (day) "
               "DO UPDATE SET peak_leases = max(peak_leases, excluded.peak_leases)",
               [_day(ts), leases])


def mac_for_ip(db: sqlite_utils.Database, ip: str) -> str | None:
    row = db.execute("SELECT mac FROM device_inventory WHERE ip = ? ORDER BY last_seen DESC "
                     "LIMIT 1", [ip]).fetchone()
    return str(row[0]) if row else None


def apply_service(db: sqlite_utils.Database, mac: str, record: ServiceRecord, *,
                  now: float | None = None, max_devices: int = 5000,
                  vendor: VendorLookup | None = None) -> None:
    """Record (or refresh) an mDNS service instance announced by `mac`, bounded per device."""
    ts = _now(now)
    type_ = clean_text(record.type, 64)
    name = clean_text(record.name, MAX_SERVICE_NAME)
    txt = json.dumps(clean_txt(record.txt), sort_keys=True)
    port = record.port if isinstance(record.port, int) and 0 <= record.port <= 65535 else None
    with transaction(db):
        _ensure(db, mac, ts, max_devices, vendor)
        db.execute(
            "INSERT INTO device_services (mac, type, name, server, port, address, txt, "
            "first_seen, last_seen) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (mac, type, name) "
            "DO UPDATE SET server = excluded.server, port = excluded.port, "
            "address = excluded.address, txt = excluded.txt, last_seen = excluded.last_seen",
            [mac, type_, name, clean_text(record.server or "", 128) or None, port,
             record.address, txt, ts, ts])
        db.execute("DELETE FROM device_services WHERE mac = ? AND rowid NOT IN (SELECT rowid "
                   "FROM device_services WHERE mac = ? ORDER BY last_seen DESC LIMIT ?)",
                   [mac, mac, MAX_SERVICES_PER_DEVICE])
        db.execute("UPDATE device_inventory SET last_seen = max(last_seen, ?) WHERE mac = ?",
                   [ts, mac])
        reidentify(db, mac)


def remove_service(db: sqlite_utils.Database, type_: str, name: str) -> None:
    """An mDNS goodbye: forget that instance (on whichever device announced it)."""
    with transaction(db):
        macs = [r[0] for r in db.execute("SELECT mac FROM device_services WHERE type = ? AND "
                                         "name = ?", [type_, name]).fetchall()]
        db.execute("DELETE FROM device_services WHERE type = ? AND name = ?", [type_, name])
        for mac in macs:
            reidentify(db, mac)


def add_probes(db: sqlite_utils.Database, mac: str, os: str, count: int = 1) -> None:
    """Count `count` captive-portal probes of OS family `os` from `mac` (the portal calls this;
    only counts are kept, never which URL or when)."""
    with transaction(db):
        row = db.execute("SELECT probe_counts FROM device_inventory WHERE mac = ?",
                         [mac]).fetchone()
        if row is None:
            return
        counts = json.loads(row[0])
        if os in counts or len(counts) < 8:
            counts[clean_text(os, 16)] = min(10**6, int(counts.get(os, 0)) + count)
        db.execute("UPDATE device_inventory SET probe_counts = ? WHERE mac = ?",
                   [json.dumps(counts, sort_keys=True), mac])
        reidentify(db, mac)


def set_group(db: sqlite_utils.Database, mac: str, group: str) -> bool:
    """Put `mac` in `group` (`staff`, `student`, `""` for none); False if it is unknown."""
    with transaction(db):
        cur = db.execute("UPDATE device_inventory SET grp = ? WHERE mac = ?",
                         [clean_text(group, 32), mac])
        return bool(cur.rowcount)


def reidentify(db: sqlite_utils.Database, mac: str) -> None:
    """Recompute the identification of `mac` from everything stored about it."""
    row = db.execute("SELECT requested_options, vendor_class, hostname, vendor, randomized, "
                     "probe_counts FROM device_inventory WHERE mac = ?", [mac]).fetchone()
    if row is None:
        return
    services = tuple(Service(t, json.loads(txt)) for t, txt in db.execute(
        "SELECT type, txt FROM device_services WHERE mac = ? ORDER BY type, name", [mac]))
    prl = tuple(int(x) for x in row[0].split(",")) if row[0] else None
    result = identify(Signals(requested_options=prl, vendor_class=row[1], hostname=row[2],
                              vendor=row[3], randomized=bool(row[4]), services=services,
                              probe_counts=json.loads(row[5])))
    db.execute("UPDATE device_inventory SET kind = ?, os = ?, os_version = ?, model = ?, "
               "score = ?, evidence = ? WHERE mac = ?",
               [result.kind, result.os, result.os_version, result.model, result.score,
                json.dumps(list(result.evidence)), mac])


def expire(db: sqlite_utils.Database, retention_days: float, *, now: float | None = None) -> int:
    """Delete devices not seen for `retention_days` (their services go with them) and days
    older than that; return how many devices went."""
    cutoff = _now(now) - retention_days * 86400
    with transaction(db):
        cur = db.execute("DELETE FROM device_inventory WHERE last_seen < ?", [cutoff])
        db.execute("DELETE FROM device_days WHERE day < ?", [_day(cutoff)])
        return int(cur.rowcount)


# -- reads ---------------------------------------------------------------------------------------
COLUMNS = ("mac", "randomized", "first_seen", "last_seen", "ip", "lease_expires", "hostname",
           "vendor_class", "requested_options", "vendor", "kind", "os", "os_version", "model",
           "score", "evidence", "probe_counts", "grp")


def _present_sql() -> str:
    return "(lease_expires > :now OR last_seen > :now - :window)"


def _row(row: tuple[Any, ...], now: float) -> dict[str, Any]:
    d = dict(zip(COLUMNS, row, strict=True))
    d["randomized"] = bool(d["randomized"])
    d["evidence"] = json.loads(d["evidence"])
    d["probe_counts"] = json.loads(d["probe_counts"])
    d["group"] = d.pop("grp")
    d["present"] = bool((d["lease_expires"] or 0) > now or d["last_seen"] > now - PRESENT_WINDOW)
    return d


def devices(db: sqlite_utils.Database, *, present_only: bool = False,
            now: float | None = None) -> list[dict[str, Any]]:
    """Every device (or only those here now), most recently seen first, with its services."""
    ts = _now(now)
    where = f"WHERE {_present_sql()}" if present_only else ""
    rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM device_inventory {where} "  # noqa: S608
                      "ORDER BY last_seen DESC, mac",
                      {"now": ts, "window": PRESENT_WINDOW}).fetchall()
    found = [_row(r, ts) for r in rows]
    by_mac: dict[str, list[dict[str, Any]]] = {}
    for mac, type_, name, server, port, address, txt in db.execute(
            "SELECT mac, type, name, server, port, address, txt FROM device_services "
            "ORDER BY type, name"):
        by_mac.setdefault(mac, []).append({"type": type_, "name": name, "server": server,
                                           "port": port, "address": address,
                                           "txt": json.loads(txt)})
    for d in found:
        d["services"] = by_mac.get(d["mac"], [])
    return found


def device(db: sqlite_utils.Database, mac: str, *, now: float | None = None) -> dict[str, Any] | None:
    mac = mac.lower()
    return next((d for d in devices(db, now=now) if d["mac"] == mac), None)


def counts(db: sqlite_utils.Database, *, now: float | None = None) -> dict[str, Any]:
    """Devices here now, by kind and by OS family; new MACs today; displays and printers."""
    ts = _now(now)
    params = {"now": ts, "window": PRESENT_WINDOW}
    present = _present_sql()

    def grouped(column: str) -> dict[str, int]:
        return {str(k): int(n) for k, n in db.execute(
            f"SELECT {column}, count(*) FROM device_inventory WHERE {present} "  # noqa: S608
            f"GROUP BY {column} ORDER BY {column}", params)}

    (now_count,) = db.execute(f"SELECT count(*) FROM device_inventory WHERE {present}",  # noqa: S608
                              params).fetchone()
    (total,) = db.execute("SELECT count(*) FROM device_inventory").fetchone()
    day = db.execute("SELECT new_macs, peak_leases FROM device_days WHERE day = ?",
                     [_day(ts)]).fetchone()
    by_kind = grouped("kind")
    return {"now": int(now_count), "known": int(total), "by_kind": by_kind, "by_os": grouped("os"),
            "new_today": int(day[0]) if day else 0, "peak_leases_today": int(day[1]) if day else 0,
            "displays": by_kind.get("display", 0), "printers": by_kind.get("printer", 0)}
