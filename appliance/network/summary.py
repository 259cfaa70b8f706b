"""What the agent reports of the classroom network (a capability summary, see
`appliance.fleet.summaries`): stations on the onboard radio, DHCP leases, live sessions, whether
the uplink has carrier, and the portal mode.

Never raises for a network that is not set up (no render folder, no sessions table, no helper,
an external access point): a figure that cannot be read is None, which the console shows as a
dash. Reads only files, the database and /sys; the station count is the helper's `stations` verb.
"""

from __future__ import annotations

import sqlite3

import sqlite_utils

from appliance.config import Config
from appliance.fleet.summaries import N_, Field, SummarySpec, Value
from appliance.network import leases, render, sessions
from appliance.network.answers import SYS_CLASS_NET, uplink_online
from appliance.network.client import HelperError, call

SUMMARY = SummarySpec(
    "network",
    N_("Classroom network"),
    (
        Field("stations", N_("Devices on the Wi-Fi"), "count"),
        Field("leases", N_("Address leases"), "count"),
        Field("sessions", N_("Accepted devices"), "count"),
        Field("uplink", N_("Uplink connected"), "bool"),
        Field("portal_mode", N_("Portal mode"), "text"),
    ),
)
# How long the agent waits for the helper's station list before leaving the figure out.
STATIONS_TIMEOUT = 2.0


def _sessions(config: Config, db: sqlite_utils.Database) -> int | None:
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'network_sessions'").fetchone():
            return None
        now = sessions.clock()
        seconds = config.network.session_seconds
        return sum(1 for s in sessions.all_sessions(db) if sessions.remaining(s, now, seconds) > 0)
    except sqlite3.Error:
        return None


def _stations(config: Config) -> int | None:
    if config.network.access_point != "onboard":
        return None
    try:
        result = call(config.network.helper.socket, "stations", timeout=STATIONS_TIMEOUT)
    except HelperError:
        return None
    count = result.get("count") if isinstance(result, dict) and result.get("available") else None
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def _leases(config: Config) -> int | None:
    path = render.render_dir(config) / render.LEASES
    if not path.exists():
        return None
    try:
        return len(leases.read_leases(path))
    except OSError:
        return None


def _uplink(config: Config) -> bool | None:
    name = config.network.uplink
    return uplink_online(name) if (SYS_CLASS_NET / name).exists() else None


def collect(config: Config, db: sqlite_utils.Database) -> dict[str, Value]:
    """The section's values; see the module docstring for what may be None."""
    return {
        "stations": _stations(config),
        "leases": _leases(config),
        "sessions": _sessions(config, db),
        "uplink": _uplink(config),
        "portal_mode": config.network.portal_mode,
    }
