"""Typed configuration: one TOML file per appliance (or console), validated once at start.

Every key lives here and nowhere else; `docs/configuration.md` documents each one. Errors name the
file and the full key path (`mqtt.port`, `network.radio.channel`, `filter.lists[2].url`), so an IT
admin can fix the file without reading code.

A section is a frozen dataclass. Its fields may be str, int, float, bool, Path, a Literal, an
optional (`X | None`, written `""` or left out), another frozen dataclass (a nested table),
`tuple[T, ...]` of any of these (an array; of dataclasses: an array of tables `[[...]]`). A field's
own rule goes in its metadata (`rule(check, each=...)`); rules across the keys of one table go in
that dataclass's `check()` method, rules across sections in `Config.check()`; both raise
`RuleError`. `build()` is the generic validator, `dump()`/`dump_toml()` write TOML back.

Only the standard library is used (tomllib), so loading a config has no side effects.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from appliance import regdomain

DEFAULT_PATH = Path("/etc/appliance/appliance.toml")
ENV_VAR = "APPLIANCE_CONFIG"

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # use with fullmatch()

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration problem a person can fix: names the file and, where known, the key."""

    def __init__(self, path: Path | str | None, key: str | None, message: str) -> None:
        self.path = Path(path) if path else None
        self.key = key
        self.message = message
        where = str(self.path) if self.path else "<config>"
        if key:
            where += f": {key}"
        super().__init__(f"{where}: {message}")


class RuleError(ValueError):
    """Raised by a `check()` method for a rule across keys.

    `key` is relative to the table whose `check()` raises it (`"key_file"` in `MqttSection`,
    `"radio.channel"` from a section holding a `radio` table, `""` for the table itself); in
    `Config.check()` it is the full path (`"mqtt.host"`). The loader turns it into a ConfigError
    naming the file and the full key path.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _port(value: int) -> None:
    _check(1 <= value <= 65535, "must be a TCP port from 1 to 65535")


def _positive(value: float) -> None:
    _check(value > 0, "must be greater than 0")


def _id(value: str) -> None:
    _check(
        bool(ID_PATTERN.fullmatch(value)),
        "must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit "
        "(it becomes an MQTT topic level and a file name)",
    )


def _nonempty(value: str) -> None:
    _check(bool(value.strip()), "must not be empty")


def rule(
    check: Callable[[Any], None] | None = None, *, each: Callable[[Any], None] | None = None
) -> dict[str, Any]:
    """Field metadata: `check(value)` validates the whole converted value; `each(item)` every item
    of a tuple, so its error names `key[i]`. Both raise ValueError with what is expected."""
    return {"check": check, "each": each}


@dataclass(frozen=True)
class ApplianceSection:
    """Who this machine is and where it keeps its state."""

    id: str = field(metadata=rule(_id))
    name: str = ""
    state_dir: Path = Path("/var/lib/appliance")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class PortalSection:
    """The student-facing web portal."""

    listen: str = field(default="0.0.0.0", metadata=rule(_nonempty))  # noqa: S104 - students reach it
    port: int = field(default=80, metadata=rule(_port))
    workers: int = field(default=2, metadata=rule(_positive))
    # A video or audio stream from the library holds a thread while it plays, and gunicorn's
    # workers take connections unevenly: 64 per worker serve 64 streams at once whatever the split
    # (threads start when needed; an idle one costs no memory).
    threads: int = field(default=64, metadata=rule(_positive))
    title: str = field(default="Classroom library", metadata=rule(_nonempty))
    # HTTPS listener of the same process, served only with [network] tls_cert and tls_key.
    https_port: int = field(default=443, metadata=rule(_port))


@dataclass(frozen=True)
class MqttSection:
    """How the agent and the console's ingest worker reach the broker."""

    host: str = field(default="localhost", metadata=rule(_nonempty))
    port: int = field(default=8883, metadata=rule(_port))
    tls: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str = ""
    password_file: Path | None = None
    keepalive: int = field(
        default=30, metadata=rule(lambda v: _check(2 <= v <= 600, "must be 2-600 seconds"))
    )
    topic_root: str = field(
        default="edge/v1",
        metadata=rule(
            lambda v: _check(
                bool(re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", v)),
                "must be topic levels of letters, digits, '-' and '_' separated by '/'",
            )
        ),
    )

    def check(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise RuleError("key_file", "cert_file and key_file go together")
        if self.password_file is not None and not self.username:
            raise RuleError("username", "is required when password_file is set")
        if not self.tls and (self.ca_file or self.cert_file):
            raise RuleError("tls", "is false but TLS files are set; set tls = true")


@dataclass(frozen=True)
class AgentSection:
    """Health collection and reporting on the appliance."""

    interval: float = field(
        default=60.0, metadata=rule(lambda v: _check(0.5 <= v <= 3600, "must be 0.5-3600 seconds"))
    )
    retention_hours: int = field(default=168, metadata=rule(_positive))
    backoff_max: float = field(default=120.0, metadata=rule(_positive))
    # "ntp": the clock is trusted once NTP says it is synchronised (a Pi has no real-time clock);
    # "host": trust the machine's clock as it is (the lab and tests, whose kernel may never
    # report NTP sync). See docs/architecture.md, "Clock trust".
    clock_source: Literal["ntp", "host"] = "ntp"


@dataclass(frozen=True)
class ConsoleSection:
    """The central console: web UI and ingest."""

    listen: str = field(default="127.0.0.1", metadata=rule(_nonempty))
    port: int = field(default=8080, metadata=rule(_port))
    workers: int = field(default=2, metadata=rule(_positive))
    threads: int = field(default=16, metadata=rule(_positive))
    secret_key_file: Path | None = None
    offline_after: float = field(default=180.0, metadata=rule(_positive))
    history_days: int = field(default=30, metadata=rule(_positive))
    cookie_secure: bool = True
    proxy_hops: int = field(
        default=0, metadata=rule(lambda v: _check(0 <= v <= 5, "must be 0-5"))
    )


def _id_user(value: str) -> None:
    _check(bool(re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", value)),
           "must be a system user name (a-z, 0-9, '_', '-'; at most 32 characters)")


def _mac(value: str) -> None:
    _check(bool(MAC_PATTERN.fullmatch(value)), "must be a MAC address like 02:00:5e:10:00:01")


def _hostname(value: str) -> None:
    _check(
        bool(HOSTNAME_PATTERN.fullmatch(value)) and len(value) <= 253,
        "must be a DNS name of letters, digits, '-' and '.' (like portal.school.example)",
    )


def _ifname(value: str) -> None:
    _check(bool(re.fullmatch(r"[A-Za-z0-9_.@-]{1,15}", value)),
           "must be a network interface name (1-15 letters, digits, '_', '.', '-')")


def _interface4(value: str) -> None:
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise ValueError("must be the Pi's IPv4 address with its prefix, like 10.42.0.1/24") from None
    _check(iface.network.prefixlen <= 30, "needs a subnet of at least 4 addresses (/30 or larger)")
    _check(iface.ip != iface.network.network_address and iface.ip != iface.network.broadcast_address,
           "must be a host address of its subnet, not the network or broadcast address")


def _interface6(value: str) -> None:
    if value == "":
        return
    try:
        iface = ipaddress.IPv6Interface(value)
    except ValueError:
        raise ValueError("must be the Pi's IPv6 address with a /64 prefix, like fd42:ce::1/64, "
                         "or \"\" for no IPv6") from None
    _check(iface.network.prefixlen == 64, "must have a /64 prefix (SLAAC needs one)")


def _ipv4(value: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError("must be an IPv4 address") from None


def _captured(value: str) -> None:
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError("must be an IPv4 address") from None
    # Android counts a probe host resolving to RFC 1918, loopback or link-local space as "no
    # internet" rather than "portal"; documentation and public space do not trip it.
    bad = [n for n in NON_CAPTURABLE if addr in n]
    _check(not bad and not addr.is_multicast and not addr.is_unspecified,
           "must not be a private (RFC 1918), loopback, link-local, shared or multicast address; "
           "the default 198.51.100.1 is a documentation address phones treat as public")


def _caller(value: str) -> None:
    _check(bool(CALLER_PATTERN.fullmatch(value)),
           "must be a user name or uid, optionally with ':<unit>.service' (e.g. "
           "'appliance:appliance-portal.service')")


def _device_glob(value: str) -> None:
    _check(bool(re.fullmatch(r"/dev/[A-Za-z0-9_\-\[\]*?/]+", value)) and ".." not in value,
           "must be a glob of block device paths under /dev/ (e.g. '/dev/sd[a-z][0-9]*')")


CALLER_PATTERN = re.compile(r"([a-z_][a-z0-9_-]*|[0-9]+)(:[A-Za-z0-9@_.-]+\.service)?")
MAC_PATTERN = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
HOSTNAME_PATTERN = re.compile(rf"{_LABEL}(\.{_LABEL})+")
NON_CAPTURABLE = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "255.255.255.255/32"))


@dataclass(frozen=True)
class RadioSection:
    """The Pi's own Wi-Fi access point (hostapd), used when `[network] access_point = "onboard"`.

    `passphrase_file` is needed unless `security = "open"`; it is read (and its length checked)
    by `appliance network check|apply`, not when the configuration loads."""

    ssid: str = field(
        default="Classroom",
        metadata=rule(lambda v: _check(1 <= len(v.encode()) <= 32 and "\n" not in v,
                                       "must be 1-32 bytes on one line")),
    )
    security: Literal["wpa2", "wpa3", "wpa2-wpa3", "open"] = "wpa2"
    passphrase_file: Path | None = None
    country: str = field(
        default="US",
        metadata=rule(lambda v: _check(
            v in regdomain.COUNTRIES,
            "must be an ISO 3166-1 alpha-2 country code in capitals, like US or DE")),
    )
    band: Literal["2.4", "5"] = "2.4"
    channel: int = 6
    dfs: bool = False
    max_num_sta: int = field(
        default=40, metadata=rule(lambda v: _check(1 <= v <= 2007, "must be 1-2007"))
    )

    def check(self) -> None:
        problem = regdomain.channel_problem(self.country, self.band, self.channel,
                                            allow_dfs=self.dfs)
        if problem:
            raise RuleError("channel", problem)


@dataclass(frozen=True)
class HelperSection:
    """The privileged network helper: its socket and who may call each verb."""

    socket: Path = Path("/run/appliance-network/helper.sock")
    session_accept: tuple[str, ...] = field(
        default=("appliance:appliance-portal.service",), metadata=rule(each=_caller))
    session_revoke: tuple[str, ...] = field(default=("root",), metadata=rule(each=_caller))
    session_list: tuple[str, ...] = field(
        default=("root", "appliance:appliance-agent.service"), metadata=rule(each=_caller))
    session_status: tuple[str, ...] = field(
        default=("appliance:appliance-portal.service", "appliance:appliance-captive.service"),
        metadata=rule(each=_caller))
    stations: tuple[str, ...] = field(
        default=("root", "appliance:appliance-agent.service"), metadata=rule(each=_caller))
    dns_reload: tuple[str, ...] = field(default=("root",), metadata=rule(each=_caller))
    # The device inventory opens the firewall from staff devices to a display or printer.
    open_service: tuple[str, ...] = field(
        default=("appliance:appliance-devices.service",), metadata=rule(each=_caller))
    close_service: tuple[str, ...] = field(
        default=("root", "appliance:appliance-devices.service"), metadata=rule(each=_caller))
    # The filter's unit switches the redirect itself: ExecStopPost (on) / ExecStartPost (off).
    dns_fallback: tuple[str, ...] = field(
        default=("root", "appliance:appliance-filter.service"), metadata=rule(each=_caller))
    dns_sets: tuple[str, ...] = field(
        default=("root", "appliance:appliance-filter.service"), metadata=rule(each=_caller))
    # USB import (`appliance content import --usb`): IT staff as root, and the agent when the
    # console drives it.
    usb_mount: tuple[str, ...] = field(
        default=("root", "appliance:appliance-agent.service"), metadata=rule(each=_caller))
    usb_unmount: tuple[str, ...] = field(
        default=("root", "appliance:appliance-agent.service"), metadata=rule(each=_caller))
    # Block devices `usb-mount` may mount (shell-style globs on the path): USB mass storage
    # shows up as /dev/sdX; the SD card (/dev/mmcblk0*) never matches.
    usb_devices: tuple[str, ...] = field(
        default=("/dev/sd[a-z]", "/dev/sd[a-z][0-9]*"), metadata=rule(each=_device_glob))


@dataclass(frozen=True)
class NetworkSection:
    """The classroom network: hotspot or segment, DHCP/RA, firewall, captive portal, sessions."""

    access_point: Literal["onboard", "external"] = "onboard"
    # The unprivileged user dnsmasq runs the DHCP hook as (provisioning creates it); in
    # `services = "direct"` (the lab, tests) the hook runs as nobody.
    dhcp_script_user: str = field(default="appliance-dhcp", metadata=rule(_id_user))
    radio: RadioSection = field(default_factory=RadioSection)
    interface: str = field(default="wlan0", metadata=rule(_ifname))
    ipv4: str = field(default="10.42.0.1/24", metadata=rule(_interface4))
    dhcp_first: str = field(default="10.42.0.20", metadata=rule(_ipv4))
    dhcp_last: str = field(default="10.42.0.250", metadata=rule(_ipv4))
    lease_minutes: int = field(
        default=720, metadata=rule(lambda v: _check(2 <= v <= 10080, "must be 2-10080 minutes")))
    ipv6: str = field(default="fd42:ce::1/64", metadata=rule(_interface6))
    uplink: str = field(default="eth0", metadata=rule(_ifname))
    portal_name: str = field(default="classroom.internal", metadata=rule(_hostname))
    portal_mode: Literal["open", "terms"] = "terms"
    terms_file: Path | None = None
    session_hours: float = field(
        default=10.0, metadata=rule(lambda v: _check(0.001 <= v <= 168, "must be 0.001-168 hours")))
    trusted_macs: tuple[str, ...] = field(default=(), metadata=rule(each=_mac))
    walled_garden: tuple[str, ...] = field(default=(), metadata=rule(each=_hostname))
    captured_address: str = field(default="198.51.100.1", metadata=rule(_captured))
    captive_port: int = field(
        default=8081, metadata=rule(lambda v: _check(1025 <= v <= 65535, "must be 1025-65535")))
    tls_cert: Path | None = None
    tls_key: Path | None = None
    render_dir: Path | None = None
    services: Literal["systemd", "direct"] = "systemd"
    helper: HelperSection = field(default_factory=HelperSection)

    def check(self) -> None:
        net4 = ipaddress.IPv4Interface(self.ipv4).network
        pi4 = ipaddress.IPv4Interface(self.ipv4).ip
        first, last = ipaddress.IPv4Address(self.dhcp_first), ipaddress.IPv4Address(self.dhcp_last)
        for key, addr in (("dhcp_first", first), ("dhcp_last", last)):
            if addr not in net4 or addr in (net4.network_address, net4.broadcast_address):
                raise RuleError(key, f"{addr} is not a host address of ipv4 {net4}")
        if first > last:
            raise RuleError("dhcp_last", f"must not come before dhcp_first ({first})")
        if first <= pi4 <= last:
            raise RuleError("dhcp_first", f"the range {first}-{last} holds the Pi's own address {pi4}")
        captured = ipaddress.IPv4Address(self.captured_address)
        if captured in net4:
            raise RuleError("captured_address", f"must lie outside the classroom subnet {net4}")
        if self.interface == self.uplink:
            raise RuleError("uplink", "must differ from interface (the classroom side)")
        for i, mac in enumerate(self.trusted_macs):
            if mac in self.trusted_macs[:i]:
                raise RuleError(f"trusted_macs[{i}]", f"{mac} is listed twice")
        if self.tls_key is not None and self.tls_cert is None:
            raise RuleError("tls_cert", "is required when tls_key is set (the key's certificate)")

    @property
    def https(self) -> bool:
        """Whether the portal serves HTTPS itself (`[portal] https_port`)."""
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def session_seconds(self) -> int:
        return max(1, round(self.session_hours * 3600))


def _moodle_url(value: str) -> None:
    _check(value == "" or bool(re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value)),
           "must be the Moodle site's base URL, http:// or https://, without query (or \"\" for no mirror)")


@dataclass(frozen=True)
class MoodleSection:
    """The Moodle mirror: which site, which sync account, how much disk it may use."""

    url: str = field(default="", metadata=rule(_moodle_url))
    token_file: Path | None = None
    username: str = ""
    password_file: Path | None = None
    courses: tuple[int, ...] = field(
        default=(), metadata=rule(each=lambda v: _check(v > 0, "must be a course id (> 0)"))
    )
    min_free_mb: int = field(default=500, metadata=rule(lambda v: _check(v >= 0, "must be >= 0")))
    timeout: float = field(default=30.0, metadata=rule(_positive))
    grace_days: int = field(default=14, metadata=rule(lambda v: _check(v >= 0, "must be >= 0")))
    # Who may read a mirrored course on the portal: everyone on the hotspot, or pupils who sign
    # in with their Moodle account and are enrolled in it (HTTPS only).
    default_access: Literal["open", "signin"] = "open"
    signin_courses: tuple[int, ...] = field(
        default=(), metadata=rule(each=lambda v: _check(v > 0, "must be a course id (> 0)")))
    open_courses: tuple[int, ...] = field(
        default=(), metadata=rule(each=lambda v: _check(v > 0, "must be a course id (> 0)")))
    offline_signin_days: int = field(default=14, metadata=rule(
        lambda v: _check(0 <= v <= 365, "must be 0 (no offline sign-in) to 365 days")))
    signin_minutes: int = field(default=120, metadata=rule(
        lambda v: _check(5 <= v <= 1440, "must be 5-1440 minutes")))
    signin_account_failures: int = field(default=5, metadata=rule(
        lambda v: _check(1 <= v <= 100, "must be 1-100")))
    signin_device_failures: int = field(default=10, metadata=rule(
        lambda v: _check(1 <= v <= 1000, "must be 1-1000")))
    signin_window_minutes: int = field(default=15, metadata=rule(
        lambda v: _check(1 <= v <= 1440, "must be 1-1440 minutes")))

    @property
    def signin_used(self) -> bool:
        """Whether any course may need sign-in (then the portal must serve HTTPS)."""
        return self.default_access == "signin" or bool(self.signin_courses)

    def check(self) -> None:
        for i, cid in enumerate(self.signin_courses):
            if cid in self.open_courses:
                raise RuleError(f"signin_courses[{i}]", f"course {cid} is also in open_courses")
        if self.signin_used and not self.url:
            raise RuleError("url", "is required for sign-in: Moodle checks the pupils' passwords")
        if self.password_file is not None and not self.username:
            raise RuleError("username", "is required when password_file is set")
        if self.username and self.password_file is None:
            raise RuleError("password_file", "is required when username is set")
        if self.url and self.token_file is None and self.password_file is None:
            raise RuleError("url", "is set but there is no sync account: set token_file, or "
                            "username and password_file")


_SERVICE_TYPE = re.compile(r"_[a-z0-9][a-z0-9-]{0,14}\._(tcp|udp)")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class DevicesSection:
    """The device inventory: DHCP hook spool, mDNS on the classroom interface, retention, and
    which services (displays, printers) are re-announced to which groups across isolation."""

    spool_dir: Path = Path("/var/spool/appliance-dhcp")
    interface: str = field(default="wlan0", metadata=rule(_nonempty))
    mdns: bool = True
    hostname: str = field(default="", metadata=rule(lambda v: _check(
        v == "" or bool(_DNS_LABEL.fullmatch(v)),
        "must be one DNS label: a-z, 0-9 and '-' (or \"\" for the appliance id)")))
    retention_days: int = field(default=30, metadata=rule(
        lambda v: _check(1 <= v <= 3650, "must be 1-3650 days")))
    max_devices: int = field(default=5000, metadata=rule(
        lambda v: _check(10 <= v <= 100000, "must be 10-100000")))
    share_types: tuple[str, ...] = field(
        default=("_airplay._tcp", "_raop._tcp", "_googlecast._tcp", "_ipp._tcp", "_ipps._tcp",
                 "_printer._tcp", "_pdl-datastream._tcp"),
        metadata=rule(each=lambda v: _check(bool(_SERVICE_TYPE.fullmatch(v)),
                                            "must be a service type such as \"_ipp._tcp\"")))
    share_to: tuple[str, ...] = field(default=("staff",), metadata=rule(each=_id))
    # Ask the network helper (open-service) to let share_to devices reach those services.
    open_firewall: bool = True
    poll_interval: float = field(default=0.5, metadata=rule(
        lambda v: _check(0.05 <= v <= 60, "must be 0.05-60 seconds")))


_WINDOW = re.compile(r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d")


@dataclass(frozen=True)
class ContentSection:
    """The content library: where its files live, its own web origin, how it syncs."""

    # May be a USB drive or SSD. The library only uses it once it holds the marker file the
    # first `content add` writes, so an unmounted drive shows as missing instead of filling the SD card.
    root: Path = Path("/var/lib/appliance/content")
    require_mount: bool = False
    # Archive and pack content is served from this port of the portal process: its own origin.
    archive_port: int = field(default=8090, metadata=rule(_port))
    bandwidth_kbps: int = field(
        default=0, metadata=rule(lambda v: _check(v >= 0, "must be 0 (no cap) or more")))
    windows: tuple[str, ...] = ()
    reserve_mb: int = field(default=1024, metadata=rule(lambda v: _check(v >= 0, "must be 0 or more")))
    retries: int = field(default=8, metadata=rule(lambda v: _check(0 <= v <= 100, "must be 0-100")))
    usage_flush_seconds: float = field(
        default=300.0, metadata=rule(lambda v: _check(1 <= v <= 86400, "must be 1-86400 seconds")))

    def check(self) -> None:
        for i, window in enumerate(self.windows):
            if not _WINDOW.fullmatch(window):
                raise RuleError(f"windows[{i}]", 'must be "HH:MM-HH:MM" in 24-hour local time, '
                                'e.g. "22:00-06:00" (across midnight is fine)')


def _cidr(value: str) -> None:
    import ipaddress

    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError("must be an IP range such as 10.0.1.0/24 or 2001:db8::/64") from None


def _ip(value: str) -> None:
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("must be an IP address such as 192.168.4.1 or 2001:db8::1") from None


def _filter_mac(value: str) -> None:
    _check(bool(re.fullmatch(r"([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}", value)),
           "must be a MAC address such as 02:00:00:00:00:01")


def _hhmm(value: str) -> None:
    _check(bool(re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", value)), "must be a time of day HH:MM")


def _days(value: str) -> None:
    names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    parts = [p.strip() for p in value.lower().split(",")]
    ok = value.lower() in ("daily", "*") or all(
        all(d in names for d in p.split("-", 1)) for p in parts)
    _check(ok, "must be days such as mon-fri, mon,wed,fri or daily")


def _timezone(value: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be a time zone such as Europe/Paris") from None


@dataclass(frozen=True)
class FilterListTable:
    """One list of the DNS filter: a category and a file, folder (UT1) or URL."""

    category: str = field(metadata=rule(_nonempty))
    path: Path | None = None
    url: str = ""
    # "ut1": `path` is a UT1 tree, every category folder under it (or only `categories`) a list.
    layout: Literal["list", "ut1"] = "list"
    categories: tuple[str, ...] = ()

    def check(self) -> None:
        if (self.path is None) == (not self.url):
            raise RuleError("path", "give exactly one of path and url")
        if self.layout == "ut1" and self.path is None:
            raise RuleError("layout", "ut1 needs path (a folder of category folders)")


@dataclass(frozen=True)
class FilterGroupTable:
    """A group of devices and its policy; a key left out keeps the built-in group's value (or
    the students' for a new group)."""

    name: str = field(metadata=rule(_id))
    macs: tuple[str, ...] = field(default=(), metadata=rule(each=_filter_mac))
    ranges: tuple[str, ...] = field(default=(), metadata=rule(each=_cidr))
    categories: tuple[str, ...] | None = None
    allow: tuple[str, ...] = ()
    block: tuple[str, ...] = ()
    safesearch: bool | None = None
    youtube: Literal["off", "moderate", "strict"] | None = None
    canaries: bool | None = None
    filtering: bool | None = None


@dataclass(frozen=True)
class FilterScheduleTable:
    """Categories blocked for a group at times of the timetable."""

    group: str = field(metadata=rule(_id))
    categories: tuple[str, ...] = field(metadata=rule(lambda v: _check(bool(v), "must not be empty")))
    days: str = field(default="mon-fri", metadata=rule(_days))
    start: str = field(default="08:00", metadata=rule(_hhmm))
    end: str = field(default="17:00", metadata=rule(_hhmm))

    def check(self) -> None:
        if self.start == self.end:
            raise RuleError("end", "must differ from start")


@dataclass(frozen=True)
class FilterSection:
    """The classroom's DNS filter (`appliance filter serve`) and the unbound behind it."""

    # On: the filter answers the classroom's DNS (dnsmasq keeps DHCP and RAs only, the network's
    # port-53 redirect points at `port`). Off: dnsmasq answers DNS, as with the network alone.
    enabled: bool = False
    listen: tuple[str, ...] = ("0.0.0.0", "::")  # noqa: S104 - every classroom device asks it
    port: int = field(default=53, metadata=rule(_port))
    workers: int = field(default=1, metadata=rule(lambda v: _check(1 <= v <= 16, "must be 1-16")))
    upstreams: tuple[str, ...] = ("127.0.0.1:5335",)
    unbound_port: int = field(default=5335, metadata=rule(_port))
    baseline_port: int = field(default=5336, metadata=rule(_port))
    upstream_timeout: float = field(
        default=1.5, metadata=rule(lambda v: _check(0.1 <= v <= 10, "must be 0.1-10 seconds")))
    cache_size: int = field(default=20000, metadata=rule(_positive))
    rate_limit: int = field(default=200, metadata=rule(_positive))
    rate_burst: int = field(default=400, metadata=rule(_positive))
    timezone: str = field(default="UTC", metadata=rule(_timezone))
    default_group: str = field(default="students", metadata=rule(_id))
    exam_allow: tuple[str, ...] = ()
    block_page: tuple[str, ...] = field(default=(), metadata=rule(each=_ip))
    lists: tuple[FilterListTable, ...] = ()
    groups: tuple[FilterGroupTable, ...] = ()
    schedules: tuple[FilterScheduleTable, ...] = ()

    def check(self) -> None:
        builtin = {"students", "teachers", "staff", "guests", "displays"}
        names = [g.name for g in self.groups]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise RuleError(f"groups[{i}].name", f"group {name!r} is defined twice")
        known = builtin | set(names)
        if self.default_group not in known:
            raise RuleError("default_group", f"unknown group {self.default_group!r}")
        for i, s in enumerate(self.schedules):
            if s.group not in known:
                raise RuleError(f"schedules[{i}].group",
                                f"unknown group {s.group!r}; groups: {', '.join(sorted(known))}")
        if len({self.port, self.unbound_port, self.baseline_port}) < 3:
            raise RuleError("baseline_port", "port, unbound_port and baseline_port must differ")
        for i, up in enumerate(self.upstreams):
            host, _, port = up.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise RuleError(f"upstreams[{i}]", f"must be host:port, e.g. 127.0.0.1:5335 (got {up!r})")


@dataclass(frozen=True)
class Config:
    """The whole validated configuration. Build it with `load()` or `from_dict()`."""

    appliance: ApplianceSection
    portal: PortalSection = field(default_factory=PortalSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    agent: AgentSection = field(default_factory=AgentSection)
    console: ConsoleSection = field(default_factory=ConsoleSection)
    network: NetworkSection = field(default_factory=NetworkSection)
    moodle: MoodleSection = field(default_factory=MoodleSection)
    devices: DevicesSection = field(default_factory=DevicesSection)
    content: ContentSection = field(default_factory=ContentSection)
    filter: FilterSection = field(default_factory=FilterSection)
    source: Path | None = field(default=None, compare=False)

    @property
    def database_path(self) -> Path:
        return self.appliance.state_dir / "appliance.db"

    @property
    def console_database_path(self) -> Path:
        return self.appliance.state_dir / "console.db"

    def check(self) -> None:
        """Rules across sections, run after every section (and its own `check()`) passed.

        Raise `RuleError` with the full key path (`RuleError("mqtt.host", "...")`). A rule that
        only reads one section belongs in that section's `check()` instead.
        """
        if self.content.archive_port == self.portal.port:
            raise RuleError("content.archive_port",
                            "must differ from portal.port: archive content needs its own origin")
        if self.network.https and self.portal.https_port in (self.portal.port, self.content.archive_port):
            raise RuleError("portal.https_port", "must differ from portal.port and content.archive_port")
        if self.moodle.signin_used and not self.network.https:
            key = "moodle.signin_courses" if self.moodle.signin_courses else "moodle.default_access"
            raise RuleError(key, "sign-in needs HTTPS (a password must not cross a shared-key Wi-Fi "
                            "in clear): set network.tls_cert and network.tls_key, a certificate "
                            "for network.portal_name and its key")


# Every field of Config but `source` is a section; the dataclass is the one list of them.
SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(Config)[f.name]
    for f in dataclasses.fields(Config)
    if f.name != "source"
}


def resolve_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config file to use: an explicit flag, else $APPLIANCE_CONFIG, else the default."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a config file; raise ConfigError naming the file and key on any problem."""
    resolved = resolve_path(path)
    try:
        raw = resolved.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            resolved, None, f"no such file (pass --config or set ${ENV_VAR})"
        ) from None
    except OSError as exc:
        raise ConfigError(resolved, None, f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(resolved, None, "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(resolved, None, f"is not valid TOML: {exc}") from None
    return from_dict(data, source=resolved)


def from_dict(data: dict[str, Any], source: Path | None = None) -> Config:
    """Validate an already-parsed mapping (what tests and the lab build)."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            source, unknown[0], f"unknown section; expected one of {', '.join(SECTIONS)}"
        )
    if "appliance" not in data:
        raise ConfigError(source, "appliance", "section is required (it holds at least 'id')")
    sections: dict[str, Any] = {
        name: build(cls, data.get(name, {}), name, source) for name, cls in SECTIONS.items()
    }
    config = Config(**sections, source=source)
    _apply_rules(config, "", source)
    return config


def build(cls: type[T], values: Any, key: str, source: Path | None = None) -> T:
    """Validate the TOML table `values` into the frozen dataclass `cls`.

    `key` is the table's path in the file (`"mqtt"`, `"network.radio"`, `"filter.lists[2]"`); each
    error is a ConfigError naming `source` and the full path of the key at fault, with the value
    found. Checks run innermost first: each value's type, its field rules, nested tables (with
    their `check()`), then `cls.check()` if it has one. Used for every section; tests use it to
    validate dataclasses of their own.
    """
    if not isinstance(values, dict):
        raise ConfigError(source, key, f"must be a table ({_table_name(key)}) (got {values!r})")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        raise ConfigError(
            source,
            _join(key, str(unknown[0])),
            f"unknown key; {_table_name(key)} accepts {', '.join(fields)}",
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        field_key = _join(key, name)
        if name not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(source, field_key, "is required")
            continue
        raw = values[name]
        value = _convert(raw, hints[name], field_key, source)
        each = f.metadata.get("each")
        if each is not None and isinstance(value, tuple):
            for i, item in enumerate(value):
                _field_rule(each, item, raw[i], f"{field_key}[{i}]", source)
        check = f.metadata.get("check")
        if check is not None:
            _field_rule(check, value, raw, field_key, source)
        kwargs[name] = value
    result = cls(**kwargs)
    _apply_rules(result, key, source)
    return result


def _field_rule(
    validate: Callable[[Any], None], value: Any, raw: Any, key: str, source: Path | None
) -> None:
    try:
        validate(value)
    except ValueError as exc:
        raise ConfigError(source, key, f"{exc} (got {raw!r})") from None


def _apply_rules(table: object, key: str, source: Path | None) -> None:
    check = getattr(table, "check", None)
    if check is None:
        return
    try:
        check()
    except RuleError as exc:
        raise ConfigError(source, _join(key, exc.key), exc.message) from None


def _join(key: str, name: str) -> str:
    if not key or not name:
        return key or name
    return key + name if name.startswith("[") else f"{key}.{name}"


def _table_name(key: str) -> str:
    """How the file spells the table at `key`: `[network.radio]`, `[[filter.lists]]`."""
    bare = re.sub(r"\[\d+\]", "", key)
    return f"[[{bare}]]" if key.endswith("]") else f"[{bare}]"


def _convert(value: Any, hint: Any, key: str, source: Path | None) -> Any:
    """Turn a TOML value into the annotated type, or raise ConfigError naming `key`."""
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = get_args(hint)
        options = [a for a in args if a is not type(None)]
        if len(options) != 1:
            raise TypeError(f"unsupported config type {hint!r}: only X | None unions")
        # "" is "not set"; so an optional str cannot hold "" (declare it str with default "").
        if value == "" and type(None) in args:
            return None
        return _convert(value, options[0], key, source)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint, value, key, source)
    if origin is tuple:
        args = get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"unsupported config type {hint!r}: only tuple[T, ...]")
        if not isinstance(value, list | tuple):
            raise ConfigError(source, key, f"must be an array [...] (got {value!r})")
        return tuple(_convert(item, args[0], f"{key}[{i}]", source) for i, item in enumerate(value))
    try:
        return _scalar(value, hint)
    except ValueError as exc:
        raise ConfigError(source, key, f"{exc} (got {value!r})") from None


def _scalar(value: Any, hint: Any) -> Any:
    """Check a TOML value against a scalar type, or raise ValueError saying what was expected."""
    if get_origin(hint) is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be a whole number")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ValueError("must be a non-empty path string")
        return Path(value)
    raise TypeError(f"unsupported config type {hint!r}")  # a bug in this module, not in the file


# --- writing TOML --------------------------------------------------------------------------------


def dump(cfg: Config) -> str:
    """The configuration as TOML text: every section and every key, so `load()` of it gives
    back an equal Config. Paths are written as strings; an unset optional key is left out when
    that is its default, else written `""` (TOML has no null)."""
    return dump_toml({name: to_table(getattr(cfg, name)) for name in SECTIONS})


def to_table(table: object) -> dict[str, Any]:
    """A section (or any dataclass `build()` reads) as the plain mapping `dump_toml()` writes."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(table):  # type: ignore[arg-type]
        value = getattr(table, f.name)
        if value is None:
            if f.default is not None:
                out[f.name] = ""  # how the file says "not set" when the default is something else
            continue
        out[f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_table(value)
    if isinstance(value, tuple):
        return ["" if item is None else _plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def dump_toml(mapping: Mapping[str, Any]) -> str:
    """TOML text for `mapping` that `tomllib.loads()` reads back equal.

    Values may be str, bool, int, float, Path (written as a string), list or tuple (an array),
    and mappings (a `[table]`); a non-empty list of mappings becomes an array of tables
    `[[name]]`, mappings elsewhere inside arrays inline tables. Keys whose value is None are left
    out, since TOML has no null (None inside an array raises ValueError); other types raise
    TypeError. Strings are escaped as TOML basic strings; a lone surrogate raises ValueError.
    """
    lines: list[str] = []
    _emit_table(lines, [], mapping)
    return "\n".join(lines).lstrip("\n") + "\n"


def _emit_table(
    lines: list[str], path: list[str], table: Mapping[str, Any], header: str | None = None
) -> None:
    plain, tables, arrays = [], [], []
    for name, value in table.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            tables.append((name, value))
        elif _is_array_of_tables(value):
            arrays.append((name, value))
        else:
            plain.append((name, value))
    if header is not None:
        lines += ["", header]
    lines += [f"{_toml_key(name)} = {_toml_value(value)}" for name, value in plain]
    # Sub-tables after every plain key: a key written after a header would belong to that table.
    for name, sub in tables:
        inner = [*path, _toml_key(name)]
        _emit_table(lines, inner, sub, f"[{'.'.join(inner)}]")
    for name, items in arrays:
        inner = [*path, _toml_key(name)]
        for item in items:
            _emit_table(lines, inner, item, f"[[{'.'.join(inner)}]]")


def _is_array_of_tables(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(item, Mapping) for item in value)
    )


def _toml_key(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"TOML keys are strings, not {name!r}")
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _toml_string(name)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # 'inf', '-inf', 'nan' and '1e+16' are TOML floats as well
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, os.PathLike):
        return _toml_string(os.fspath(value))
    if isinstance(value, list | tuple):
        if any(item is None for item in value):
            raise ValueError(f"TOML has no null: cannot write None in an array ({value!r})")
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} value {value!r} as TOML")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    """A TOML basic string: quote, backslash and control characters escaped, the rest as is."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04x}")
        elif "\ud800" <= char <= "\udfff":
            raise ValueError(f"cannot write a lone surrogate ({char!r}) as TOML (it is not Unicode text)")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
