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
    """The kernel's neighbour table (`ip -j neigh`, IPv4 ARP and IPv6 NDP entries, privacy
    addresses included), read again at most every `refresh` seconds when an address is not in
    it, so a new lease or address is picked up at its first query."""

    def __init__(self, refresh: float = 2.0,
                 reader: Callable[[], str] | None = None) -> None:
        self.refresh = refresh
        self._reader = reader or (lambda: subprocess.run(
            ["ip", "-j", "neigh", "show"], capture_output=True, text=True, timeout=5,
            check=False).stdout)
        self._table: dict[str, str] = {}
        self._read_at = -1e9
        self._lock = threading.Lock()

    def _reload(self) -> None:
        try:
            entries = json.loads(self._reader() or "[]")
        except (ValueError, OSError, subprocess.SubprocessError):
            return
        table = {}
        for e in entries:
            mac, dst = e.get("lladdr"), e.get("dst")
            if mac and dst and "FAILED" not in e.get("state", []):
                table[str(ipaddress.ip_address(dst))] = mac.lower()
        self._table = table

    def lookup(self, ip: str) -> str | None:
        try:
            ip = str(ipaddress.ip_address(ip.split("%", 1)[0]))
        except ValueError:
            return None
        mac = self._table.get(ip)
        if mac is None and time.monotonic() - self._read_at >= self.refresh:
            with self._lock:
                if time.monotonic() - self._read_at >= self.refresh:
                    self._read_at = time.monotonic()
                    self._reload()
            mac = self._table.get(ip)
        return mac


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
