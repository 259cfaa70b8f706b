"""Who is asking: the two things the filter needs from the classroom network, as protocols.

- `Identity`: the MAC of a client address (IPv4, or IPv6 including privacy addresses), or None.
  The network capability's lease and neighbour reader (`leases.lookup(ip) -> mac`) implements
  it; until both are merged, `KernelNeighbours` reads the kernel's neighbour table (what that
  reader joins with dnsmasq's leases) and `StaticIdentity` serves tests.
- `LocalAnswers`: the classroom's own names (the portal, the Pi), answered before any policy.
  The network capability's "local answers" table implements it; `HostsAnswers` reads a
  hosts-format file meanwhile.

Both are asked on the hot path: implementations answer from memory and refresh on their own.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol


class Identity(Protocol):
    def lookup(self, ip: str) -> str | None:
        """The MAC (aa:bb:cc:dd:ee:ff) the device at `ip` uses now, or None if unknown."""


class LocalAnswers(Protocol):
    def addresses(self, name: str) -> list[str] | None:
        """The addresses of a local `name` (lower case), or None if it is not a local name
        (an empty list: a local name without addresses of that family, answered NODATA)."""


class StaticIdentity:
    def __init__(self, table: Mapping[str, str] | None = None) -> None:
        self.table = dict(table or {})

    def lookup(self, ip: str) -> str | None:
        return self.table.get(ip)


class NoLocalAnswers:
    def addresses(self, name: str) -> list[str] | None:
        return None


class KernelNeighbours:
    """The kernel's neighbour table: IPv4 from /proc/net/arp (a cheap read, done again at every
    address it does not know, at most every 10 ms), IPv6 from `ip -j -6 neigh` (privacy addresses
    included; a process, so at most every `refresh` seconds). Both are read again when older
    than `max_age`, so an address that moved to another device is seen within seconds.

    The kernel learns a neighbour when the device talks to the Pi (an ARP request or a neighbour
    solicitation) or when the Pi answers it: a brand-new IPv6 privacy address may be unknown at
    its very first query, which then gets the default group (the strictest) for a second."""

    def __init__(self, refresh: float = 0.1, max_age: float = 5.0,
                 arp: Path = Path("/proc/net/arp"),
                 reader: Callable[[], str] | None = None) -> None:
        self.refresh = refresh
        self.max_age = max_age
        self.arp = arp
        self._reader = reader or (lambda: subprocess.run(
            ["ip", "-j", "-6", "neigh", "show"], capture_output=True, text=True, timeout=5,
            check=False).stdout)
        self._v4: dict[str, str] = {}
        self._v6: dict[str, str] = {}
        self._read4 = self._read6 = -1e9
        self._lock = threading.Lock()

    def _reload4(self) -> None:
        try:
            lines = self.arp.read_text().splitlines()[1:]
        except OSError:
            return
        table = {}
        for line in lines:
            parts = line.split()
            # IP address, HW type, Flags (0x0: incomplete), HW address, Mask, Device
            if len(parts) >= 4 and parts[2] != "0x0" and parts[3] != "00:00:00:00:00:00":
                table[parts[0]] = parts[3].lower()
        self._v4 = table

    def _reload6(self) -> None:
        try:
            entries = json.loads(self._reader() or "[]")
        except (ValueError, OSError, subprocess.SubprocessError):
            return
        table = {}
        for e in entries:
            mac, dst = e.get("lladdr"), e.get("dst")
            if mac and dst and "FAILED" not in e.get("state", []):
                table[str(ipaddress.ip_address(dst))] = mac.lower()
        self._v6 = table

    def lookup(self, ip: str) -> str | None:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        key = str(addr)
        v4 = addr.version == 4
        now = time.monotonic()
        age = now - (self._read4 if v4 else self._read6)
        mac = (self._v4 if v4 else self._v6).get(key)
        if mac is not None and age < self.max_age:
            return mac
        with self._lock:
            if v4 and now - self._read4 >= 0.01:
                self._read4 = now
                self._reload4()
            elif not v4 and now - self._read6 >= self.refresh:
                self._read6 = now
                self._reload6()
        return (self._v4 if v4 else self._v6).get(key)


class HostsAnswers:
    """Local names from a hosts-format file (`192.0.2.1 portal.classroom portal`), re-read when
    it changes (checked at most once a second)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._names: dict[str, list[str]] = {}
        self._stamp: float | None = None
        self._checked = -1e9

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        try:
            stamp = self.path.stat().st_mtime
        except OSError:
            self._names = {}
            return
        if stamp == self._stamp:
            return
        names: dict[str, list[str]] = {}
        for line in self.path.read_text(errors="replace").splitlines():
            parts = line.split("#", 1)[0].split()
            if len(parts) < 2:
                continue
            try:
                addr = str(ipaddress.ip_address(parts[0]))
            except ValueError:
                continue
            for n in parts[1:]:
                names.setdefault(n.lower().rstrip("."), []).append(addr)
        self._names, self._stamp = names, stamp

    def addresses(self, name: str) -> list[str] | None:
        self._maybe_reload()
        return self._names.get(name)
