"""Who is asking, and which names are the classroom's own: what the filter takes from the
classroom network, behind two protocols the resolver asks on its hot path.

- `Identity`: the MAC of a client address (IPv4, or IPv6 including privacy addresses), or None.
  `LeaseIdentity` is the network's lease and neighbour reader (`appliance.network.leases`:
  dnsmasq's lease file joined with the kernel's neighbour table) behind a short cache, read again
  when an address is not in it (at most every `miss_every` seconds: a phone's first query
  must find the entry its ARP request just made), when the cache is older than
  `max_age`, and when the lease file changes (then every address whose MAC changed is reported
  to `on_change`, which the server points at `Resolver.forget_client`). `StaticIdentity` serves
  tests.
- `LocalAnswers`: the classroom's own names (the portal, and the probe hosts while the uplink is
  down), answered before any policy. `NetworkAnswers` is the network's local-answers table
  (`appliance.network.answers.local_answers`, the one table dnsmasq served before the filter),
  switched between online and offline as the uplink's carrier changes (checked once a second).

Both answer from memory; the reads of the machine happen at most at the rates above.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from appliance.config import NetworkSection
from appliance.network import answers, leases


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




class LeaseIdentity:
    """`leases.table()` (IP -> MAC) cached; see the module docstring for when it is read again.

    The kernel learns a neighbour when the device talks to the Pi: a brand-new IPv6 privacy
    address may be unknown at its very first query, which then gets the default group (the
    strictest) until the next read."""

    def __init__(self, *, interface: str | None = None, lease_file: Path | None = None,
                 miss_every: float = 0.02, max_age: float = 5.0,
                 on_change: Callable[[str], None] | None = None,
                 reader: Callable[[], dict[str, str]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lease_file = lease_file
        self.miss_every, self.max_age = miss_every, max_age
        self.on_change = on_change
        self._reader = reader or (lambda: leases.table(interface=interface, lease_file=lease_file))
        self.clock = clock
        self._table: dict[str, str] = {}
        self._read = -1e9
        self._lease_stamp: int | None = None
        self._stamp_checked = -1e9
        self._lock = threading.Lock()

    def _stamp(self) -> int | None:
        try:
            return self.lease_file.stat().st_mtime_ns if self.lease_file else None
        except OSError:
            return None

    def _lease_changed(self, now: float) -> bool:
        if self.lease_file is None or now - self._stamp_checked < 0.5:
            return False
        self._stamp_checked = now
        return self._stamp() != self._lease_stamp

    def reload(self) -> None:
        """Read both sources now; tell `on_change` of every address whose MAC changed."""
        self._lease_stamp = self._stamp()
        new = self._reader()
        old, self._table = self._table, new
        self._read = self.clock()
        if self.on_change is not None:
            for ip in {ip for ip, mac in old.items() if new.get(ip) != mac}:
                self.on_change(ip)

    def lookup(self, ip: str) -> str | None:
        now = self.clock()
        changed = self._lease_changed(now)
        mac = self._table.get(ip)  # the server's addresses are canonical already: no parsing
        if mac is not None and now - self._read < self.max_age and not changed:
            return mac
        key = leases.canonical_ip(ip)
        if key is None or key.startswith("127.") or key == "::1":
            return None  # the Pi itself: never in the neighbour table
        mac = self._table.get(key)
        age = now - self._read
        if age >= self.max_age or changed or (mac is None and age >= self.miss_every):
            with self._lock:
                if self._read < now:  # not read by another thread meanwhile
                    self.reload()
            mac = self._table.get(key)
        return mac


class NetworkAnswers:
    """The network's local-answers table for the uplink's current state."""

    def __init__(self, net: NetworkSection,
                 online: Callable[[], bool] | None = None, every: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.net = net
        self._online = online or (lambda: answers.uplink_online(net.uplink))
        self.every, self.clock = every, clock
        self._checked = -1e9
        self.online: bool | None = None
        self._names: dict[str, list[str]] = {}

    def _refresh(self) -> None:
        online = self._online()
        if online == self.online:
            return
        names: dict[str, list[str]] = {}
        for a in answers.local_answers(self.net, online=online):
            names.setdefault(a.name.lower().rstrip("."), []).append(a.address)
        self._names, self.online = names, online

    def addresses(self, name: str) -> list[str] | None:
        now = self.clock()
        if now - self._checked >= self.every:
            self._checked = now
            self._refresh()
        return self._names.get(name)
