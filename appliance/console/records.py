"""The console's fleet records: what ingest writes and what the web pages read.

Writes are single short transactions (ingest is the only writer); reads build one snapshot that
both the fleet page and its live stream use, so the two never disagree.
"""

from __future__ import annotations

import time
from typing import Any

import sqlite_utils

from appliance.console import presence
from appliance.fleet.payloads import METRICS, Status, Telemetry
from appliance.store import transaction

HISTORY_WINDOW_S = 3600
HISTORY_POINTS = 60


def _presence(row: tuple[Any, ...] | None) -> presence.Presence | None:
    if row is None:
        return None
    return presence.Presence(state=row[0], session=row[1], reason=row[2], since=row[3])


def record_status(db: sqlite_utils.Database, device_id: str, status: Status, now: float) -> bool:
    """Apply a status message; return False when presence rules say to ignore it."""
    with transaction(db) as conn:
        row = conn.execute(
            "SELECT state, session, reason, since FROM devices WHERE id = ?", [device_id]
        ).fetchone()
        new = presence.apply_status(_presence(row), status, now)
        if new is None:
            return False
        if row is None:
            conn.execute(
                "INSERT INTO devices (id, state, session, reason, since, first_seen) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [device_id, new.state, new.session, new.reason, new.since, now],
            )
        else:
            conn.execute(
                "UPDATE devices SET state = ?, session = ?, reason = ?, since = ? WHERE id = ?",
                [new.state, new.session, new.reason, new.since, device_id],
            )
        if status.state == "online":
            conn.execute(
                "UPDATE devices SET name = coalesce(?, name), agent_version = coalesce(?, "
                "agent_version), interval = coalesce(?, interval), last_seen = ? WHERE id = ?",
                [status.name, status.agent, status.interval, now, device_id],
            )
    return True


def record_telemetry(db: sqlite_utils.Database, device_id: str, sample: Telemetry, now: float) -> None:
    """Store a sample (idempotent on device and timestamp); the newest one becomes current."""
    cols = list(METRICS)
    values = [sample.metrics.get(c) for c in cols]
    with transaction(db) as conn:
        conn.execute(
            "INSERT INTO devices (id, state, session, since, first_seen) "
            "VALUES (?, 'online', 0, ?, ?) ON CONFLICT(id) DO NOTHING",
            [device_id, now, now],
        )
        conn.execute(
            f"INSERT OR IGNORE INTO health (device_id, ts, {', '.join(cols)}) "  # noqa: S608 - fixed names
            f"VALUES (?, ?, {', '.join('?' * len(cols))})",
            [device_id, sample.ts, *values],
        )
        conn.execute("UPDATE devices SET last_seen = ? WHERE id = ?", [now, device_id])
        conn.execute(
            f"UPDATE devices SET last_ts = ?, {', '.join(f'{c} = ?' for c in cols)} "  # noqa: S608
            "WHERE id = ? AND (last_ts IS NULL OR last_ts <= ?)",
            [sample.ts, *values, device_id, sample.ts],
        )


def record_reject(db: sqlite_utils.Database, device_id: str, kind: str, reason: str, now: float) -> bool:
    """Count a rejected message; return True if this (device, kind, reason) is new."""
    cursor = db.execute(
        "INSERT INTO ingest_rejects (device_id, kind, reason, count, first_at, last_at) "
        "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT(device_id, kind, reason) "
        "DO UPDATE SET count = count + 1, last_at = excluded.last_at RETURNING count",
        [device_id, kind, reason, now, now],
    )
    return int(cursor.fetchone()[0]) == 1


def set_ingest_state(db: sqlite_utils.Database, **values: float) -> None:
    db.conn.executemany(
        "INSERT INTO ingest_state (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        list(values.items()),
    )


def prune_history(db: sqlite_utils.Database, history_days: int, now: float) -> int:
    cutoff_ms = int((now - history_days * 86400) * 1000)
    return db.execute("DELETE FROM health WHERE ts < ?", [cutoff_ms]).rowcount


def snapshot(
    db: sqlite_utils.Database, now: float | None = None, *, fallback_silent_after: float = 180.0
) -> dict[str, Any]:
    """Everything the fleet page shows, as JSON-ready data."""
    now = time.time() if now is None else now
    state = dict(db.execute("SELECT key, value FROM ingest_state").fetchall())
    heartbeat = state.get("heartbeat")
    ingest_alive = heartbeat is not None and now - heartbeat < presence.INGEST_DEAD_AFTER_S
    broker_connected = bool(state.get("broker_connected"))
    since_ms = int((now - HISTORY_WINDOW_S) * 1000)
    bucket_ms = HISTORY_WINDOW_S * 1000 // HISTORY_POINTS
    history: dict[str, list[list[float | None]]] = {}
    for device_id, bucket, cpu, mem in db.execute(
        "SELECT device_id, ts / ? AS bucket, round(avg(cpu_pct), 1), round(avg(mem_pct), 1) "
        "FROM health WHERE ts >= ? GROUP BY device_id, bucket ORDER BY device_id, bucket",
        [bucket_ms, since_ms],
    ).fetchall():
        history.setdefault(device_id, []).append([bucket * bucket_ms, cpu, mem])
    devices = []
    for row in db.query("SELECT * FROM devices ORDER BY coalesce(name, id), id"):
        seen = presence.shown(
            row["state"], row["reason"], row["last_seen"], row["interval"], now,
            fallback_silent_after=fallback_silent_after,
            broker_connected=broker_connected,
            ingest_alive=ingest_alive,
        )
        devices.append({
            "id": row["id"],
            "name": row["name"] or row["id"],
            "state": seen.state,
            "reason": seen.reason,
            "reason_text": presence.describe(seen.reason),
            "since": row["since"],
            "last_seen": row["last_seen"],
            "agent_version": row["agent_version"],
            "health": {m: row[m] for m in METRICS} | {"ts": row["last_ts"]},
            "history": history.get(row["id"], []),
        })
    rejects = db.execute("SELECT coalesce(sum(count), 0) FROM ingest_rejects").fetchone()[0]
    return {
        "generated_at": now,
        "ingest": {
            "alive": ingest_alive,
            "broker_connected": broker_connected and ingest_alive,
            "broker_since": state.get("broker_since"),
            "rejected_messages": rejects,
        },
        "counts": {
            "online": sum(d["state"] == "online" for d in devices),
            "total": len(devices),
        },
        "devices": devices,
    }
