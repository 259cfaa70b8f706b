"""What a device is, from what it tells the network: kind, OS family, model, with the evidence.

Pure (no I/O, no database). `identify(Signals(...))` weighs every clue it has:

- the DHCP parameter request list (option 55) in the order the client sent it, which each OS's
  DHCP client fixes in its source (`PRL_RULES`);
- the DHCP vendor class (option 60): `android-dhcp-14`, `MSFT 5.0`, `dhcpcd-...`, `udhcp ...`;
- the mDNS services it announces and their TXT records (`_airplay._tcp` `model`,
  `_googlecast._tcp` `md`, `_ipp._tcp` `ty`, ...);
- how many captive-portal probes of each OS family the portal saw from it (counts only);
- the host name it gave, and the OUI vendor (never for a randomized MAC: the caller passes
  None then).

Each clue adds weight to an OS family and maybe names a kind or model; the heaviest OS family
wins, and a kind comes from the strongest clue that names one, else from the OS family. The
result lists every clue used as readable evidence. Nothing here links one MAC to another.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

KINDS = ("phone", "tablet", "laptop", "chromebook", "computer", "display", "speaker", "printer",
         "iot", "unknown")
OS_FAMILIES = ("android", "ios", "ipados", "macos", "windows", "chromeos", "linux", "tvos",
               "cast", "fireos", "printer", "unknown")

# Kind when only the OS family is known.
KIND_OF_OS = {"android": "phone", "ios": "phone", "ipados": "tablet", "macos": "laptop",
              "windows": "laptop", "chromeos": "chromebook", "linux": "computer",
              "tvos": "display", "cast": "display", "fireos": "display", "printer": "printer"}


@dataclass(frozen=True)
class PrlRule:
    """An option-55 shape: `exact` must equal the list; `prefix` must start it, and what
    follows may only be options from `then` (each OS adds a few on newer releases)."""

    os: str
    label: str
    options: tuple[int, ...]
    then: tuple[int, ...] = ()
    weight: int = 50
    source: str = ""

    def matches(self, prl: Sequence[int]) -> bool:
        n = len(self.options)
        if tuple(prl[:n]) != self.options:
            return False
        rest = prl[n:]
        return all(o in self.then for o in rest) and len(set(rest)) == len(rest)


# Sources: ../shared/research/portal_mdns.md §3.4 (Android from AOSP NetworkStack's
# DhcpClient.DEFAULT_REQUESTED_PARAMS; the others from community fingerprint tables). The
# research note has no ChromeOS list; ours is the one in Google's own device taxonomy
# (gfiber `taxonomy/dhcp.py`, 2015, drawn from fingerbank): ChromeOS's dhcpcd under shill sends
# 1,121,33,3,6,12,15,26,28,51,54,58,59,119 and usually 252 after it. It is from 2015 builds and
# no capture of a current Chromebook confirms it, so it is weighted lower: the portal's probe
# counts and the host name usually decide a Chromebook.
PRL_RULES: tuple[PrlRule, ...] = (
    PrlRule("android", "Android (AOSP NetworkStack)", (1, 3, 6, 15, 26, 28, 51, 58, 59, 43),
            then=(114, 108), source="AOSP DhcpClient"),
    PrlRule("macos", "macOS", (1, 121, 3, 6, 15, 108, 114, 119, 252, 95, 44, 46)),
    PrlRule("ios", "iOS / iPadOS", (1, 121, 3, 6, 15, 108, 114, 119, 252)),
    PrlRule("ios", "iOS / iPadOS (older)", (1, 121, 3, 6, 15, 119, 252)),
    PrlRule("windows", "Windows 10/11", (1, 3, 6, 15, 31, 33, 43, 44, 46, 47, 119, 121, 249, 252)),
    PrlRule("linux", "Linux dhclient", (1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42)),
    PrlRule("chromeos", "ChromeOS dhcpcd (2015 taxonomy)", (1, 121, 33, 3, 6, 12, 15, 26, 28, 51,
                                                            54, 58, 59, 119), then=(252,),
            weight=30, source="gfiber taxonomy/dhcp.py"),
)

ANDROID_VENDOR = re.compile(r"android-dhcp-(\d{1,3})(?:\D|$)")
HOSTNAME_HINTS: tuple[tuple[re.Pattern[str], str, str | None], ...] = (
    (re.compile(r"ipad", re.I), "ipados", "tablet"),
    (re.compile(r"iphone", re.I), "ios", "phone"),
    (re.compile(r"macbook|imac|mac-?mini", re.I), "macos", "laptop"),
    (re.compile(r"^desktop-|^laptop-", re.I), "windows", None),
    (re.compile(r"^android-|galaxy|pixel", re.I), "android", "phone"),
    (re.compile(r"chromebook", re.I), "chromeos", "chromebook"),
)
PRINTER_TYPES = ("_ipp._tcp.local.", "_ipps._tcp.local.", "_printer._tcp.local.",
                 "_pdl-datastream._tcp.local.")
DISPLAY_TYPES = ("_airplay._tcp.local.", "_googlecast._tcp.local.", "_androidtvremote2._tcp.local.",
                 "_amzn-wplay._tcp.local.")
MAX_MODEL = 64


@dataclass(frozen=True)
class Service:
    """One mDNS service instance of the device: its type (`_ipp._tcp.local.`) and TXT."""

    type: str
    txt: Mapping[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Signals:
    """Everything known about one MAC. `vendor` is the OUI vendor (None for randomized MACs)."""

    requested_options: tuple[int, ...] | None = None
    vendor_class: str | None = None
    hostname: str | None = None
    vendor: str | None = None
    randomized: bool = False
    services: tuple[Service, ...] = ()
    probe_counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Identification:
    kind: str
    os: str
    model: str | None
    os_version: str | None
    score: int
    evidence: tuple[str, ...]


@dataclass
class _Tally:
    os_weight: dict[str, int] = field(default_factory=dict)
    kind: tuple[int, str] | None = None
    model: tuple[int, str] | None = None
    os_version: str | None = None
    evidence: list[str] = field(default_factory=list)

    def add(self, weight: int, why: str, os: str | None = None, kind: str | None = None,
            model: str | None = None) -> None:
        if os:
            self.os_weight[os] = self.os_weight.get(os, 0) + weight
        if kind and (self.kind is None or weight > self.kind[0]):
            self.kind = (weight, kind)
        if model and (self.model is None or weight > self.model[0]):
            self.model = (weight, model[:MAX_MODEL])
        self.evidence.append(why)


def identify(signals: Signals) -> Identification:
    """The device's kind, OS family, model and the evidence for them (see module docstring)."""
    t = _Tally()
    prl = signals.requested_options
    if prl:
        for r in PRL_RULES:
            if r.matches(prl):
                t.add(r.weight, f"DHCP option 55 order is {r.label}", os=r.os)
                break
    _vendor_class(t, signals.vendor_class)
    if signals.hostname:
        for pattern, os, kind in HOSTNAME_HINTS:
            if pattern.search(signals.hostname):
                t.add(15, f"host name looks like {os}", os=os, kind=kind)
                break
    for service in signals.services:
        _service(t, service)
    for os, count in sorted(signals.probe_counts.items()):
        if os in OS_FAMILIES and count > 0:
            t.add(min(40, 15 + 5 * count), f"{count} captive-portal probe(s) of {os}", os=os)
    if signals.vendor and not signals.randomized:
        if "apple" in signals.vendor.lower():
            t.add(5, f"OUI vendor {signals.vendor}")
        else:
            t.evidence.append(f"OUI vendor {signals.vendor}")
    if signals.randomized:
        t.evidence.append("private (randomized) MAC: no vendor lookup")

    os = max(t.os_weight.items(), key=lambda kv: (kv[1], kv[0]))[0] if t.os_weight else "unknown"
    kind = t.kind[1] if t.kind else KIND_OF_OS.get(os, "unknown")
    # An iOS device that says it is an iPad is running iPadOS.
    if os == "ios" and kind == "tablet":
        os = "ipados"
    return Identification(kind=kind, os=os, model=t.model[1] if t.model else None,
                          os_version=t.os_version, score=min(100, t.os_weight.get(os, 0)),
                          evidence=tuple(t.evidence))


def _vendor_class(t: _Tally, vendor_class: str | None) -> None:
    if not vendor_class:
        return
    android = ANDROID_VENDOR.match(vendor_class)
    if android:
        t.add(60, f"DHCP vendor class {vendor_class}", os="android")
        t.os_version = android.group(1)
    elif vendor_class.startswith("MSFT"):
        t.add(40, f"DHCP vendor class {vendor_class}", os="windows")
    elif vendor_class.startswith("dhcpcd-"):
        os = "chromeos" if "cros" in vendor_class.lower() else "linux"
        t.add(20, f"DHCP vendor class {vendor_class}", os=os)
    elif vendor_class.startswith("udhcp"):
        t.add(10, f"DHCP vendor class {vendor_class} (busybox)", os="linux", kind="iot")
    else:
        t.evidence.append(f"DHCP vendor class {vendor_class}")


def _service(t: _Tally, s: Service) -> None:
    txt = {k.lower(): (v or "") for k, v in s.txt.items()}
    short = s.type.removesuffix(".local.")
    if s.type == "_airplay._tcp.local.":
        model = txt.get("model", "")
        if model.startswith("AppleTV"):
            t.add(80, f"mDNS {short} model {model}", os="tvos", kind="display", model=model)
        elif model.startswith(("Mac", "iMac")):
            t.add(60, f"mDNS {short} model {model}", os="macos", kind="laptop", model=model)
        elif model.startswith("AudioAccessory"):
            t.add(70, f"mDNS {short} model {model}", os="tvos", kind="speaker", model=model)
        else:
            t.add(50, f"mDNS {short} (AirPlay receiver) {model}".rstrip(), kind="display",
                  model=model or None)
    elif s.type == "_googlecast._tcp.local.":
        md = txt.get("md", "")
        speaker = any(w in md.lower() for w in ("home", "nest audio", "nest mini", "speaker"))
        t.add(80, f"mDNS {short} md {md}".rstrip(), os="cast",
              kind="speaker" if speaker else "display", model=md or None)
    elif s.type in PRINTER_TYPES:
        printer = txt.get("ty") or txt.get("product", "").strip("()") or None
        t.add(80, f"mDNS {short} printer {printer or ''}".rstrip(), os="printer", kind="printer",
              model=printer)
    elif s.type in ("_device-info._tcp.local.", "_companion-link._tcp.local."):
        model = txt.get("model") or txt.get("rpmd") or ""
        if model.startswith("AppleTV"):
            t.add(60, f"mDNS {short} model {model}", os="tvos", kind="display", model=model)
        elif model.startswith(("Mac", "iMac")):
            t.add(50, f"mDNS {short} model {model}", os="macos", kind="laptop", model=model)
        elif model.startswith("iPad"):
            t.add(50, f"mDNS {short} model {model}", os="ipados", kind="tablet", model=model)
        elif model.startswith("iPhone"):
            t.add(50, f"mDNS {short} model {model}", os="ios", kind="phone", model=model)
    elif s.type in ("_apple-mobdev2._tcp.local.", "_rdlink._tcp.local."):
        t.add(40, f"mDNS {short}", os="ios")
    elif s.type == "_androidtvremote2._tcp.local.":
        t.add(60, f"mDNS {short}", os="android", kind="display")
    elif s.type == "_amzn-wplay._tcp.local.":
        t.add(60, f"mDNS {short}", os="fireos", kind="display")
    elif s.type in ("_raop._tcp.local.", "_spotify-connect._tcp.local."):
        t.add(20, f"mDNS {short}", kind="speaker")
    elif s.type in ("_hap._tcp.local.", "_hap._udp.local."):
        t.add(40, f"mDNS {short} (HomeKit accessory)", kind="iot", model=txt.get("md") or None)
