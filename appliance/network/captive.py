"""The captive responder (`appliance network captive`): where nftables sends port 80 of phones
not yet accepted, and the captured address (probe hosts while the uplink is down).

A tiny stdlib server of its own, not the portal's gunicorn: every answer is HTTP/1.0 with
`Connection: close` and the socket closed after it. gunicorn keeps connections alive and drops an
app's `Connection: close`, and a DNAT-ed keep-alive connection would keep reaching this
responder after the phone was accepted (conntrack keeps the old NAT mapping).

- not accepted: `302` to `http://<portal_name>/captive/` with `Cache-Control: no-store`
  (and a short HTML body), for every host and path, login triggers included;
- accepted (or `portal_mode = "open"`): the exact online answer of the probe (`probes.py`), and
  for any other URL a 302 to the portal's front page (only reached through the captured
  address, i.e. while offline).

"Accepted?" is asked of the helper (`session-status`) for the client's address.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from appliance.config import Config
from appliance.network import probes
from appliance.network.client import HelperError, call

log = logging.getLogger("appliance.network.captive")

Accepted = Callable[[str], bool]


def helper_accepted(socket_path: Path) -> Accepted:
    """`accepted(ip)` asking the helper; a helper that cannot answer means "not accepted"."""

    def accepted(ip: str) -> bool:
        try:
            return bool(call(socket_path, "session-status", {"ip": ip})["accepted"])
        except (HelperError, KeyError, TypeError) as exc:
            log.warning("session-status for %s failed: %s", ip, exc)
            return False

    return accepted


def answer(host: str, path: str, accepted: bool, portal_name: str) -> probes.Answer:
    """What the responder sends (pure): the rules in the module docstring."""
    if accepted:
        online = probes.online_answer(host, path)
        if online is not None:
            return online
        target = f"http://{portal_name}/"
    else:
        target = f"http://{portal_name}/captive/"
    body = (f'<!doctype html><title>Sign in</title><a href="{target}">Sign in to the '
            f"classroom network</a>\n").encode()
    return probes.Answer(302, body, "text/html; charset=utf-8", (("Location", target),))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "classroom-captive"
    sys_version = ""
    server: _Server

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def do_POST(self) -> None:
        self._respond(head=False)

    def _respond(self, *, head: bool) -> None:
        host = self.headers.get("Host", "")
        path = urlsplit(self.path).path or "/"
        ip = self.client_address[0].removeprefix("::ffff:")
        result = answer(host, path, self.server.accepted(ip), self.server.portal_name)
        self.send_response(result.status)
        if result.content_type:
            self.send_header("Content-Type", result.content_type)
        for name, value in result.headers:
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(result.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if not head and result.status not in (204, 304):
            self.wfile.write(result.body)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.client_address[0], format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    address_family = socket.AF_INET6

    def __init__(self, port: int, accepted: Accepted, portal_name: str) -> None:
        self.accepted = accepted
        self.portal_name = portal_name
        super().__init__(("::", port), _Handler)

    def server_bind(self) -> None:
        # One socket for IPv4 (as ::ffff:a.b.c.d) and IPv6 clients.
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def make_server(port: int, accepted: Accepted, portal_name: str) -> ThreadingHTTPServer:
    return _Server(port, accepted, portal_name)


def serve(cfg: Config, stop: threading.Event) -> None:
    """Run the responder on `[network] captive_port` until `stop` is set."""
    net = cfg.network
    accepted: Accepted = (
        (lambda ip: True) if net.portal_mode == "open" else helper_accepted(net.helper.socket))
    server = make_server(net.captive_port, accepted, net.portal_name)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()
    log.info("captive responder on port %d", net.captive_port)
    stop.wait()
    server.shutdown()
    server.server_close()
