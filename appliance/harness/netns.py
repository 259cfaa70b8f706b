"""Network namespaces joined by veth pairs and bridges: the topology API of the virtual classroom.

Tests, the lab (`scripts/lab --classroom`) and `bench/` build their networks with it:

    net = Network()
    pi, phone = net.add("pi"), net.add("phone1")
    net.link("pi", "uplink")                       # a veth pair, addresses picked for you
    net.segment("wlan", "phone1", "phone2", owner="pi", isolated=True)

Addresses come from documentation ranges unless a caller gives its own: point-to-point links get a
/30 of 192.0.2.0/24 (TEST-NET-1, then the benchmarking range 198.18.0.0/15 once a caller has
reserved all of TEST-NET-1, as the virtual classroom does) and a /64 of 2001:db8:ce00::/48; a
segment gets a /26 and a /64. 198.51.100.0/24 stays free for the portal's captured address and
203.0.113.0/24 for the fake internet. `link_host()` is the one link into the machine's own (root)
namespace: a /30 of 198.18.0.0/15 no route of the machine uses, and no default route, bridge or
NAT, so namespaces never reach the machine's own uplink. Everything created is removed by
`close()`; `remove_stale(prefix)` removes what a killed process left behind.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

IPV4_POOL = ipaddress.IPv4Network("192.0.2.0/24")
# Tried in order by allocate4(): the benchmarking range (RFC 2544) once TEST-NET-1 is taken.
IPV4_POOLS = (IPV4_POOL, ipaddress.IPv4Network("198.18.0.0/15"))
# Links into the machine's own namespace: shared by every Network on the machine at once, so
# picked at random among the /30s no route of the machine overlaps (see link_host()).
HOST_POOL = ipaddress.IPv4Network("198.18.0.0/15")
# The name a Link uses for the machine's own (root) namespace.
HOST = "host"
# `ip netns exec NAME` bind-mounts every file of this folder over /etc (resolv.conf, hosts).
NETNS_ETC = Path("/etc/netns")
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


def namespace_pids(name: str) -> list[int]:
    """Pids of the processes living in namespace `name` (empty if it is gone)."""
    out = ip("netns", "pids", name, check=False).stdout
    return [int(pid) for pid in out.split() if pid.isdigit()]


def kill_namespace_processes(name: str) -> list[int]:
    """SIGKILL every process living in namespace `name` (only ever called on namespaces named
    with our own prefix, so these are processes our harness started); return their pids."""
    pids = namespace_pids(name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def remove_stale(prefix: str) -> list[str]:
    """Delete namespaces named `<prefix>-*` (left by a process killed with -9), the processes
    still living in them (a server outlives a killed parent and keeps its namespace alive) and
    their /etc/netns folders; return the namespaces' names."""
    stale = [name for name in namespaces() if name.startswith(f"{prefix}-")]
    for name in stale:
        kill_namespace_processes(name)
        ip("netns", "del", name, check=False)
    if NETNS_ETC.is_dir():
        for folder in NETNS_ETC.glob(f"{prefix}-*"):
            shutil.rmtree(folder, ignore_errors=True)
            if folder.name not in stale:
                stale.append(folder.name)
    return stale


def host_routes() -> list[ipaddress.IPv4Network]:
    """The IPv4 destinations the machine's own namespace routes (every table)."""
    out = ip("-j", "-4", "route", "show", "table", "all").stdout
    nets = []
    for route in json.loads(out or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default" and route.get("type", "unicast") in ("unicast", "local"):
            try:
                nets.append(ipaddress.IPv4Network(dst, strict=False))
            except ValueError:
                continue
    return nets


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

    def sysctl(self, key: str, value: str | int) -> None:
        """Set a sysctl (`net.ipv4.ip_forward`, ...) inside this namespace only."""
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    @property
    def etc(self) -> Path:
        """/etc/netns/<name>: files here replace /etc's for every `ip netns exec` (resolv.conf)."""
        return NETNS_ETC / self.name

    def exec_prefix(self) -> list[str]:
        """What to put before a command to run it in this namespace (`ip netns exec` execs it,
        so its pid and signals stay the command's)."""
        return ["ip", "netns", "exec", self.name]


@dataclass(frozen=True)
class Link:
    """A veth pair: each end's device name (inside its namespace) and addresses. `b` is HOST for
    a link_host() into the machine's own namespace."""

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
    _host_devs: list[str] = field(default_factory=list)

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
        for pool in IPV4_POOLS:
            for subnet in pool.subnets(new_prefix=prefixlen):
                if not any(subnet.overlaps(taken) for taken in self._subnets4):
                    self._subnets4.add(subnet)
                    return subnet
        raise TopologyError(f"no free /{prefixlen} left in {', '.join(map(str, IPV4_POOLS))}")

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

    def _place(self, dev: str, short: str, rename: str | None, addrs: tuple[str, ...],
               mac: str | None = None) -> str:
        ns = self[short]
        ip("link", "set", dev, "netns", ns.name)
        final = dev
        if rename:
            ns.run("ip", "link", "set", dev, "name", rename)
            final = rename
        if mac:
            ns.run("ip", "link", "set", final, "address", mac)
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

    def link_host(self, short: str, *, dev: str | None = None) -> Link:
        """Join namespace `short` to the machine's own namespace (a management link, e.g. so an
        agent in the namespace reaches a broker on the machine, which must listen on the
        returned `b_addrs[0]`). The /30 is picked at random from 198.18.0.0/15 among those no
        route of the machine overlaps, since other Networks may be doing the same at once. Only
        the /30 is routed: no default route, no forwarding, nothing else of the machine's."""
        taken = [*host_routes(), *self._subnets4]
        # Random, not first-free: two Networks started together would otherwise race for one.
        candidates = list(HOST_POOL.subnets(new_prefix=30))
        rng = secrets.SystemRandom()
        for _ in range(64):
            net4 = rng.choice(candidates)
            if not any(net4.overlaps(t) for t in taken):
                break
        else:  # pragma: no cover - 32768 candidates
            raise TopologyError(f"no free /30 in {HOST_POOL} on this machine")
        self._subnets4.add(net4)
        host_side, ns_side = (f"{h}/30" for h in net4.hosts())
        va, vb = self._devname("a"), self._devname("h")
        ip("link", "add", va, "type", "veth", "peer", "name", vb)
        da = self._place(va, short, dev, (ns_side,))
        # No IPv6 on the machine's end: nothing but the /30 should appear there.
        subprocess.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{vb}.disable_ipv6=1"],
                       check=False, capture_output=True)
        self._host_devs.append(vb)
        ip("addr", "add", host_side, "dev", vb)
        ip("link", "set", vb, "up")
        return Link(short, da, (ns_side,), HOST, vb, (host_side,))

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
             address: str | None = None, address6: str | None = None,
             mac: str | None = None) -> str:
        """Add one more member to a segment; return its device name in the member's namespace.
        `mac` sets the member's hardware address (e.g. a locally administered 02:...)."""
        host = self[seg.owner]
        port, peer = self._devname("p"), self._devname("m")
        ip("link", "add", port, "type", "veth", "peer", "name", peer)
        ip("link", "set", port, "netns", host.name)
        host.run("ip", "link", "set", port, "master", seg.bridge)
        if isolated:
            host.run("bridge", "link", "set", "dev", port, "isolated", "on")
        host.run("ip", "link", "set", port, "up")
        addrs = tuple(a for a in (address, address6) if a)
        final = self._place(peer, member, dev, addrs, mac)
        seg.ports[member] = final
        return final

    def close(self) -> None:
        """Delete every namespace (their veth pairs, the machine's end of link_host() too) and
        their /etc/netns folders. Processes still inside are not ours to kill: stop them first."""
        # The machine's ends first: a deleted namespace takes its veths along only once the
        # kernel gets round to it, and a test (or the next start) looks at once.
        for dev in self._host_devs:
            ip("link", "del", dev, check=False)
        self._host_devs.clear()
        for ns in self.namespaces.values():
            ip("netns", "del", ns.name, check=False)
            shutil.rmtree(ns.etc, ignore_errors=True)
        self.namespaces.clear()
