"""`appliance network show`: the effective state of the classroom network, read-only."""

from __future__ import annotations

from typing import Any

from appliance.config import Config
from appliance.network import leases, nft, render, sessions
from appliance.network.answers import uplink_online


def collect(cfg: Config) -> dict[str, Any]:
    net = cfg.network
    directory = render.render_dir(cfg)
    try:
        pid = int((directory / render.DNSMASQ_PID).read_text().strip())
    except (OSError, ValueError):
        pid = None
    count = 0
    if cfg.database_path.exists():
        db = sessions.open_sessions_db(cfg.database_path)
        now = sessions.clock()
        count = sum(1 for s in sessions.all_sessions(db)
                    if sessions.remaining(s, now, net.session_seconds) > 0)
    return {
        "access_point": net.access_point,
        "portal_mode": net.portal_mode,
        "interface": net.interface,
        "ipv4": net.ipv4,
        "ipv6": net.ipv6 or None,
        "uplink": net.uplink,
        "uplink_online": uplink_online(net.uplink),
        "portal_name": net.portal_name,
        "render_dir": str(directory),
        "ruleset_loaded": nft.table_exists(),
        "dnsmasq_pid": pid,
        "leases": len(leases.read_leases(directory / render.LEASES)),
        "sessions": count,
        "session_hours": net.session_hours,
    }


def text(d: dict[str, Any]) -> str:
    return "\n".join(f"{k:15} {v}" for k, v in d.items())
