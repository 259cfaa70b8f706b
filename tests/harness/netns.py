"""Network namespaces joined by veth pairs: the test network of the virtual classroom.

Addresses come from TEST-NET-1 (192.0.2.0/24) unless a test asks otherwise; namespaces are never
bridged to the machine's own uplink. Everything created is removed in `close()`.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


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
        return subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kwargs)  # type: ignore[call-overload]


@dataclass
class Network:
    """A set of namespaces with a unique prefix; `link()` joins two with a veth pair."""

    prefix: str = field(default_factory=lambda: f"ce{secrets.token_hex(3)}")
    namespaces: dict[str, Namespace] = field(default_factory=dict)

    def add(self, short: str) -> Namespace:
        name = f"{self.prefix}-{short}"
        ip("netns", "add", name)
        ns = Namespace(name)
        self.namespaces[short] = ns
        ns.run("ip", "link", "set", "lo", "up")
        return ns

    def link(self, a: str, a_addr: str, b: str, b_addr: str) -> tuple[str, str]:
        """Join namespaces `a` and `b`; addresses in CIDR form (e.g. 192.0.2.1/24)."""
        n = len(self.namespaces)
        va, vb = f"{self.prefix}a{n}", f"{self.prefix}b{n}"
        ip("link", "add", va, "type", "veth", "peer", "name", vb)
        for dev, short, addr in ((va, a, a_addr), (vb, b, b_addr)):
            ns = self.namespaces[short]
            ip("link", "set", dev, "netns", ns.name)
            ns.run("ip", "addr", "add", addr, "dev", dev)
            ns.run("ip", "link", "set", dev, "up")
        return va, vb

    def close(self) -> None:
        for ns in self.namespaces.values():
            ip("netns", "del", ns.name, check=False)
        self.namespaces.clear()
