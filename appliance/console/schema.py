"""The console database schema, as ordered migrations (component "console")."""

from __future__ import annotations

from appliance.store import Migration

# The name its migrations are recorded under, and the database file they belong to.
COMPONENT = "console"
DATABASE = "console"

MIGRATIONS = [
    Migration(
        1,
        "devices, health history, rejects, users, ingest state",
        """
        CREATE TABLE devices (
            id TEXT PRIMARY KEY,
            name TEXT,
            agent_version TEXT,
            state TEXT NOT NULL DEFAULT 'offline',
            reason TEXT,
            session INTEGER NOT NULL DEFAULT 0,
            since REAL NOT NULL,
            interval REAL,
            first_seen REAL NOT NULL,
            last_seen REAL,
            last_ts INTEGER,
            cpu_pct REAL, mem_pct REAL, disk_pct REAL, temp_c REAL, load1 REAL, uptime_s REAL
        );
        CREATE TABLE health (
            device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
            ts INTEGER NOT NULL,
            cpu_pct REAL, mem_pct REAL, disk_pct REAL, temp_c REAL, load1 REAL, uptime_s REAL,
            PRIMARY KEY (device_id, ts)
        ) WITHOUT ROWID;
        CREATE INDEX health_ts ON health (ts);
        CREATE TABLE ingest_rejects (
            device_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            reason TEXT NOT NULL,
            count INTEGER NOT NULL,
            first_at REAL NOT NULL,
            last_at REAL NOT NULL,
            PRIMARY KEY (device_id, kind, reason)
        );
        CREATE TABLE ingest_state (key TEXT PRIMARY KEY, value REAL NOT NULL);
        CREATE TABLE users (
            username TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        """,
    ),
    Migration(
        2,
        "sign-in throttling",
        """
        CREATE TABLE login_failures (
            client TEXT PRIMARY KEY,
            failures INTEGER NOT NULL,
            window_start REAL NOT NULL
        );
        """,
    ),
    Migration(
        3,
        "capability summaries, clock trust of samples",
        # The latest summary section per device (ingest replaces it on every arrival), and the
        # flag of samples whose time the device could not vouch for. Flagged rows are few:
        # the partial index makes counting them cheap.
        """
        CREATE TABLE device_summaries (
            device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
            section TEXT NOT NULL,
            ts INTEGER NOT NULL,
            synced INTEGER NOT NULL,
            received_at REAL NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (device_id, section)
        ) WITHOUT ROWID;
        ALTER TABLE health ADD COLUMN unsynced INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX health_unsynced ON health (device_id, ts) WHERE unsynced = 1;
        """,
    ),
]
