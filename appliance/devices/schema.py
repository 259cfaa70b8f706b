"""The device inventory's tables in the appliance database (component "devices").

- `device_inventory`: one row per MAC (never linked to another MAC): when it was first and last
  seen, its lease, what DHCP told us (kept across dnsmasq's `old` events, which carry none of
  it), the identification and its evidence, the captive-portal probe counts per OS family, and
  the group the network capability put it in (staff, student, ...).
- `device_services`: the mDNS service instances each device announces, TXT bounded.
- `device_days`: per day, how many MACs were new and the most leases at once (a daily count,
  never a list of who).
"""

from __future__ import annotations

from appliance.store import Migration

COMPONENT = "devices"
DATABASE = "appliance"

MIGRATIONS = [
    Migration(
        1,
        "device inventory, mDNS services, per-day counts",
        """
        CREATE TABLE device_inventory (
            mac TEXT PRIMARY KEY,
            randomized INTEGER NOT NULL,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            ip TEXT,
            lease_expires REAL,
            hostname TEXT,
            vendor_class TEXT,
            requested_options TEXT,
            client_id TEXT,
            vendor TEXT,
            kind TEXT NOT NULL DEFAULT 'unknown',
            os TEXT NOT NULL DEFAULT 'unknown',
            os_version TEXT,
            model TEXT,
            score INTEGER NOT NULL DEFAULT 0,
            evidence TEXT NOT NULL DEFAULT '[]',
            probe_counts TEXT NOT NULL DEFAULT '{}',
            grp TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX device_inventory_last_seen ON device_inventory (last_seen);
        CREATE INDEX device_inventory_ip ON device_inventory (ip);
        CREATE TABLE device_services (
            mac TEXT NOT NULL REFERENCES device_inventory (mac) ON DELETE CASCADE,
            type TEXT NOT NULL,
            name TEXT NOT NULL,
            server TEXT,
            port INTEGER,
            address TEXT,
            txt TEXT NOT NULL DEFAULT '{}',
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            PRIMARY KEY (mac, type, name)
        );
        CREATE TABLE device_days (
            day TEXT PRIMARY KEY,
            new_macs INTEGER NOT NULL DEFAULT 0,
            peak_leases INTEGER NOT NULL DEFAULT 0
        );
        """,
    ),
]
