"""The console's fleet records: what ingest writes and what the web pages read.

Writes are single short transactions (ingest is the only writer); reads build one snapshot that
both the fleet page and its live stream use, so the two never disagree. The device page reads
one device through the same code (`device`) and its longer history (`device_history`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import sqlite_utils

from appliance.console import presence
from appliance.fleet.payloads import METRICS, Status, Telemetry
from appliance.fleet.summaries import Summary, SummarySpec, dumps
from appliance.store import transaction

# The fleet page's chart: the last hour in one-minute buckets.
HISTORY_WINDOW_S = 3600
HISTORY_POINTS = 60
# The device page's charts: up to a week, in at most this many buckets whatever the range.
DEVICE_HISTORY_MAX_HOURS = 168
DEVICE_HISTORY_POINTS = 240
# The metrics of a device history point, in order after the bucket's start.
DEVICE_HISTORY_METRICS = ("cpu_pct", "mem_pct", "disk_pct", "temp_c")


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


def _ensure_device(conn: Any, device_id: str, now: float) -> None:
    # A message from a device the console has not heard a birth from yet.
    conn.execute(
        "INSERT INTO devices (id, state, session, since, first_seen) "
        "VALUES (?, 'online', 0, ?, ?) ON CONFLICT(id) DO NOTHING",
        [device_id, now, now],
    )


def record_telemetry(db: sqlite_utils.Database, device_id: str, sample: Telemetry, now: float) -> None:
    """Store a sample (idempotent on device and timestamp); the newest one becomes current.

    A sample flagged unsynced is kept in `health` with its flag but never becomes current: its
    time says nothing about whether it is newer than what is shown.
    """
    cols = list(METRICS)
    values = [sample.metrics.get(c) for c in cols]
    with transaction(db) as conn:
        _ensure_device(conn, device_id, now)
        conn.execute(
            f"INSERT OR IGNORE INTO health (device_id, ts, unsynced, {', '.join(cols)}) "  # noqa: S608 - fixed names
            f"VALUES (?, ?, ?, {', '.join('?' * len(cols))})",
            [device_id, sample.ts, int(not sample.synced), *values],
        )
        conn.execute("UPDATE devices SET last_seen = ? WHERE id = ?", [now, device_id])
        if sample.synced:
            conn.execute(
                f"UPDATE devices SET last_ts = ?, {', '.join(f'{c} = ?' for c in cols)} "  # noqa: S608
                "WHERE id = ? AND (last_ts IS NULL OR last_ts <= ?)",
                [sample.ts, *values, device_id, sample.ts],
            )


def record_summary(db: sqlite_utils.Database, device_id: str, summary: Summary, now: float) -> int:
    """Store the summary's valid sections, each replacing the device's previous one (the latest
    by arrival: an unsynced device clock cannot order them); return how many were stored."""
    if not summary.sections:
        return 0
    with transaction(db) as conn:
        _ensure_device(conn, device_id, now)
        conn.executemany(
            "INSERT INTO device_summaries (device_id, section, ts, synced, received_at, data) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(device_id, section) DO UPDATE SET "
            "ts = excluded.ts, synced = excluded.synced, received_at = excluded.received_at, "
            "data = excluded.data",
            [(device_id, name, summary.ts, int(summary.synced), now, dumps(values))
             for name, values in summary.sections.items()],
        )
        conn.execute("UPDATE devices SET last_seen = ? WHERE id = ?", [now, device_id])
    return len(summary.sections)


def device_summaries(
    db: sqlite_utils.Database, device_id: str, specs: Mapping[str, SummarySpec]
) -> list[dict[str, Any]] | None:
    """One entry per spec, in the specs' order: `name`, `title`, `ts` (ms, device clock),
    `synced`, `received_at` (s, console clock; None and values None when never reported) and
    `fields` (`key`, `label`, `kind`, `value`). Stored values a spec no longer has are left out.
    None when the device is unknown."""
    if db.execute("SELECT 1 FROM devices WHERE id = ?", [device_id]).fetchone() is None:
        return None
    stored = {
        row[0]: row[1:]
        for row in db.execute(
            "SELECT section, ts, synced, received_at, data FROM device_summaries "
            "WHERE device_id = ?", [device_id],
        ).fetchall()
    }
    entries = []
    for name, spec in specs.items():
        ts, synced, received_at, data = stored.get(name, (None, None, None, "{}"))
        values = json.loads(data)
        entries.append({
            "name": name,
            "title": spec.title,
            "ts": ts,
            "synced": None if synced is None else bool(synced),
            "received_at": received_at,
            "fields": [
                {"key": f.key, "label": f.label, "kind": f.kind, "value": values.get(f.key)}
                for f in spec.fields
            ],
        })
    return entries


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


def _ingest_status(db: sqlite_utils.Database, now: float) -> tuple[dict[str, float], bool, bool]:
    """The ingest worker's stored state, whether it is alive, and whether it reaches the broker."""
    state = dict(db.execute("SELECT key, value FROM ingest_state").fetchall())
    heartbeat = state.get("heartbeat")
    ingest_alive = heartbeat is not None and now - heartbeat < presence.INGEST_DEAD_AFTER_S
    return state, ingest_alive, bool(state.get("broker_connected"))


def _hour_history(
    db: sqlite_utils.Database, now: float, device_id: str | None = None
) -> dict[str, list[list[float | None]]]:
    """Average CPU and memory per minute over the last hour, per device (or of `device_id`).

    This is the fleet page's chart.
    """
    since_ms = int((now - HISTORY_WINDOW_S) * 1000)
    bucket_ms = HISTORY_WINDOW_S * 1000 // HISTORY_POINTS
    select = (
        "SELECT h.device_id, h.ts / ? AS bucket, round(avg(h.cpu_pct), 1), "
        "round(avg(h.mem_pct), 1) "
    )
    group = " GROUP BY h.device_id, bucket ORDER BY h.device_id, bucket"
    if device_id is None:
        # CROSS JOIN fixes the loop order: one primary-key range (device_id, ts >= since) per
        # device. Left to itself the planner scans all of `health` (30 days of the fleet),
        # once a second for every open fleet page.
        rows = db.execute(
            select + "FROM devices d CROSS JOIN health h ON h.device_id = d.id AND h.ts >= ?"
            " AND h.unsynced = 0" + group,
            [bucket_ms, since_ms],
        )
    else:  # on the primary key (device_id, ts)
        rows = db.execute(
            select + "FROM health h WHERE h.device_id = ? AND h.ts >= ? AND h.unsynced = 0"
            + group,
            [bucket_ms, device_id, since_ms],
        )
    history: dict[str, list[list[float | None]]] = {}
    for row_device, bucket, cpu, mem in rows.fetchall():
        history.setdefault(row_device, []).append([bucket * bucket_ms, cpu, mem])
    return history


def _device_entry(
    row: dict[str, Any],
    history: list[list[float | None]],
    now: float,
    *,
    fallback_silent_after: float,
    broker_connected: bool,
    ingest_alive: bool,
) -> dict[str, Any]:
    """One `devices` row as the fleet snapshot shows it (presence as shown, current health)."""
    seen = presence.shown(
        row["state"], row["reason"], row["last_seen"], row["interval"], now,
        fallback_silent_after=fallback_silent_after,
        broker_connected=broker_connected,
        ingest_alive=ingest_alive,
    )
    return {
        "id": row["id"],
        "name": row["name"] or row["id"],
        "state": seen.state,
        "reason": seen.reason,
        "reason_text": presence.describe(seen.reason),
        "since": row["since"],
        "last_seen": row["last_seen"],
        "agent_version": row["agent_version"],
        "health": {m: row[m] for m in METRICS} | {"ts": row["last_ts"]},
        "history": history,
    }


def snapshot(
    db: sqlite_utils.Database, now: float | None = None, *, fallback_silent_after: float = 180.0
) -> dict[str, Any]:
    """Everything the fleet page shows, as JSON-ready data."""
    now = time.time() if now is None else now
    state, ingest_alive, broker_connected = _ingest_status(db, now)
    history = _hour_history(db, now)
    devices = [
        _device_entry(
            row, history.get(row["id"], []), now,
            fallback_silent_after=fallback_silent_after,
            broker_connected=broker_connected,
            ingest_alive=ingest_alive,
        )
        for row in db.query("SELECT * FROM devices ORDER BY coalesce(name, id), id")
    ]
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


def device(
    db: sqlite_utils.Database,
    device_id: str,
    now: float | None = None,
    *,
    fallback_silent_after: float = 180.0,
) -> dict[str, Any] | None:
    """One device as the fleet snapshot shows it, or None if the console has never heard of it.

    Beyond the snapshot's keys: `first_seen`, `interval` (seconds, None when not announced) and
    `has_temp` (whether any stored sample has a temperature, so the page knows to chart it).
    """
    now = time.time() if now is None else now
    row = next(db.query("SELECT * FROM devices WHERE id = ?", [device_id]), None)
    if row is None:
        return None
    _, ingest_alive, broker_connected = _ingest_status(db, now)
    entry = _device_entry(
        row, _hour_history(db, now, device_id).get(device_id, []), now,
        fallback_silent_after=fallback_silent_after,
        broker_connected=broker_connected,
        ingest_alive=ingest_alive,
    )
    has_temp = row["temp_c"] is not None or db.execute(
        "SELECT EXISTS (SELECT 1 FROM health WHERE device_id = ? AND temp_c IS NOT NULL)",
        [device_id],
    ).fetchone()[0] == 1
    return entry | {"first_seen": row["first_seen"], "interval": row["interval"], "has_temp": has_temp}


def device_history(
    db: sqlite_utils.Database, device_id: str, now: float, hours: int
) -> dict[str, Any] | None:
    """A device's CPU, memory, disk and temperature over the last `hours`, averaged per bucket.

    Buckets are `hours` x 15 s long and aligned on the epoch (so a refresh does not shift them);
    the window is the DEVICE_HISTORY_POINTS buckets ending with the one holding `now`, so there
    are at most that many points whatever `hours` is. A bucket without samples has no point; a
    metric absent from every sample of a bucket is None. Samples flagged unsynced are not in
    the points (their time is not known); `unsynced` counts all of the device's stored ones. None
    when the device is unknown.
    """
    if not 1 <= hours <= DEVICE_HISTORY_MAX_HOURS:
        raise ValueError(f"hours must be 1-{DEVICE_HISTORY_MAX_HOURS}, not {hours}")
    if db.execute("SELECT 1 FROM devices WHERE id = ?", [device_id]).fetchone() is None:
        return None
    bucket_ms = hours * 3600 * 1000 // DEVICE_HISTORY_POINTS
    to_ms = int(now * 1000)
    end_ms = (to_ms // bucket_ms + 1) * bucket_ms
    from_ms = end_ms - DEVICE_HISTORY_POINTS * bucket_ms
    points = [
        [bucket * bucket_ms, cpu, mem, disk, temp]
        for bucket, cpu, mem, disk, temp in db.execute(
            "SELECT ts / ? AS bucket, round(avg(cpu_pct), 1), round(avg(mem_pct), 1), "
            "round(avg(disk_pct), 1), round(avg(temp_c), 1) FROM health "
            "WHERE device_id = ? AND ts >= ? AND ts < ? AND unsynced = 0 "
            "GROUP BY bucket ORDER BY bucket",
            [bucket_ms, device_id, from_ms, end_ms],
        ).fetchall()
    ]
    # All of them, not those of the window: their time is what cannot be believed.
    unsynced = db.execute(
        "SELECT count(*) FROM health WHERE device_id = ? AND unsynced = 1", [device_id]
    ).fetchone()[0]
    return {"device": device_id, "from": from_ms, "to": to_ms, "bucket_ms": bucket_ms,
            "points": points, "unsynced": unsynced}
