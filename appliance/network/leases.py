"""Who is on the classroom network: IP <-> MAC from dnsmasq's leases and the neighbour table.

A documented function others call (the filter and devices capabilities, the helper):

    from appliance.network import leases
    leases.lookup("10.42.0.23", interface="wlan0")   # -> "02:5e:aa:00:00:01" or None
    leases.devices(interface="wlan0", lease_file=...) # -> [Device(mac, ips, hostname), ...]
    leases.lease_file(cfg)                            # dnsmasq's lease file for this config
    leases.table(interface="wlan0", lease_file=...)   # -> {ip: mac} of everyone, in one read

The neighbour table (`ip -j neigh`) is the live truth and covers IPv6, SLAAC and privacy
addresses, which DHCP never sees; the lease file adds DHCPv4 clients not heard from lately and
their host names. Parsing is pure (`parse_neighbours`, `parse_leases`); only `neighbours()` and
`read_leases()` touch the machine. A MAC is never taken from what a client says about itself.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from appliance.config import Config
from appliance.network import render

# Neighbour states that do not vouch for a MAC.
_UNUSABLE = {"FAILED", "INCOMPLETE", "NONE"}


@dataclass(frozen=True)
class Device:
    """One client: its MAC, every address it uses (IPv4 first), and its DHCP host name."""

    mac: str
    ips: tuple[str, ...]
    hostname: str = ""


def canonical_ip(value: str) -> str | None:
    """`value` as the lease file and the neighbour table write it, or None if it is no address:
    the zone (`%wlan0`) dropped, and an IPv4 client of a dual-stack socket (`::ffff:a.b.c.d`)
    given as its IPv4 address."""
    try:
        addr = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return str(addr)


def parse_neighbours(text: str) -> list[tuple[str, str]]:
    """(ip, mac) pairs from `ip -j neigh` output, skipping entries without a usable MAC."""
    pairs = []
    for entry in json.loads(text or "[]"):
        mac, addr = entry.get("lladdr"), canonical_ip(str(entry.get("dst", "")))
        if not mac or addr is None or _UNUSABLE & set(entry.get("state", [])):
            continue
        if ipaddress.ip_address(addr).is_link_local:
            continue  # fe80:: is the same for every purpose; it never carries traffic out
        pairs.append((addr, str(mac).lower()))
    return pairs


def neighbours(interface: str | None = None) -> list[tuple[str, str]]:
    """The kernel's neighbour table (IPv4 ARP and IPv6 ND) on `interface`, or on all."""
    cmd = ["ip", "-j", "neigh", "show", *(["dev", interface] if interface else [])]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    return parse_neighbours(result.stdout) if result.returncode == 0 else []


def parse_leases(text: str) -> list[tuple[str, str, str]]:
    """(ip, mac, hostname) from a dnsmasq lease file (IPv4 lines; DHCPv6 lines have a DUID)."""
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[0] == "duid":
            continue
        addr = canonical_ip(parts[2])
        if addr is None or ":" not in parts[1] or len(parts[1]) != 17:
            continue
        found.append((addr, parts[1].lower(), "" if parts[3] == "*" else parts[3]))
    return found


def read_leases(lease_file: Path | None) -> list[tuple[str, str, str]]:
    if lease_file is None:
        return []
    try:
        return parse_leases(lease_file.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return []


def merge(neigh: list[tuple[str, str]], lease: list[tuple[str, str, str]]) -> list[Device]:
    """Devices from both sources, one per MAC, sorted by MAC (pure)."""
    ips: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for addr, mac, hostname in lease:
        ips.setdefault(mac, []).append(addr)
        names[mac] = hostname
    for addr, mac in neigh:
        if addr not in ips.setdefault(mac, []):
            ips[mac].append(addr)
    return [Device(mac, tuple(sorted(set(a), key=lambda x: (":" in x, x))), names.get(mac, ""))
            for mac, a in sorted(ips.items())]


def lookup(ip: str, *, interface: str | None = None, lease_file: Path | None = None) -> str | None:
    """The MAC behind `ip` on the classroom: the neighbour table first, then the leases."""
    addr = canonical_ip(ip)
    if addr is None:
        return None
    for n_ip, mac in neighbours(interface):
        if n_ip == addr:
            return mac
    for l_ip, mac, _ in read_leases(lease_file):
        if l_ip == addr:
            return mac
    return None


def addresses_of(mac: str, *, interface: str | None = None,
                 lease_file: Path | None = None) -> tuple[str, ...]:
    """Every address the neighbour table and the leases know for `mac` (IPv4 first)."""
    for device in devices(interface=interface, lease_file=lease_file):
        if device.mac == mac.lower():
            return device.ips
    return ()


def devices(*, interface: str | None = None, lease_file: Path | None = None) -> list[Device]:
    """Every client the Pi knows of on `interface`."""
    return merge(neighbours(interface), read_leases(lease_file))


def lease_file(cfg: Config) -> Path:
    """dnsmasq's lease file (`dnsmasq.leases` in `[network] render_dir`)."""
    return render.render_dir(cfg) / render.LEASES


def table(*, interface: str | None = None, lease_file: Path | None = None) -> dict[str, str]:
    """IP -> MAC of every client, from one read of each source; the neighbour table wins over a
    lease (a lease can outlive the device that held the address)."""
    found = {ip: mac for ip, mac, _ in read_leases(lease_file)}
    found.update(dict(neighbours(interface)))
    return found
