"""Enrollment tables in the console database, as ordered migrations (component "provision")."""

from __future__ import annotations

from appliance.store import Migration

# The name its migrations are recorded under, and the database file they belong to.
COMPONENT = "provision"
DATABASE = "console"

MIGRATIONS = [
    Migration(
        1,
        "enrollment tokens, their audit log, enrollment rate limits",
        """
        CREATE TABLE enrollment_tokens (
            token_hash TEXT PRIMARY KEY,
            device_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            used_at REAL,
            used_by TEXT
        );
        CREATE INDEX enrollment_tokens_device ON enrollment_tokens (device_id);
        CREATE TABLE enrollment_audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            event TEXT NOT NULL,
            device_id TEXT,
            client TEXT,
            token_id TEXT,
            detail TEXT
        );
        CREATE INDEX enrollment_audit_device ON enrollment_audit (device_id, ts);
        CREATE TABLE enrollment_attempts (
            key TEXT PRIMARY KEY,
            attempts INTEGER NOT NULL,
            window_start REAL NOT NULL
        );
        """,
    ),
]
