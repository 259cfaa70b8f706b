"""The helper's wire protocol and who may call what: pure, no sockets.

One request per connection, one JSON line each way (at most `MAX_REQUEST` bytes in):

    -> {"verb": "session-accept", "args": {"ip": "10.42.0.23"}}
    <- {"ok": true, "result": {"mac": "02:5e:aa:00:00:01", "seconds_remaining": 36000}}
    <- {"ok": false, "error": "verb 'reboot' is not one the helper knows"}

`parse()` turns bytes into a `Request` or raises `Refused`; `allowed()` decides from the caller's
uid and systemd unit and the verb's allowlist (`[network.helper]`).
"""

from __future__ import annotations

import ipaddress
import json
import pwd
import re
from dataclasses import dataclass
from typing import Any

from appliance.config import MAC_PATTERN, HelperSection
from appliance.network import usb

MAX_REQUEST = 4096

# verb -> (argument names it needs, the [network.helper] key holding its callers)
VERBS: dict[str, tuple[tuple[str, ...], str]] = {
    "session-accept": (("ip",), "session_accept"),
    "session-revoke": (("mac",), "session_revoke"),
    "session-list": ((), "session_list"),
    "session-status": (("ip",), "session_status"),
    "stations": ((), "stations"),
    "dns-reload": ((), "dns_reload"),
    "open-service": (("from_mac", "to_mac", "ports", "seconds"), "open_service"),
    "close-service": (("from_mac", "to_mac"), "close_service"),
    "dns-fallback": (("state",), "dns_fallback"),
    "dns-sets": ((), "dns_sets"),
    # The answer to usb-mount carries a directory fd (SCM_RIGHTS); the mount lasts until the
    # caller hangs up or anyone allowed calls usb-unmount (see helperd).
    "usb-mount": (("device",), "usb_mount"),
    "usb-unmount": ((), "usb_unmount"),
}
# open-service: at most this many port entries, and seconds within these bounds (the caller
# renews; the kernel drops an opening nobody renewed).
MAX_PORTS = 16
MIN_SHARE_SECONDS, MAX_SHARE_SECONDS = 60, 86400
_PORT_ENTRY = re.compile(r"(tcp|udp):([0-9]{1,5})(?:-([0-9]{1,5}))?")
FALLBACK_STATES = ("on", "off")


class Refused(Exception):
    """A request the helper will not carry out; `reason` is short and stable (it is logged once
    per caller and reason)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Request:
    verb: str
    args: dict[str, str]


@dataclass(frozen=True)
class Caller:
    """Who is on the other end of the socket (SO_PEERCRED, and its systemd unit if any)."""

    pid: int
    uid: int
    unit: str | None
    gid: int | None = None


def parse(raw: bytes) -> Request:
    if len(raw) > MAX_REQUEST:
        raise Refused("request too long")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Refused("request is not a JSON line") from None
    if not isinstance(data, dict) or not isinstance(data.get("verb"), str):
        raise Refused("request is not an object with a verb")
    verb = data["verb"]
    if verb not in VERBS:
        raise Refused(f"verb {verb[:40]!r} is not one the helper knows")
    args = data.get("args", {})
    if not isinstance(args, dict) or set(args) != set(VERBS[verb][0]):
        raise Refused(f"{verb} takes {', '.join(VERBS[verb][0]) or 'no arguments'}")
    if not all(isinstance(v, str) for v in args.values()):
        raise Refused(f"{verb}: arguments must be strings")
    clean: dict[str, str] = {}
    for name, value in args.items():
        clean[name] = _check_arg(verb, name, value)
    return Request(verb, clean)


def _check_arg(verb: str, name: str, value: str) -> str:
    if name == "ip":
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise Refused(f"{verb}: ip is not an IP address") from None
    if name in ("mac", "from_mac", "to_mac"):
        if not MAC_PATTERN.fullmatch(value.lower()):
            raise Refused(f"{verb}: {name} is not a MAC address")
        return value.lower()
    if name == "ports":
        return ",".join(f"{proto}:{lo}" if lo == hi else f"{proto}:{lo}-{hi}"
                        for proto, lo, hi in parse_ports(verb, value))
    if name == "seconds":
        if not value.isascii() or not value.isdigit() or \
                not MIN_SHARE_SECONDS <= int(value) <= MAX_SHARE_SECONDS:
            raise Refused(f"{verb}: seconds must be {MIN_SHARE_SECONDS}-{MAX_SHARE_SECONDS}")
        return str(int(value))
    if name == "state":
        if value not in FALLBACK_STATES:
            raise Refused(f"{verb}: state is on or off")
        return value
    if name == "device":
        try:
            return usb.check_argument(value)
        except usb.UsbError as exc:
            raise Refused(f"{verb}: {exc}") from None
    raise Refused(f"{verb}: unknown argument")  # pragma: no cover - VERBS lists every argument


def parse_ports(verb: str, value: str) -> tuple[tuple[str, int, int], ...]:
    """(protocol, first, last) from "tcp:7000,udp:6000-6999" (pure). Strict: tcp or udp, ports
    1-65535, first <= last, 1 to MAX_PORTS entries, no spaces; duplicates are dropped. Nothing
    else of the argument reaches nft."""
    entries = value.split(",")
    if not value or len(entries) > MAX_PORTS:
        raise Refused(f"{verb}: ports must be 1-{MAX_PORTS} entries such as tcp:7000,udp:6000-6999")
    found: dict[tuple[str, int, int], None] = {}
    for entry in entries:
        match = _PORT_ENTRY.fullmatch(entry)
        if match is None:
            raise Refused(f"{verb}: ports entry {entry[:20]!r} is not tcp:PORT or udp:FIRST-LAST")
        proto, lo = match[1], int(match[2])
        hi = int(match[3]) if match[3] else lo
        if not 1 <= lo <= hi <= 65535:
            raise Refused(f"{verb}: ports entry {entry!r} is outside 1-65535 or backwards")
        found[(proto, lo, hi)] = None
    return tuple(found)


def _uid(user: str) -> int | None:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def allowed(caller: Caller, verb: str, helper: HelperSection) -> bool:
    """Whether `caller` may call `verb`: some entry of the verb's list names its user (and, if
    the entry names a unit, the caller runs in that unit)."""
    entries: tuple[str, ...] = getattr(helper, VERBS[verb][1])
    for entry in entries:
        user, _, unit = entry.partition(":")
        if _uid(user) == caller.uid and (not unit or unit == caller.unit):
            return True
    return False


def unit_of(cgroup_text: str) -> str | None:
    """The systemd unit a process runs in, from the text of /proc/<pid>/cgroup (pure)."""
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        for part in reversed(path.split("/")):
            if part.endswith(".service"):
                return part
    return None


def unit_by_membership(units: dict[str, str], pid: int) -> str | None:
    """The unit whose cgroup.procs text (`units`: unit name -> that file's text) lists `pid`
    (pure)."""
    wanted = str(pid)
    for unit, procs in units.items():
        if wanted in procs.split():
            return unit
    return None


def ok(result: Any) -> bytes:
    return (json.dumps({"ok": True, "result": result}, sort_keys=True) + "\n").encode()


def error(message: str) -> bytes:
    return (json.dumps({"ok": False, "error": message}) + "\n").encode()
