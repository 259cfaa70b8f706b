"""The filter's tables in `appliance.db` (component "filter"): running exams, timed overrides,
the audit log of policy changes, and counters for the summary."""

from __future__ import annotations

from appliance.store import Migration

COMPONENT = "filter"
DATABASE = "appliance"

MIGRATIONS = [
    Migration(
        1,
        "exams, overrides, audit log, statistics",
        """
        CREATE TABLE filter_exams (
            scope TEXT PRIMARY KEY,
            until REAL NOT NULL,
            allow TEXT NOT NULL DEFAULT '[]',
            started_at REAL NOT NULL,
            started_by TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE filter_overrides (
            domain TEXT NOT NULL,
            grp TEXT NOT NULL,
            until REAL NOT NULL,
            created_at REAL NOT NULL,
            created_by TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (domain, grp)
        );
        CREATE TABLE filter_audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            event TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            actor TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE filter_state (
            key TEXT PRIMARY KEY,
            value
        );
        CREATE TABLE filter_stats (
            grp TEXT NOT NULL,
            category TEXT NOT NULL,
            queries INTEGER NOT NULL DEFAULT 0,
            blocked INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (grp, category)
        );
        """,
    ),
]
