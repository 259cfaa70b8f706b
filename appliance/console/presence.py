"""Presence rules for the console: which status message wins, and what an admin sees. No I/O.

Births and Wills carry a session counter that the agent raises on every CONNECT attempt. A Will
can reach the console after the next birth (the broker publishes it when it notices the old
socket is gone), so a status from an older session is ignored. Only a device that is offline may
come back with a *lower* counter: its local database was reset (re-imaged SD card).
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.fleet.payloads import Status
from appliance.i18n import N_

# How many missed samples make an online device "silent": the TCP session may be up while the
# agent is wedged, which a Last Will cannot reveal.
SILENT_AFTER_INTERVALS = 3
# The ingest worker writes a heartbeat this often; older than this means it is not running.
INGEST_HEARTBEAT_S = 2.0
INGEST_DEAD_AFTER_S = 10.0


@dataclass(frozen=True)
class Presence:
    state: str  # "online" | "offline"
    session: int
    reason: str | None
    since: float


def apply_status(current: Presence | None, status: Status, now: float) -> Presence | None:
    """The new presence after `status`, or None when the message must be ignored."""
    if (
        current is not None
        and status.session < current.session
        and not (status.state == "online" and current.state == "offline")
    ):
        return None  # a late Will or a replayed birth from an older connection
    if (
        current is not None
        and current.state == status.state
        and current.session == status.session
    ):
        return current  # a duplicate (QoS 1 redelivery, retained replay): keep `since`
    reason = None if status.state == "online" else (status.reason or "unknown")
    return Presence(state=status.state, session=status.session, reason=reason, since=now)


@dataclass(frozen=True)
class Shown:
    """What the fleet page shows for one device."""

    state: str  # "online" | "offline" | "unknown"
    reason: str | None


# What the pages call each state and reason: English msgids, translated where they are shown.
STATES = {"online": N_("online"), "offline": N_("offline"), "unknown": N_("unknown")}
REASONS = {
    "lwt": N_("connection lost"),
    "shutdown": N_("agent stopped"),
    "reboot": N_("rebooting"),
    "silent": N_("no health report"),
    "broker": N_("console cannot reach the broker"),
    "ingest": N_("console ingest worker is not running"),
}


def shown(
    state: str,
    reason: str | None,
    last_seen: float | None,
    interval: float | None,
    now: float,
    *,
    fallback_silent_after: float,
    broker_connected: bool,
    ingest_alive: bool,
) -> Shown:
    """Combine stored presence with what the console itself knows right now."""
    if not ingest_alive:
        return Shown("unknown", "ingest")
    if not broker_connected:
        return Shown("offline", "broker")
    if state == "online":
        silent_after = (
            SILENT_AFTER_INTERVALS * interval if interval else fallback_silent_after
        )
        if last_seen is None or now - last_seen > silent_after:
            return Shown("offline", "silent")
        return Shown("online", None)
    return Shown("offline", reason or "unknown")


def describe(reason: str | None) -> str:
    if reason is None:
        return ""
    return REASONS.get(reason, reason)
