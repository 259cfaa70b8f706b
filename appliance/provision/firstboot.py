"""First boot: `<boot>/firstboot.toml`, written by the admin onto the SD card's boot partition,
becomes the appliance's configuration, host identity and certificate.

`parse()` validates the whole file first (pure; errors are ConfigErrors naming the key, and
never repeat a secret's value), so a bad key changes nothing. `apply()` then writes
`<etc>/appliance.toml` (the capability sections the image was built with, `<etc>/image.toml`,
with the identity, the broker and the `[network]` hotspot and uplink laid over them;
passphrases in `<etc>/secrets/`, 0600), the uplink's ifupdown stanza (and for a Wi-Fi uplink
its wpa_supplicant file, holding the derived key, never the passphrase), creates SSH host keys
and /etc/machine-id when missing, enrolls when the file has a token, and deletes
firstboot.toml (it holds secrets) only after all of that succeeded.

The appliance id is `<site>-<building>`: what the admin passes to `appliance enrollment-token
--device`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import config as config_module
from appliance.config import ID_PATTERN, ConfigError
from appliance.fleet.pki import normalize_fingerprint
from appliance.provision import client
from appliance.secretfiles import write_secret

FILE_NAME = "firstboot.toml"
# The capability sections an image was built with (the edge role writes it into the image).
IMAGE_SECTIONS = "image.toml"
ERROR_FILE = "firstboot-error.txt"
MQTT_PORT = 8883
# How long first boot waits for a route to the console before it enrolls anyway (and, if the
# console is still unreachable, exits 75 to be retried a minute later).
ROUTE_WAIT = 60.0
KEYS = ("site", "building", "name", "console_url", "ca_fingerprint", "enrollment_token",
        "uplink", "hotspot")
UPLINK_KEYS = ("type", "ssid", "passphrase")
HOTSPOT_KEYS = ("ssid", "passphrase", "country")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]*")
# The onboard radio serves the classroom, so a Wi-Fi uplink is a second (USB) adapter, which
# the kernel names wlan1; Ethernet is the Pi's eth0.
UPLINK_INTERFACES = {"ethernet": "eth0", "wifi": "wlan1"}


@dataclass(frozen=True)
class Uplink:
    type: str  # "ethernet" or "wifi"
    ssid: str = ""
    passphrase: str = ""


@dataclass(frozen=True)
class Hotspot:
    ssid: str
    passphrase: str
    country: str


@dataclass(frozen=True)
class Settings:
    """A validated firstboot.toml."""

    site: str
    building: str
    name: str
    console_url: str
    ca_fingerprint: str | None
    enrollment_token: str | None
    uplink: Uplink
    hotspot: Hotspot

    @property
    def device_id(self) -> str:
        return f"{self.site}-{self.building}"


class _Reader:
    """Typed access to one table of the file; every error names `<table>.<key>`."""

    def __init__(self, path: Path, data: Any, table: str, keys: tuple[str, ...]) -> None:
        self.path, self.table = path, table
        if not isinstance(data, dict):
            raise ConfigError(path, table, "must be a table")
        unknown = sorted(set(data) - set(keys))
        if unknown:
            raise ConfigError(path, self.key(unknown[0]),
                              f"unknown key; {table or 'the file'} accepts {', '.join(keys)}")
        self.data = data

    def key(self, name: str) -> str:
        return f"{self.table}.{name}" if self.table else name

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(self.path, self.key(name), message)

    def text(self, name: str, *, required: bool = True, secret: bool = False) -> str:
        value = self.data.get(name)
        if value is None:
            if required:
                raise self.error(name, "is required")
            return ""
        if not isinstance(value, str):
            raise self.error(name, "must be a string")
        if not value.isprintable() or not value.strip():
            what = "" if secret else f" (got {value!r})"
            raise self.error(name, f"must be non-empty printable text{what}")
        return value.strip() if not secret else value


def parse(text: str, path: Path) -> Settings:
    """Validate firstboot.toml's text; ConfigError naming the key on the first problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, f"is not valid TOML: {exc}") from None
    top = _Reader(path, data, "", KEYS)
    site, building = top.text("site"), top.text("building")
    for name, value in (("site", site), ("building", building)):
        if not _SLUG.fullmatch(value):
            raise top.error(name, f"must be a-z, 0-9 and '-', starting with a letter or digit "
                                  f"(got {value!r})")
    if not ID_PATTERN.fullmatch(f"{site}-{building}"):
        raise top.error("building", "site and building together must be at most 62 characters "
                                    "(the appliance id is <site>-<building>)")
    name = top.text("name", required=False) or f"{site} {building}"
    console_url = top.text("console_url")
    try:
        client.enroll_url(console_url)
    except client.EnrollError as exc:
        raise top.error("console_url", str(exc)) from None
    token = top.text("enrollment_token", required=False, secret=True) or None
    fingerprint_text = top.text("ca_fingerprint", required=False)
    fingerprint = None
    if fingerprint_text:
        try:
            fingerprint = normalize_fingerprint(fingerprint_text)
        except ValueError as exc:
            raise top.error("ca_fingerprint", str(exc)) from None
    elif token:
        raise top.error("ca_fingerprint", "is required with enrollment_token: it pins the "
                                          "console's CA (appliance enrollment-token prints it)")
    return Settings(site, building, name, console_url, fingerprint, token,
                    _uplink(path, data.get("uplink", {"type": "ethernet"})),
                    _hotspot(path, data.get("hotspot")))


def _ssid(reader: _Reader, name: str) -> str:
    value = reader.text(name)
    if len(value.encode("utf-8")) > 32:
        raise reader.error(name, "must be at most 32 bytes")
    return value


def _passphrase(reader: _Reader, name: str) -> str:
    value = reader.text(name, secret=True)
    ok = (8 <= len(value) <= 63 and all(" " <= c <= "~" for c in value)) or bool(
        re.fullmatch(r"[0-9a-fA-F]{64}", value))
    if not ok:
        raise reader.error(name, "must be 8-63 printable ASCII characters (WPA2)")
    return value


def _uplink(path: Path, data: Any) -> Uplink:
    reader = _Reader(path, data, "uplink", UPLINK_KEYS)
    kind = reader.text("type")
    if kind == "ethernet":
        for extra in ("ssid", "passphrase"):
            if extra in reader.data:
                raise reader.error(extra, "is only for type = \"wifi\"")
        return Uplink("ethernet")
    if kind != "wifi":
        raise reader.error("type", f"must be \"ethernet\" or \"wifi\" (got {kind!r})")
    return Uplink("wifi", _ssid(reader, "ssid"), _passphrase(reader, "passphrase"))


def _hotspot(path: Path, data: Any) -> Hotspot:
    if data is None:
        raise ConfigError(path, "hotspot", "table is required (ssid, passphrase, country)")
    reader = _Reader(path, data, "hotspot", HOTSPOT_KEYS)
    ssid, passphrase = _ssid(reader, "ssid"), _passphrase(reader, "passphrase")
    country = reader.text("country").upper()
    if not re.fullmatch(r"[A-Z]{2}", country):
        raise reader.error("country", f"must be a two-letter country code such as \"US\" "
                                      f"(got {country!r})")
    return Hotspot(ssid, passphrase, country)


# -- what the settings become ------------------------------------------------------------------
def _toml(sections: dict[str, dict[str, Any]]) -> str:
    return "# written by `appliance firstboot` from firstboot.toml\n\n" + \
        config_module.dump_toml(sections)


def appliance_sections(settings: Settings, etc: Path) -> dict[str, dict[str, Any]]:
    """appliance.toml's content: who this Pi is, how its agent reaches the broker (the
    console's host, port 8883, the certificates enrollment writes into `<etc>/tls/`), and the
    classroom network (the hotspot; the uplink interface). Passphrases are named by file."""
    host = urllib.parse.urlsplit(settings.console_url).hostname or ""
    return {
        "appliance": {"id": settings.device_id, "name": settings.name},
        "mqtt": {"host": host, "port": MQTT_PORT, "tls": True,
                 "ca_file": str(etc / "tls" / "ca.crt"),
                 "cert_file": str(etc / "tls" / "appliance.crt"),
                 "key_file": str(etc / "tls" / "appliance.key")},
        "network": {"uplink": UPLINK_INTERFACES[settings.uplink.type],
                    "radio": {"ssid": settings.hotspot.ssid, "country": settings.hotspot.country,
                              "passphrase_file": str(etc / "secrets" / "hotspot-passphrase")}},
    }


def interfaces_uplink(settings: Settings) -> str:
    """The uplink's ifupdown stanza (as Debian's own Raspberry Pi images configure eth0): DHCP
    and SLAAC on that one interface, brought up when it appears; dhclient writes resolv.conf.
    The classroom interface is never named: the network capability owns it."""
    name = UPLINK_INTERFACES[settings.uplink.type]
    lines = ["# Written by appliance firstboot from firstboot.toml [uplink].",
             f"allow-hotplug {name}", f"iface {name} inet dhcp"]
    if settings.uplink.type == "wifi":
        lines.append(f"    wpa-conf /etc/wpa_supplicant/wpa_supplicant-{name}.conf")
    lines.append(f"iface {name} inet6 auto")
    return "\n".join(lines) + "\n"


def wpa_supplicant_uplink(uplink: Uplink) -> str:
    """wpa_supplicant's file for a Wi-Fi uplink. The SSID in hex and the PSK derived as WPA2
    does (PBKDF2-HMAC-SHA1, 4096 rounds, the SSID as salt): no quoting to get wrong, and the
    passphrase itself is not kept on the Pi."""
    ssid = uplink.ssid.encode()
    psk = hashlib.pbkdf2_hmac("sha1", uplink.passphrase.encode(), ssid, 4096, 32).hex()
    return ("# Written by appliance firstboot from firstboot.toml [uplink].\n"
            "ctrl_interface=DIR=/run/wpa_supplicant GROUP=root\n"
            f"network={{\n\tssid={ssid.hex()}\n\tpsk={psk}\n\tkey_mgmt=WPA-PSK\n}}\n")


def write_uplink(settings: Settings, root: Path) -> None:
    """Write the uplink's files under `root` (see the module docstring)."""
    stanza = root / "etc" / "network" / "interfaces.d" / "uplink"
    _write_public(stanza, interfaces_uplink(settings))
    if settings.uplink.type == "wifi":
        conf = root / "etc" / "wpa_supplicant" / f"wpa_supplicant-{UPLINK_INTERFACES['wifi']}.conf"
        write_secret(conf, wpa_supplicant_uplink(settings.uplink).rstrip("\n"))


def start_uplink(settings: Settings, root: Path) -> None:
    """On a running Pi (`root` is /, systemd runs; not in tests or a chroot): bring the uplink
    up now, so enrollment, a moment later, can reach the console. systemd starts it (firstboot
    holds no network capability); `ifup@` returns once DHCP answered or gave up. Best effort:
    the next boot brings it up anyway."""
    if root != Path("/") or not Path("/run/systemd/system").is_dir() or not shutil.which("systemctl"):
        return
    unit = f"ifup@{UPLINK_INTERFACES[settings.uplink.type]}.service"
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(["systemctl", "restart", unit], check=False, capture_output=True, timeout=90)
    host = urllib.parse.urlsplit(settings.console_url).hostname or ""
    wait_for_route(host, ROUTE_WAIT)


def has_route(host: str, port: int = 443) -> bool:
    """Whether the kernel has a route to `host` now: connect() of a UDP socket sends nothing,
    it only picks the route (ENETUNREACH without one). A name that does not resolve yet counts
    as no route."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError:
        return False
    for family, kind, proto, _, address in infos:
        with contextlib.suppress(OSError), socket.socket(family, kind, proto) as probe:
            probe.connect(address)
            return True
    return False


def wait_for_route(host: str, seconds: float) -> None:
    """Give the uplink's DHCP up to `seconds` to make the console reachable (a Pi's first DHCP
    answer can come after ifup returned), so enrollment does not wait for the next retry."""
    deadline = time.monotonic() + seconds
    while not has_route(host) and time.monotonic() < deadline:
        time.sleep(1)


@dataclass(frozen=True)
class Outcome:
    """What `apply()` did; `exit_code` 0 when firstboot is complete."""

    device_id: str
    config: Path
    ssh_host_keys: str  # "created", "present" or "no ssh-keygen"
    machine_id: str  # "created" or "present"
    enrolled: client.Enrolled | None
    exit_code: int = 0
    error: str | None = None


def _write_public(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def ensure_ssh_host_keys(root: Path) -> str:
    ssh_dir = root / "etc" / "ssh"
    if list(ssh_dir.glob("ssh_host_*_key")):
        return "present"
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        return "no ssh-keygen"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    # -A makes every missing host key type; -f makes it work under an image's root.
    subprocess.run([keygen, "-A", "-f", str(root)], check=True, capture_output=True)
    return "created"


def ensure_machine_id(root: Path) -> str:
    path = root / "etc" / "machine-id"
    if path.exists() and path.read_text().strip():
        return "present"
    # What systemd-machine-id-setup would write for a fresh machine: 128 random bits as hex.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".machine-id.tmp")
    tmp.write_text(secrets.token_hex(16) + "\n")
    os.chmod(tmp, 0o444)
    os.replace(tmp, path)
    return "created"


def merged(base: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """`base` with `ours` laid over it, table by table (ours wins on every key it sets)."""
    out = dict(base)
    for key, value in ours.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def image_sections(etc: Path) -> dict[str, Any]:
    """The capability sections the image was built with (`<etc>/image.toml`), or none. A file
    that does not parse is an error naming it: the image is broken, not the admin's file."""
    path = etc / IMAGE_SECTIONS
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(path, None, f"cannot be read: {exc}") from None


def apply(settings: Settings, boot_dir: Path, etc: Path, root: Path) -> Outcome:
    """Do first boot from validated settings (see the module docstring). Enrollment problems
    end in an Outcome with exit_code 75 (console unreachable: try again later) or 1, and leave
    firstboot.toml in place."""
    sections = merged(image_sections(etc), appliance_sections(settings, etc))
    config_path = etc / "appliance.toml"
    config_module.from_dict(sections, source=config_path)  # our output passes our own checks
    _write_public(config_path, _toml(sections))
    passphrase = etc / "secrets" / "hotspot-passphrase"
    write_secret(passphrase, settings.hotspot.passphrase)
    # `appliance network up` (the helper's unit, as the services' user) renders hostapd.conf
    # from it at every boot: the file is that user's, its folder root's and open to its group,
    # as the edge role makes them.
    client.give_to_service_user(passphrase)
    client.share_folder_with_service_group(passphrase.parent)
    write_uplink(settings, root)
    start_uplink(settings, root)
    ssh = ensure_ssh_host_keys(root)
    machine_id = ensure_machine_id(root)
    enrolled = None
    if settings.enrollment_token:
        try:
            enrolled = client.enroll(config_module.load(config_path), settings.console_url,
                                     settings.enrollment_token, settings.ca_fingerprint)
        except client.EnrollError as exc:
            code = 75 if isinstance(exc, client.ConsoleUnreachable) else 1
            return Outcome(settings.device_id, config_path, ssh, machine_id, None, code, str(exc))
    (boot_dir / FILE_NAME).unlink()
    (boot_dir / ERROR_FILE).unlink(missing_ok=True)
    return Outcome(settings.device_id, config_path, ssh, machine_id, enrolled)


def report_error(message: str, boot_dir: Path, console_device: Path | None) -> None:
    """Leave the error where an admin finds it: beside firstboot.toml on the SD card, and on
    the screen (the system console) when it can be written."""
    with contextlib.suppress(OSError):
        (boot_dir / ERROR_FILE).write_text(message + "\n")
    if console_device is not None:
        with contextlib.suppress(OSError), console_device.open("a") as screen:
            screen.write(f"appliance firstboot: {message}\n")
