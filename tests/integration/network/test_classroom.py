"""The classroom network for real, in namespaces: phones lease from the rendered dnsmasq, the
probes are redirected before acceptance and answered online after, HTTPS is reset, DNS is the
Pi's, phones reach neither each other nor the Pi's SSH, revocation cuts at once, and sessions
come back after the helper restarts. One classroom for the module (building it costs seconds).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.harness.netns import Network
from appliance.harness.process import write_config
from appliance.network import probes

pytestmark = pytest.mark.integration

UDHCPC_SCRIPT = """#!/bin/sh
# Our own udhcpc hook: configures the phone's interface only, never the host's resolver.
case "$1" in
  bound|renew) ip addr replace "$ip/${mask:-24}" dev "$interface"
               ip route replace default via "$router" ;;
esac
"""

FAKE_INTERNET = """
import sys, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from appliance.network import probes
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        a = probes.online_answer(self.headers.get("Host", ""), self.path.split("?")[0])
        if a is None:
            a = probes.Answer(200, b"the internet", "text/plain")
        self.send_response(a.status)
        for k, v in a.headers: self.send_header(k, v)
        if a.content_type: self.send_header("Content-Type", a.content_type)
        self.send_header("Content-Length", str(len(a.body)))
        self.end_headers()
        if a.status != 204: self.wfile.write(a.body)
    def log_message(self, *a): pass
class S(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
S(("::", 80), H).serve_forever()
"""


def dns_query(ns, server: str, name: str, *, tcp: bool = False) -> list[str]:
    """A/AAAA answers from `server`, asked from inside namespace `ns` (python, no dig needed)."""
    code = f"""
import socket, struct, json
labels = b"".join(bytes([len(l)]) + l.encode() for l in {name!r}.split("."))
q = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + labels + b"\\0" + struct.pack(">HH", 1, 1)
if {tcp!r}:
    s = socket.create_connection(({server!r}, 53), timeout=3); s.sendall(struct.pack(">H", len(q)) + q)
    n = struct.unpack(">H", s.recv(2))[0]; d = b""
    while len(d) < n: d += s.recv(n - len(d))
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    s.sendto(q, ({server!r}, 53)); d = s.recv(4096)
an = struct.unpack(">H", d[6:8])[0]; i = 12
while d[i]: i += d[i] + 1
i += 5; out = []
for _ in range(an):
    i += 2 if d[i] & 0xC0 == 0xC0 else 0
    t, c, ttl, ln = struct.unpack(">HHIH", d[i:i+10]); i += 10
    if t == 1: out.append(socket.inet_ntoa(d[i:i+4]))
    i += ln
print(json.dumps(out))
"""
    result = ns.run(sys.executable, "-c", code, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class Classroom:
    def __init__(self, tmp: Path, mode: str = "terms") -> None:
        self.tmp = tmp
        self.net = Network()
        self.procs: list[subprocess.Popen[bytes]] = []
        net = self.net
        self.pi, self.inet = net.add("pi"), net.add("inet")
        self.phones = [net.add("p1"), net.add("p2")]
        net.link("pi", "inet", "203.0.113.2/24", "203.0.113.1/24", a_dev="up0", b_dev="wan0")
        self.pi.run("ip", "addr", "add", "2001:db8:113::2/64", "dev", "up0", "nodad")
        self.inet.run("ip", "addr", "add", "2001:db8:113::1/64", "dev", "wan0", "nodad")
        self.inet.run("ip", "addr", "add", "203.0.113.53/32", "dev", "wan0")
        self.pi.run("ip", "route", "add", "default", "via", "203.0.113.1")
        self.pi.run("ip", "-6", "route", "add", "default", "via", "2001:db8:113::1")
        self.seg = net.segment("wlan", "p1", "p2", owner="pi", isolated=True,
                               subnet4="10.42.0.0/24", subnet6="fd42:ce::/64")
        self.state = tmp / "state"
        # The socket where an unprivileged caller (nobody) can reach it: pytest's folders are 0700.
        self.run_dir = Path(tempfile.mkdtemp(prefix="classroom-helper-"))
        self.run_dir.chmod(0o755)
        self.socket = self.run_dir / "helper.sock"
        self.config = write_config(
            tmp / "appliance.toml",
            appliance={"id": "classroom-test", "state_dir": str(self.state)},
            network={"access_point": "external", "interface": "wlan", "uplink": "up0",
                     "portal_mode": mode, "services": "direct", "session_hours": 1.0,
                     "render_dir": str(tmp / "render"), "walled_garden": ["garden.example"],
                     "helper": {"socket": str(self.socket), "session_accept": ["root"],
                                "session_status": ["root"], "session_revoke": ["root"],
                                "session_list": ["root"], "dns_reload": ["root"]}},
        )
        self.appliance("network", "apply")
        self.procs.append(self.inet.popen(sys.executable, "-c", FAKE_INTERNET,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.start_helper()
        with (tmp / "captive.log").open("ab") as log:
            self.procs.append(self.pi.popen(*self.command("network", "captive"), stdout=log,
                                            stderr=subprocess.STDOUT))
        hook = tmp / "udhcpc.sh"
        hook.write_text(UDHCPC_SCRIPT)
        hook.chmod(0o755)
        for phone in self.phones:
            phone.run("busybox", "udhcpc", "-f", "-q", "-n", "-t", "5", "-i", "eth0", "-s", str(hook),
                      timeout=30)
        self.wait_port(self.pi, "10.42.0.1", 8081)
        self.wait_port(self.inet, "203.0.113.1", 80)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "appliance", "--config", str(self.config), *args]

    def appliance(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.pi.run(*self.command(*args), check=False, timeout=60)

    def start_helper(self) -> None:
        with (self.tmp / "helper.log").open("ab") as log:
            self.helper = self.pi.popen(*self.command("network", "helper"), stdout=log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            assert time.monotonic() < deadline, (self.tmp / "helper.log").read_text()
            time.sleep(0.05)

    def stop_helper(self) -> None:
        self.helper.terminate()
        self.helper.wait(10)

    def wait_port(self, ns, host: str, port: int) -> None:
        code = f"import socket; socket.create_connection(({host!r}, {port}), timeout=1).close()"
        deadline = time.monotonic() + 10
        while ns.run(sys.executable, "-c", code, check=False).returncode != 0:
            assert time.monotonic() < deadline, f"{host}:{port} never answered"
            time.sleep(0.1)

    def ip_of(self, phone) -> str:
        out = json.loads(phone.run("ip", "-j", "-4", "addr", "show", "dev", "eth0").stdout)
        return out[0]["addr_info"][0]["local"]

    def curl(self, phone, url: str, ua: str = "", resolve: str = "203.0.113.1", *extra: str):
        host = url.split("/")[2]
        port = "443" if url.startswith("https") else "80"
        result = phone.run("curl", "-s", "-o", "-", "-w", "\n%{http_code} %{redirect_url}",
                           "--max-time", "5", "-A", ua, "--resolve", f"{host}:{port}:{resolve}",
                           *extra, url, check=False, timeout=15)
        body, _, tail = result.stdout.rpartition("\n")
        code, _, location = tail.partition(" ")
        return result.returncode, int(code or 0), location.strip(), body

    def helper_call(self, verb: str, **args: str):
        code = (f"import json; from appliance.network.client import call; "
                f"print(json.dumps(call({str(self.socket)!r}, {verb!r}, {args!r})))")
        return json.loads(self.pi.run(sys.executable, "-c", code).stdout)

    def close(self) -> None:
        for p in [*self.procs, self.helper]:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
        pid_file = self.tmp / "render" / "dnsmasq.pid"
        if pid_file.exists():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text()), 15)
        self.net.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def classroom(tmp_path_factory) -> Iterator[Classroom]:
    room = Classroom(tmp_path_factory.mktemp("classroom"))
    yield room
    room.close()


def test_phones_lease_from_the_rendered_dnsmasq(classroom):
    ips = [classroom.ip_of(p) for p in classroom.phones]
    assert all(ip.startswith("10.42.0.") for ip in ips) and len(set(ips)) == 2
    leases = (classroom.tmp / "render" / "dnsmasq.leases").read_text()
    assert all(ip in leases for ip in ips)


def test_the_flow_before_and_after_acceptance(classroom):
    phone = classroom.phones[0]
    http_probes = [p for p in probes.PROBES if not p.https]
    for probe in http_probes:
        rc, code, location, _ = classroom.curl(phone, probe.url, probes.USER_AGENTS.get(probe.platform, ""))
        assert (code, location) == (302, "http://classroom.internal/captive/"), probe.url
    # HTTPS of a client not accepted: a reset at once, never a hang.
    started = time.monotonic()
    rc, code, _, _ = classroom.curl(phone, "https://www.google.com/generate_204")
    assert rc == 7 and time.monotonic() - started < 1.5
    # A keep-alive connection opened before acceptance.
    classroom.helper_call("session-accept", ip=classroom.ip_of(phone))
    for probe in http_probes:
        ua = probes.USER_AGENTS.get(probe.platform, "")
        rc, code, location, body = classroom.curl(phone, probe.url, ua)
        if probe.login_trigger:
            continue
        assert code == probe.online.status, probe.url
        assert body.encode() == probe.online.body.rstrip(b"\n") or body.encode() == probe.online.body
    rc, code, _, body = classroom.curl(phone, "http://example.org/")
    assert (code, body) == (200, "the internet")
    # The other phone is still not accepted.
    rc, code, location, _ = classroom.curl(classroom.phones[1], "http://example.org/")
    assert code == 302
    listed = classroom.helper_call("session-list")
    assert [s["ip"] for s in listed] == [classroom.ip_of(phone)]


def test_dns_to_anyone_is_answered_by_the_pi(classroom):
    phone = classroom.phones[1]
    for tcp in (False, True):
        assert dns_query(phone, "203.0.113.53", "classroom.internal", tcp=tcp) == ["10.42.0.1"]


def test_phones_reach_neither_each_other_nor_ssh(classroom):
    p1, p2 = classroom.phones
    other = classroom.ip_of(p2)
    assert p1.run("ping", "-c", "1", "-W", "1", other, check=False).returncode != 0
    code = "import socket; socket.create_connection(('10.42.0.1', 22), timeout=2)"
    result = p1.run(sys.executable, "-c", code, check=False)
    assert "ConnectionRefused" in result.stderr  # reset by the input chain, not a hang


def test_session_survives_a_helper_restart_and_revoke_cuts_at_once(classroom):
    phone = classroom.phones[0]
    ip = classroom.ip_of(phone)
    if not classroom.helper_call("session-status", ip=ip)["accepted"]:
        classroom.helper_call("session-accept", ip=ip)
    classroom.stop_helper()
    subprocess.run(["ip", "netns", "exec", classroom.pi.name, "nft", "flush", "set", "inet",
                    "classroom", "accepted_v4"], check=True)  # as after a reboot
    classroom.start_helper()
    deadline = time.monotonic() + 10
    while classroom.curl(phone, "http://example.org/")[1] != 200:
        assert time.monotonic() < deadline, "session was not restored"
        time.sleep(0.3)
    mac = classroom.helper_call("session-status", ip=ip)["mac"]
    classroom.helper_call("session-revoke", mac=mac)
    assert classroom.curl(phone, "http://example.org/")[1] == 302


def test_helper_refuses_garbage_and_unlisted_callers(classroom):
    sock_path = str(classroom.socket)
    code = f"""
import os, socket, sys
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX); s.connect({sock_path!r})
s.sendall(b'{{"verb": "session-list", "args": {{}}}}\\n'); s.shutdown(socket.SHUT_WR)
print(s.recv(4096).decode())
"""
    for _ in range(2):
        out = classroom.pi.run(sys.executable, "-c", code).stdout
        assert '"ok": false' in out and "may not call session-list" in out
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock_path)
        s.sendall(b"\x00garbage\n")
        s.shutdown(socket.SHUT_WR)
        assert b"not a JSON line" in s.recv(4096)
    log = (classroom.tmp / "helper.log").read_text()
    assert log.count("may not call session-list") == 1  # logged once per caller and reason


def test_bad_input_exits_2_and_leaves_the_network_untouched(classroom, tmp_path):
    before = classroom.pi.run("nft", "list", "table", "inet", "classroom").stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(classroom.config.read_text().replace('interface = "wlan"', 'interface = "nosuch0"'))
    result = classroom.pi.run(sys.executable, "-m", "appliance", "--config", str(bad), "network",
                              "check", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: {bad}: network.interface: interface 'nosuch0' does not exist on this machine"]
    terms = bad.read_text().replace('interface = "nosuch0"', 'interface = "wlan"').replace(
        "[network]\n", f'[network]\nterms_file = "{tmp_path}/missing.txt"\n')
    bad.write_text(terms)
    result = classroom.pi.run(sys.executable, "-m", "appliance", "--config", str(bad), "network",
                              "apply", check=False)
    assert result.returncode == 2 and "network.terms_file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert classroom.pi.run("nft", "list", "table", "inet", "classroom").stdout.split("elements")[0] \
        == before.split("elements")[0]
