"""Which devices may reach which shared services across client isolation, and keeping the
network helper's openings (`open-service` / `close-service`) in line with that.

`wanted(db, ...)` is pure over the inventory: every present device of a `[devices] share_to`
group gets an opening to every present device announcing a `share_types` service, on the
service's SRV port plus the ports that service type needs besides (`EXTRA_PORTS`). `Openings`
remembers what it asked the helper for, renews each opening before the kernel's timeout ends it
and closes what is no longer wanted (a goodbye, a device gone, a group changed). A restart of
the service leaves the openings in place (a lesson's stream goes on) and renews what is still
wanted; one no longer wanted by then ends with its kernel timeout (`OPENING_SECONDS`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from appliance.devices.inventory import PRESENT_WINDOW
from appliance.network.client import HelperError

log = logging.getLogger(__name__)

# What a service type needs besides its SRV port, from the vendors' port lists. AirPlay (Apple,
# "TCP and UDP ports used by Apple software products"): 7000 and 7100 TCP, PTP timing 319-320
# UDP, 6000-7011 UDP for RAOP audio/control, and streams on dynamic ports 49152-65535 both
# ways. Google Cast (Cast's "network requirements"): 8008-8009 and 8443 TCP, mirroring on UDP
# 32768-61000. Printers: the SRV port (631, 9100, 515) is all.
# Not covered: flows the receiver starts (AirPlay's timing requests to the sender's port):
# an opening admits the staff device's packets and the service's replies only.
EXTRA_PORTS: dict[str, tuple[str, ...]] = {
    "_airplay._tcp": ("tcp:7000", "tcp:7100", "tcp:49152-65535", "udp:319-320", "udp:6000-7011",
                      "udp:49152-65535"),
    "_raop._tcp": ("udp:6000-7011", "udp:49152-65535"),
    "_googlecast._tcp": ("tcp:8008-8009", "tcp:8443", "udp:32768-61000"),
}
# The helper's limit on port entries per opening (appliance.network.verbs.MAX_PORTS).
MAX_PORT_ENTRIES = 16
# Each opening lasts this long in the kernel unless renewed; renewed at a third of it.
OPENING_SECONDS = 900


def short_type(type_: str) -> str:
    """"_airplay._tcp.local." -> "_airplay._tcp" (lower case)."""
    lower = type_.lower().rstrip(".")
    return lower[: -len(".local")] if lower.endswith(".local") else lower


def wanted(db: sqlite_utils.Database, share_to: tuple[str, ...], share_types: tuple[str, ...],
           now: float) -> dict[tuple[str, str], str]:
    """(staff MAC, service MAC) -> the ports argument of open-service ("tcp:631,..."), for every
    present device of a `share_to` group and every present device announcing a shared type."""
    types = {short_type(t) for t in share_types}
    present = "(lease_expires > ? OR last_seen > ?)"
    groups = tuple(share_to)
    if not groups or not types:
        return {}
    staff = [r[0] for r in db.execute(
        f"SELECT mac FROM device_inventory WHERE grp IN ({','.join('?' * len(groups))}) "  # noqa: S608
        f"AND {present}", [*groups, now, now - PRESENT_WINDOW])]
    ports: dict[str, dict[str, None]] = {}
    query = ("SELECT s.mac, s.type, s.port FROM device_services s JOIN device_inventory d "
             "ON d.mac = s.mac WHERE (d.lease_expires > ? OR d.last_seen > ?) "
             "ORDER BY s.mac, s.type, s.name")
    for mac, type_, port in db.execute(query, [now, now - PRESENT_WINDOW]):
        short = short_type(type_)
        if short not in types:
            continue
        entries = ports.setdefault(mac, {})
        proto = "udp" if short.endswith("._udp") else "tcp"
        if isinstance(port, int) and 1 <= port <= 65535:
            entries[f"{proto}:{port}"] = None
        for extra in EXTRA_PORTS.get(short, ()):
            entries[extra] = None
    out = {}
    for service, entries in ports.items():
        if not entries:
            continue
        arg = ",".join(list(entries)[:MAX_PORT_ENTRIES])
        for device in staff:
            if device != service:
                out[(device, service)] = arg
    return out


@dataclass
class Openings:
    """What this service asked the helper to open; `sync()` makes it match `wanted`.

    `call(verb, args)` is the helper's client (raises HelperError on refusal); a refusal is logged once per
    pair and reason and retried at the next renewal."""

    call: Callable[[str, dict[str, str]], Any]
    seconds: int = OPENING_SECONDS
    opened: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    logged: set[tuple[tuple[str, str], str]] = field(default_factory=set)

    def sync(self, want: dict[tuple[str, str], str], now: float | None = None) -> None:
        ts = time.monotonic() if now is None else now
        for pair in [p for p in self.opened if p not in want]:
            self._call(pair, "close-service", {"from_mac": pair[0], "to_mac": pair[1]})
            del self.opened[pair]
        for pair, ports in want.items():
            have = self.opened.get(pair)
            if have is not None and have[0] == ports and ts - have[1] < self.seconds / 3:
                continue
            if self._call(pair, "open-service", {"from_mac": pair[0], "to_mac": pair[1],
                                                 "ports": ports, "seconds": str(self.seconds)}):
                self.opened[pair] = (ports, ts)

    def _call(self, pair: tuple[str, str], verb: str, args: dict[str, str]) -> bool:
        try:
            self.call(verb, args)
        except HelperError as exc:  # refused, or the helper is down: logged, retried later
            key = (pair, f"{verb}: {exc}")
            if key not in self.logged:
                self.logged.add(key)
                log.warning("%s %s -> %s: %s", verb, pair[0], pair[1], exc)
            return False
        log.info("%s %s -> %s", verb, pair[0], pair[1])
        return True
