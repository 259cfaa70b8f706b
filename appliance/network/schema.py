"""The network capability's tables in appliance.db (component "network")."""

from __future__ import annotations

from appliance.store import Migration

COMPONENT = "network"
DATABASE = "appliance"

MIGRATIONS = [
    Migration(
        1,
        "captive-portal sessions",
        """
        CREATE TABLE network_sessions (
            mac TEXT PRIMARY KEY,
            ip TEXT NOT NULL,
            started REAL NOT NULL,
            expires REAL NOT NULL,
            boot_id TEXT NOT NULL,
            boot_expires REAL NOT NULL
        );
        CREATE TABLE network_session_addresses (
            mac TEXT NOT NULL REFERENCES network_sessions (mac) ON DELETE CASCADE,
            ip TEXT NOT NULL,
            PRIMARY KEY (mac, ip)
        );
        """,
    ),
    Migration(
        2,
        "openings from a device to a shared service (open-service)",
        """
        CREATE TABLE network_shares (
            from_mac TEXT NOT NULL,
            to_mac TEXT NOT NULL,
            fwd TEXT NOT NULL,
            rev TEXT NOT NULL,
            boot_id TEXT NOT NULL,
            boot_expires REAL NOT NULL,
            PRIMARY KEY (from_mac, to_mac)
        );
        """,
    ),
]
