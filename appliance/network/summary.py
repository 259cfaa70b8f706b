"""What the agent reports of the classroom network: station, lease and session counts.

A plain `collect(config, db)` until the capability summaries (SUMMARY spec) land on main;
then this module adds its spec. Never raises for a network that is not set up: counts that
cannot be read are left out.
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

from appliance.config import Config
from appliance.network import leases, render, sessions
from appliance.network.client import HelperError, call


def collect(config: Config, db: sqlite_utils.Database) -> dict[str, Any]:
    net = config.network
    out: dict[str, Any] = {
        "leases": len(leases.read_leases(render.render_dir(config) / render.LEASES)),
    }
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'network_sessions'").fetchone():
        now = sessions.clock()
        out["sessions"] = sum(1 for s in sessions.all_sessions(db)
                              if sessions.remaining(s, now, net.session_seconds) > 0)
    if net.access_point == "onboard":
        try:
            result = call(net.helper.socket, "stations", timeout=2)
            if result.get("available"):
                out["stations"] = result["count"]
        except HelperError:
            pass
    return out
