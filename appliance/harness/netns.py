"""Network namespaces joined by veth pairs and bridges: the topology API of the virtual classroom.

Tests, the lab (`scripts/lab --classroom`) and `bench/` build their networks with it:

    net = Network()
    pi, phone = net.add("pi"), net.add("phone1")
    net.link("pi", "uplink")                       # a veth pair, addresses picked for you
    net.segment("wlan", "phone1", "phone2", owner="pi", isolated=True)

Addresses come from documentation ranges unless a caller gives its own: point-to-point links get a
/30 of 192.0.2.0/24 (TEST-NET-1) and a /64 of 2001:db8:ce00::/48; a segment gets a /26 and a /64.
198.51.100.0/24 stays free for the portal's captured address and 203.0.113.0/24 for the fake
internet. Namespaces are never bridged or routed to the machine's own uplink. Everything created
is removed by `close()`; `remove_stale(prefix)` removes what a killed process left behind.
"""

from __future__ import annotations

import ipaddress
import itertools
import secrets
import subprocess
from dataclasses import dataclass, field

IPV4_POOL = ipaddress.IPv4Network("192.0.2.0/24")
IPV6_POOL = ipaddress.IPv6Network("2001:db8:ce00::/48")
# Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
IFNAME_MAX = 15


class TopologyError(Exception):
    """A request the topology cannot satisfy (unknown namespace, pool exhausted, name too long)."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def namespaces() -> list[str]:
    """Names of every network namespace on the machine."""
    return [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]


def remove_stale(prefix: str) -> list[str]:
    """Delete namespaces named `<prefix>-*` (left by a process killed with -9); return their names."""
    stale = [name for name in namespaces() if name.startswith(f"{prefix}-")]
    for name in stale:
        ip("netns", "del", name, check=False)
    return stale


@dataclass
class Namespace:
    name: str

    def run(self, *cmd: str, check: bool = True, timeout: float = 30,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *cmd],
            check=check, capture_output=True, text=True, timeout=timeout, input=input,
        )

    def popen(self, *cmd: str, **kwargs: object) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", self.name, *cmd], **kwargs)
        return proc

    def exec_prefix(self) -> list[str]:
        """What to put before a command to run it in this namespace (`ip netns exec` execs it,
        so its pid and signals stay the command's)."""
        return ["ip", "netns", "exec", self.name]


@dataclass(frozen=True)
class Link:
    """A veth pair: each end's device name (inside its namespace) and addresses."""

    a: str
    a_dev: str
    a_addrs: tuple[str, ...]
    b: str
    b_dev: str
    b_addrs: tuple[str, ...]


@dataclass(frozen=True)
class Segment:
    """A bridge several members share, like one Wi-Fi or VLAN. `gateway` is the owner's address."""

    name: str
    owner: str
    bridge: str
    subnet4: ipaddress.IPv4Network
    subnet6: ipaddress.IPv6Network
    gateway4: str
    gateway6: str
    ports: dict[str, str]  # member -> its device name inside the member's namespace


@dataclass
class Network:
    """A set of namespaces with a unique prefix, joined by `link()` and `segment()`."""

    prefix: str = field(default_factory=lambda: f"ce{secrets.token_hex(3)}")
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _subnets4: set[ipaddress.IPv4Network] = field(default_factory=set)
    _subnets6: set[ipaddress.IPv6Network] = field(default_factory=set)

    def __post_init__(self) -> None:
        # A device name is prefix + a letter + a number: keep room for thousands of links.
        if len(self.prefix) > IFNAME_MAX - 5:
            raise TopologyError(f"prefix {self.prefix!r} is too long (at most {IFNAME_MAX - 5})")

    # -- namespaces ----------------------------------------------------------------------------
    def add(self, short: str) -> Namespace:
        name = f"{self.prefix}-{short}"
        ip("netns", "add", name)
        ns = Namespace(name)
        self.namespaces[short] = ns
        ns.run("ip", "link", "set", "lo", "up")
        return ns

    def __getitem__(self, short: str) -> Namespace:
        try:
            return self.namespaces[short]
        except KeyError:
            raise TopologyError(f"no namespace {short!r}; add() it first") from None

    # -- addresses -----------------------------------------------------------------------------
    def allocate4(self, prefixlen: int) -> ipaddress.IPv4Network:
        """The next IPv4 subnet of this size from the pool that overlaps none handed out."""
        for subnet in IPV4_POOL.subnets(new_prefix=prefixlen):
            if not any(subnet.overlaps(taken) for taken in self._subnets4):
                self._subnets4.add(subnet)
                return subnet
        raise TopologyError(f"no free /{prefixlen} left in {IPV4_POOL}")

    def allocate6(self) -> ipaddress.IPv6Network:
        for subnet in IPV6_POOL.subnets(new_prefix=64):
            if subnet not in self._subnets6:
                self._subnets6.add(subnet)
                return subnet
        raise TopologyError(f"no free /64 left in {IPV6_POOL}")  # pragma: no cover - 65536 of them

    def reserve(self, *cidrs: str) -> None:
        """Mark subnets a caller chose itself, so later allocations never overlap them."""
        for cidr in cidrs:
            net = ipaddress.ip_interface(cidr).network
            if isinstance(net, ipaddress.IPv4Network):
                self._subnets4.add(net)
            else:
                self._subnets6.add(net)

    # -- wiring --------------------------------------------------------------------------------
    def _devname(self, kind: str) -> str:
        name = f"{self.prefix}{kind}{next(self._ids)}"
        if len(name) > IFNAME_MAX:
            raise TopologyError(f"interface name {name!r} is too long")
        return name

    def _place(self, dev: str, short: str, rename: str | None, addrs: tuple[str, ...]) -> str:
        ns = self[short]
        ip("link", "set", dev, "netns", ns.name)
        final = dev
        if rename:
            ns.run("ip", "link", "set", dev, "name", rename)
            final = rename
        for addr in addrs:
            # nodad: an IPv6 address is usable at once, not after duplicate detection.
            extra = ["nodad"] if ":" in addr else []
            ns.run("ip", "addr", "add", addr, "dev", final, *extra)
        ns.run("ip", "link", "set", final, "up")
        return final

    def link(self, a: str, b: str, a_addr: str | None = None, b_addr: str | None = None, *,
             a_dev: str | None = None, b_dev: str | None = None, ipv6: bool = False) -> Link:
        """Join namespaces `a` and `b` with a veth pair.

        Addresses in CIDR form (e.g. 192.0.2.1/24); left out, a /30 (and with `ipv6`, a /64)
        is allocated. `a_dev`/`b_dev` name the ends inside their namespaces.
        """
        a_addrs: tuple[str, ...]
        b_addrs: tuple[str, ...]
        if a_addr is None or b_addr is None:
            net4 = self.allocate4(30)
            h = list(net4.hosts())
            a_addrs, b_addrs = (f"{h[0]}/30",), (f"{h[1]}/30",)
            if ipv6:
                net6 = self.allocate6()
                a_addrs += (f"{net6[1]}/64",)
                b_addrs += (f"{net6[2]}/64",)
        else:
            self.reserve(a_addr, b_addr)
            a_addrs, b_addrs = (a_addr,), (b_addr,)
        va, vb = self._devname("a"), self._devname("b")
        ip("link", "add", va, "type", "veth", "peer", "name", vb)
        da = self._place(va, a, a_dev, a_addrs)
        db = self._place(vb, b, b_dev, b_addrs)
        return Link(a, da, a_addrs, b, db, b_addrs)

    def segment(self, name: str, *members: str, owner: str, isolated: bool = False,
                subnet4: str | None = None, subnet6: str | None = None,
                member_dev: str = "eth0", addresses: bool = False) -> Segment:
        """A bridge named `name` in `owner`'s namespace with one port per member.

        The owner's bridge carries the gateway address (first host of the subnet). With
        `isolated`, ports cannot talk to each other, only to the owner: what `ap_isolate=1`
        does on a real radio. With `addresses`, each member gets a static address; otherwise
        members start bare (for DHCP and SLAAC).
        """
        net4 = ipaddress.IPv4Network(subnet4) if subnet4 else self.allocate4(26)
        net6 = ipaddress.IPv6Network(subnet6) if subnet6 else self.allocate6()
        if subnet4:
            self.reserve(subnet4)
        if subnet6:
            self.reserve(subnet6)
        host = self[owner]
        hosts4 = net4.hosts()
        gateway4 = str(next(hosts4))
        gateway6 = str(net6[1])
        host.run("ip", "link", "add", name, "type", "bridge")
        host.run("ip", "addr", "add", f"{gateway4}/{net4.prefixlen}", "dev", name)
        host.run("ip", "addr", "add", f"{gateway6}/64", "dev", name, "nodad")
        host.run("ip", "link", "set", name, "up")
        seg = Segment(name, owner, name, net4, net6, gateway4, gateway6, {})
        for index, member in enumerate(members, start=2):
            self.join(seg, member, isolated=isolated, dev=member_dev,
                      address=(f"{next(hosts4)}/{net4.prefixlen}" if addresses else None),
                      address6=(f"{net6[index]}/64" if addresses else None))
        return seg

    def join(self, seg: Segment, member: str, *, isolated: bool = False, dev: str = "eth0",
             address: str | None = None, address6: str | None = None) -> str:
        """Add one more member to a segment; return its device name in the member's namespace."""
        host = self[seg.owner]
        port, peer = self._devname("p"), self._devname("m")
        ip("link", "add", port, "type", "veth", "peer", "name", peer)
        ip("link", "set", port, "netns", host.name)
        host.run("ip", "link", "set", port, "master", seg.bridge)
        if isolated:
            host.run("bridge", "link", "set", "dev", port, "isolated", "on")
        host.run("ip", "link", "set", port, "up")
        addrs = tuple(a for a in (address, address6) if a)
        final = self._place(peer, member, dev, addrs)
        seg.ports[member] = final
        return final

    def close(self) -> None:
        for ns in self.namespaces.values():
            ip("netns", "del", ns.name, check=False)
        self.namespaces.clear()
