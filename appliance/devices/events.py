"""The DHCP hook's spool lines, parsed: one `DhcpEvent` per line, or None for a line to drop.

Pure (no I/O). The hook (`dhcp-event`, shipped beside this module) writes

    ce1<TAB>ts=1767225600<TAB>action=add<TAB>mac=02:ce:00:00:00:01<TAB>ip=192.0.2.50<TAB>...

with a value that held a TAB, CR or LF written as `key:hex=<hex>` instead. Everything in a line
came from a DHCP client, so it is untrusted: every text is cleaned of control and format
characters and cut to a bound here, before anything stores it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal, get_args

Action = Literal["add", "old", "del", "arp-add", "arp-del"]
ACTIONS: tuple[str, ...] = get_args(Action)
MAGIC = "ce1"
# Bounds of what we keep (a DHCP option carries at most 255 bytes; a hostname label 63).
MAX_LINE = 8192
MAX_HOSTNAME = 64
MAX_VENDOR_CLASS = 128
MAX_CLIENT_ID = 160
MAX_OPTIONS = 64
MAX_TAGS = 8
MAX_TAG = 32

MAC_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
IPV4_RE = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}")


@dataclass(frozen=True)
class DhcpEvent:
    """One dnsmasq lease event. Text fields are clean and bounded; absent ones are None."""

    ts: int
    action: Action
    mac: str
    ip: str | None = None
    hostname: str | None = None
    requested_options: tuple[int, ...] | None = None
    vendor_class: str | None = None
    supplied_hostname: str | None = None
    client_id: str | None = None
    # dnsmasq's `old` events at its start carry no hostname or vendor class: never let those
    # wipe what an earlier `add` told us.
    data_missing: bool = False
    interface: str | None = None
    tags: tuple[str, ...] = ()
    lease_expires: int | None = None
    truncated: bool = False

    @property
    def name(self) -> str | None:
        """The best host name the event gives: what the client said, else dnsmasq's."""
        return self.supplied_hostname or self.hostname


def clean_text(value: str, limit: int) -> str:
    """`value` without control or format characters (newlines, escapes, bidi overrides), with
    runs of white space as one space, cut to `limit` characters. Safe to store and print;
    HTML escaping is still the renderer's job."""
    kept = "".join(" " if ch.isspace() else ch for ch in value
                   if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"))
    return " ".join(kept.split())[:limit]


def _text(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    cleaned = clean_text(value, limit)
    return cleaned or None


def _options(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    found = []
    for part in value.split(",")[:MAX_OPTIONS]:
        part = part.strip()
        if part.isdigit() and 0 < int(part) < 256:
            found.append(int(part))
        else:
            return None  # not dnsmasq's decimal list: nothing to trust in it
    return tuple(found) or None


def _int(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 12:
        return None
    return int(value)


def parse_line(raw: bytes) -> DhcpEvent | None:
    """The event a spool line holds, or None when the line is not one (wrong magic, no valid
    action or MAC, too long). Unknown keys are ignored, so a newer hook works with older code."""
    if len(raw) > MAX_LINE:
        return None
    fields = raw.rstrip(b"\n").split(b"\t")
    if not fields or fields[0] != MAGIC.encode():
        return None
    values: dict[str, str] = {}
    for item in fields[1:]:
        key_raw, sep, value_raw = item.partition(b"=")
        if not sep:
            continue
        key = key_raw.decode("ascii", "replace")
        if key.endswith(":hex"):
            key = key[:-4]
            try:
                value_raw = bytes.fromhex(value_raw.decode("ascii"))
            except ValueError:
                continue
        values.setdefault(key, value_raw.decode("utf-8", "replace"))
    action = values.get("action")
    mac = (values.get("mac") or "").lower()
    ts = _int(values.get("ts"))
    if action not in ACTIONS or not MAC_RE.fullmatch(mac) or ts is None:
        return None
    ip = values.get("ip")
    tags = tuple(t for t in (clean_text(t, MAX_TAG) for t in (values.get("tags") or "").split())
                 if t)[:MAX_TAGS]
    return DhcpEvent(
        ts=ts,
        action=action,  # type: ignore[arg-type]  # checked against ACTIONS above
        mac=mac,
        ip=ip if ip and IPV4_RE.fullmatch(ip) else None,
        hostname=_text(values.get("hostname"), MAX_HOSTNAME),
        requested_options=_options(values.get("requested_options")),
        vendor_class=_text(values.get("vendor_class"), MAX_VENDOR_CLASS),
        supplied_hostname=_text(values.get("supplied_hostname"), MAX_HOSTNAME),
        client_id=_text(values.get("client_id"), MAX_CLIENT_ID),
        data_missing=bool(values.get("data_missing")),
        interface=_text(values.get("interface"), 16),
        tags=tags,
        lease_expires=_int(values.get("lease_expires")),
        truncated=values.get("truncated") == "1",
    )


def is_randomized(mac: str) -> bool:
    """True for a locally administered MAC (bit 1 of the first octet), as phones' private
    addresses are: no vendor lookup means anything for it."""
    return bool(int(mac[:2], 16) & 0x02)
