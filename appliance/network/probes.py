"""The captive-portal probes of every OS we serve, and the exact "online" answer each expects.

Pure data and lookups, no I/O: the portal's captive responder answers from it, the lab's fake
internet serves the same bodies, and the tests walk it. Sources: docs/network.md (probe table)
and ../shared/research/portal_mdns.md §1.1 and §1.4.
"""

from __future__ import annotations

from dataclasses import dataclass, field

APPLE_SUCCESS = b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>"
FIREFOX_CANONICAL = (
    b'<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>'
)
KINDLE_STUB = (
    b"<html><head><title>81ce4465-7167-4dcb-835b-dcc9e44c112a</title></head>"
    b"<body>81ce4465-7167-4dcb-835b-dcc9e44c112a</body></html>"
)
# What Windows expects `dns.msftncsi.com` to resolve to (its NCSI DNS check).
MSFT_NCSI_DNS_NAME = "dns.msftncsi.com"
MSFT_NCSI_DNS_ADDRESS = "131.107.255.255"

# User-Agents the probes really send (tests and the lab's banner act as these phones).
USER_AGENTS: dict[str, str] = {
    "ios": "CaptiveNetworkSupport-443.0.1 wispr",
    "macos": "CaptiveNetworkSupport-481.0.1 wispr",
    "android": ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/60.0.3112.32 Safari/537.36"),
    "windows": "Microsoft NCSI",
    "firefox": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "chromeos": ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
                 "Chrome/120.0.0.0 Safari/537.36"),
    "ubuntu": "NetworkManager/1.46.0",
    "kindle": "Mozilla/5.0 (Linux; U; Android 4.0.3; en-us; KFTT Build/IML74K) AppleWebKit/535.19",
}


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, body, content type and extra headers."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Probe:
    """One probe URL (`http://host/path`, `https` for the ones no portal can fake) and the
    answer that tells the OS it is online."""

    platform: str
    host: str
    path: str
    online: Answer
    https: bool = False
    # A URL the OS opens to show the portal (Windows, Kindle): always redirected to the portal,
    # never answered with an online body.
    login_trigger: bool = False
    query: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def url(self) -> str:
        scheme = "https" if self.https else "http"
        return f"{scheme}://{self.host}{self.path}{'?' + self.query if self.query else ''}"


_204 = Answer(204)
PROBES: tuple[Probe, ...] = (
    Probe("ios", "captive.apple.com", "/hotspot-detect.html", Answer(200, APPLE_SUCCESS, "text/html")),
    Probe("ios", "www.apple.com", "/library/test/success.html", Answer(200, APPLE_SUCCESS, "text/html")),
    Probe("android", "connectivitycheck.gstatic.com", "/generate_204", _204),
    Probe("android", "www.google.com", "/gen_204", _204),
    Probe("android", "play.googleapis.com", "/generate_204", _204),
    Probe("android", "clients3.google.com", "/generate_204", _204),
    Probe("android", "www.gstatic.com", "/generate_204", _204),
    Probe("android", "connectivitycheck.android.com", "/generate_204", _204),
    Probe("android", "connectivitycheck.platform.hicloud.com", "/generate_204", _204),
    Probe("android", "connect.rom.miui.com", "/generate_204", _204),
    Probe("android", "connectivitycheck.gstatic.cn", "/generate_204", _204),
    Probe("android", "www.google.com", "/generate_204", _204, https=True),
    Probe("windows", "www.msftconnecttest.com", "/connecttest.txt",
          Answer(200, b"Microsoft Connect Test", "text/plain")),
    Probe("windows", "ipv6.msftconnecttest.com", "/connecttest.txt",
          Answer(200, b"Microsoft Connect Test", "text/plain")),
    Probe("windows", "www.msftncsi.com", "/ncsi.txt", Answer(200, b"Microsoft NCSI", "text/plain")),
    Probe("windows", "www.msftconnecttest.com", "/redirect", Answer(302), login_trigger=True),
    Probe("firefox", "detectportal.firefox.com", "/canonical.html",
          Answer(200, FIREFOX_CANONICAL, "text/html")),
    Probe("firefox", "detectportal.firefox.com", "/success.txt", Answer(200, b"success\n", "text/plain")),
    Probe("chromeos", "connectivitycheck.gstatic.com", "/generate_204", _204),
    Probe("ubuntu", "connectivity-check.ubuntu.com", "/",
          Answer(204, headers=(("X-NetworkManager-Status", "online"),))),
    Probe("gnome", "nmcheck.gnome.org", "/check_network_status.txt",
          Answer(200, b"NetworkManager is online\n", "text/plain")),
    Probe("fedora", "fedoraproject.org", "/static/hotspot.txt", Answer(200, b"OK", "text/plain")),
    Probe("kindle", "spectrum.s3.amazonaws.com", "/kindle-wifi/wifistub.html",
          Answer(200, KINDLE_STUB, "text/html")),
    Probe("kindle", "spectrum.s3.amazonaws.com", "/kindle-wifi/wifiredirect.html", Answer(302),
          login_trigger=True),
)

# Every host a probe uses (HTTP ones): what the local answers table points at the captured
# address while the uplink is down.
PROBE_HOSTS: tuple[str, ...] = tuple(sorted({p.host for p in PROBES if not p.https}))


def online_answer(host: str, path: str) -> Answer | None:
    """The online answer for `http://host/path`, or None if it is no probe we know (or a login
    trigger, which always goes to the portal). `host` may carry a port; case is ignored."""
    host = host.split(":", 1)[0].lower().rstrip(".")
    for probe in PROBES:
        if not probe.https and not probe.login_trigger and probe.host == host and probe.path == path:
            return probe.online
    return None


def is_probe_host(host: str) -> bool:
    return host.split(":", 1)[0].lower().rstrip(".") in PROBE_HOSTS
