"""The agent's own summary: how far behind its reporting is, and whether its clock is trusted.

Read from the agent's tables in `appliance.db` (`health_outbox`, `agent_state`); the agent keeps
`last_ack_ms` and `clock` there for this. Pure apart from those queries.
"""

from __future__ import annotations

import sqlite_utils

from appliance.clock import STATES
from appliance.config import Config
from appliance.fleet.summaries import N_, Field, SummarySpec, Value

SUMMARY = SummarySpec(
    "agent",
    N_("Reporting"),
    (
        Field("backlog", N_("Samples not yet stored by the console"), "count"),
        Field("oldest_unacked", N_("Oldest of them taken"), "timestamp"),
        Field("last_ack", N_("Console last confirmed"), "timestamp"),
        Field("unsynced", N_("Samples with an untrusted time"), "count"),
        Field("clock", N_("Clock"), "text"),
    ),
)


def collect(config: Config, db: sqlite_utils.Database) -> dict[str, Value]:
    backlog, oldest, unsynced = db.execute(
        "SELECT count(*), min(ts), coalesce(sum(synced = 0), 0) FROM health_outbox WHERE acked = 0"
    ).fetchone()
    state = dict(
        db.execute("SELECT key, value FROM agent_state WHERE key IN ('last_ack_ms', 'clock')")
        .fetchall()
    )
    clock = state.get("clock")
    return {
        "backlog": int(backlog),
        "oldest_unacked": int(oldest) if oldest is not None and oldest >= 0 else None,
        "last_ack": state.get("last_ack_ms"),
        "unsynced": int(unsynced),
        "clock": STATES[clock] if isinstance(clock, int) and 0 <= clock < len(STATES) else None,
    }
