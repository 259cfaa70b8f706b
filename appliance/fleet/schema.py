"""The agent's schema on the appliance, as ordered migrations (component "fleet.agent")."""

from __future__ import annotations

from appliance.store import Migration

# The name its migrations are recorded under, and the database file they belong to.
COMPONENT = "fleet.agent"
DATABASE = "appliance"

MIGRATIONS = [
    Migration(
        1,
        "agent state and health outbox",
        """
        CREATE TABLE agent_state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE health_outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            ts INTEGER NOT NULL,
            payload BLOB NOT NULL,
            acked INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX health_outbox_unacked ON health_outbox (acked, seq);
        """,
    ),
    Migration(
        2,
        "clock trust of each sample",
        # Samples from before this migration were taken by an agent that trusted the clock.
        """
        ALTER TABLE health_outbox ADD COLUMN synced INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE health_outbox ADD COLUMN mono REAL;
        ALTER TABLE health_outbox ADD COLUMN boot TEXT;
        CREATE INDEX health_outbox_unsynced ON health_outbox (seq) WHERE synced = 0;
        """,
    ),
]
