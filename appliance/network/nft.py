"""The helper's hands on nftables: load the ruleset, add and delete set elements, read sets.

Every change goes through `nft -f -` (one transaction per call). Only the helper (CAP_NET_ADMIN)
and `appliance network apply` (root) call these.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess

from appliance.network.render import DYNAMIC_SETS, TABLE


class NftError(Exception):
    """nft refused a command; the message is nft's own first line."""


def run(script: str, *, check_only: bool = False) -> None:
    cmd = ["nft", *(["-c"] if check_only else []), "-f", "-"]
    result = subprocess.run(cmd, input=script, capture_output=True, text=True, timeout=30,
                            check=False)
    if result.returncode != 0:
        first = next((line for line in result.stderr.splitlines() if line.strip()), "nft failed")
        raise NftError(first.strip())


def _family(ip: str) -> str:
    return "v6" if ipaddress.ip_address(ip).version == 6 else "v4"


def session_elements(mac: str, ips: tuple[str, ...], seconds: int) -> str:
    """`add element` lines giving `mac` and its addresses `seconds` of access."""
    lines = [f"add element inet {TABLE} accepted_mac {{ {mac} timeout {seconds}s }}"]
    for ip in ips:
        lines.append(f"add element inet {TABLE} accepted_{_family(ip)} "
                     f"{{ {mac} . {ip} timeout {seconds}s }}")
    return "\n".join(lines) + "\n"


def delete_elements(mac: str, ips: tuple[str, ...]) -> str:
    """Deleting what `session_elements` added. `add` first makes a delete of a member the
    kernel already expired succeed (nft refuses to delete what is not there)."""
    return session_elements(mac, ips, 1) + "\n".join(
        [f"delete element inet {TABLE} accepted_mac {{ {mac} }}"]
        + [f"delete element inet {TABLE} accepted_{_family(ip)} {{ {mac} . {ip} }}" for ip in ips]
    ) + "\n"


_DURATION = re.compile(r"(\d+)(d|h|m(?!s)|s|ms)")


def _seconds(value: object) -> int:
    """Seconds from nft's JSON `expires` (an int, or a "1h2m3s" string in some versions)."""
    if isinstance(value, int | float):
        return int(value)
    scale = {"d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return int(sum(int(n) * scale[u] for n, u in _DURATION.findall(str(value))))


def _element_text(value: object) -> str:
    if isinstance(value, dict) and "concat" in value:
        return " . ".join(_element_text(v) for v in value["concat"])
    if isinstance(value, dict) and "range" in value:
        first, last = value["range"]
        return f"{_element_text(first)}-{_element_text(last)}"
    return str(value)


def share_elements(fwd: tuple[str, ...], rev: tuple[str, ...], seconds: int) -> str:
    """`add element` lines for an open-service: `fwd` into share_fwd_v4, `rev` into
    share_rev_v4 (elements as `share_pairs` writes them), each for `seconds`."""
    lines = []
    for name, elems in (("share_fwd_v4", fwd), ("share_rev_v4", rev)):
        if elems:
            items = ", ".join(f"{e} timeout {seconds}s" for e in elems)
            lines.append(f"add element inet {TABLE} {name} {{ {items} }}")
    return "\n".join(lines) + ("\n" if lines else "")


def delete_share_elements(fwd: tuple[str, ...], rev: tuple[str, ...]) -> str:
    """Deleting what `share_elements` added; adding first makes deleting an element the kernel
    already expired succeed (as `delete_elements`)."""
    lines = [share_elements(fwd, rev, 1).rstrip("\n")] if fwd or rev else []
    for name, elems in (("share_fwd_v4", fwd), ("share_rev_v4", rev)):
        if elems:
            lines.append(f"delete element inet {TABLE} {name} {{ {', '.join(elems)} }}")
    return "\n".join(lines) + ("\n" if lines else "")


def share_pairs(from_mac: str, from_ips: tuple[str, ...], to_mac: str, to_ips: tuple[str, ...],
                ports: tuple[tuple[str, int, int], ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (forward, reply) elements letting `from_mac` at `from_ips` reach `to_ips` on `ports`
    (IPv4 only: pure). Callers pass validated MACs, addresses and ports only."""
    fwd, rev = [], []
    for a in from_ips:
        for b in to_ips:
            if ipaddress.ip_address(a).version != 4 or ipaddress.ip_address(b).version != 4:
                continue
            for proto, lo, hi in ports:
                port = str(lo) if lo == hi else f"{lo}-{hi}"
                fwd.append(f"{from_mac} . {a} . {b} . {proto} . {port}")
                rev.append(f"{to_mac} . {b} . {a} . {proto} . {port}")
    return tuple(fwd), tuple(rev)


def parse_set(text: str) -> list[tuple[str, int]]:
    """(element, seconds left) from `nft -j list set` output (pure)."""
    found = []
    for item in json.loads(text).get("nftables", []):
        for elem in item.get("set", {}).get("elem", []):
            if isinstance(elem, dict) and "elem" in elem:
                inner = elem["elem"]
                found.append((_element_text(inner.get("val")), _seconds(inner.get("expires", 0))))
            else:
                found.append((_element_text(elem), 0))
    return found


def list_set(name: str) -> list[tuple[str, int]]:
    result = subprocess.run(["nft", "-j", "list", "set", "inet", TABLE, name],
                            capture_output=True, text=True, timeout=30, check=False)
    return parse_set(result.stdout) if result.returncode == 0 else []


def table_exists() -> bool:
    return subprocess.run(["nft", "list", "table", "inet", TABLE], capture_output=True,
                          timeout=30, check=False).returncode == 0


def live_elements() -> dict[str, list[tuple[str, int]]]:
    """Every dynamic set's members with their remaining seconds (empty without the table)."""
    if not table_exists():
        return {}
    return {name: list_set(name) for name in DYNAMIC_SETS}


def flush_conntrack(ips: tuple[str, ...]) -> None:
    """Forget the client's tracked connections, both directions, so a DNAT-ed connection to the
    captive responder (or one the session allowed) is decided afresh by the rules."""
    for ip in ips:
        for flag in ("-s", "-d"):
            # Exit status 1 means "0 flow entries deleted": nothing to forget, not an error.
            subprocess.run(["conntrack", "-D", flag, ip], capture_output=True, timeout=10,
                           check=False)
