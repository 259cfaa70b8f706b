"""The classroom network for real, on the shared virtual classroom (conftest.py): phones lease
from the rendered dnsmasq; every probe, with its OS's User-Agent, is redirected before
acceptance and answered online after, in `terms` and `open` mode, with the uplink up and cut;
HTTPS is reset; DNS to anyone is the Pi's; the walled garden is all a phone not accepted
reaches; sessions end at once when revoked or expired and come back after restarts.

Phones: phone1 accepts through the portal (and is revoked later), phone2 is never accepted
until the expiry test, phone3 is the one whose session must survive restarts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.harness import fakeinternet as fi
from appliance.harness.classroom import ClassroomError
from appliance.harness.process import wait_for
from appliance.network import probes
from appliance.network.lab import PORTAL_NAME

from .conftest import Room, dns_query, raw_http

pytestmark = pytest.mark.integration

PORTAL = f"http://{PORTAL_NAME}/captive/"
HTTP_PROBES = [p for p in probes.PROBES if not p.https]
BROWSER = Path(__file__).with_name("captive_browser.py")
# Where a person looks at the pictures after a run.
SHOTS = Path("/tmp/browser-shots")
# Where the captive responder sends an accepted phone's login trigger (Windows' /redirect).
FRONT_PAGE = f"http://{PORTAL_NAME}/"
CAPTURED = "198.51.100.1"


def ua(probe: probes.Probe) -> str:
    return probes.USER_AGENTS.get(probe.platform, probes.USER_AGENTS["ubuntu"])


def assert_redirected(results, what):
    for probe, got in zip(HTTP_PROBES, results, strict=True):
        where = f"{what}: {probe.url} ({probe.platform})"
        assert got["status"] == 302, where
        assert got["headers"]["location"] == PORTAL, where
        assert got["headers"]["cache-control"] == "no-store", where
        assert got["headers"]["connection"] == "close", where
        assert got["closed"], f"{where}: the connection stayed open"


def assert_online(results, what, *, login_location=None):
    for probe, got in zip(HTTP_PROBES, results, strict=True):
        where = f"{what}: {probe.url} ({probe.platform})"
        if probe.login_trigger:
            assert got["status"] == 302, where
            if login_location:
                assert got["headers"]["location"] == login_location, where
            continue
        assert got["status"] == probe.online.status, where
        assert got["body"].encode("latin-1") == probe.online.body, where
        for name, value in probe.online.headers:
            assert got["headers"][name.lower()] == value, where


def probe_all(phone, *, keep_alive: bool):
    return raw_http(phone, [(p.host, p.path, ua(p), keep_alive) for p in HTTP_PROBES])


def reaches(phone, url: str, **kwargs) -> bool:
    got = phone.curl(url, timeout=3, **kwargs)
    return got.status == 200 and got.body.startswith(b"fake internet")


def answers(phone, room) -> list[str]:
    """What the Pi answers a phone for a probe host now (the captured address when offline)."""
    return dns_query(phone, room.gateway4, "captive.apple.com", tolerant=True)


def accept_via_portal(phone) -> None:
    page = phone.curl(PORTAL)
    assert page.status == 200 and b'action="/captive/accept"' in page.body
    done = phone.curl(PORTAL + "accept", method="POST", data=b"",
                      headers=(f"Origin: http://{PORTAL_NAME}",))
    assert (done.status, done.header("location")) == (302, "/captive/done"), done
    assert phone.curl(f"http://{PORTAL_NAME}/captive/done").status == 200


def test_phones_lease_from_the_rendered_dnsmasq(classroom: Room):
    leases = (classroom.network.render_dir / "dnsmasq.leases").read_text()
    for phone, lease in zip(classroom.phones, classroom.leases, strict=True):
        assert lease.router == classroom.room.gateway4 and lease.dns == (classroom.room.gateway4,)
        assert phone.mac in leases and lease.address in leases
        assert phone.privacy_addresses()  # SLAAC from the Pi's router advertisements


def test_every_probe_is_redirected_before_acceptance_and_the_connection_closed(classroom: Room):
    for phone in classroom.phones[:2]:
        assert_redirected(probe_all(phone, keep_alive=True), phone.short)


def test_https_is_reset_within_a_second(classroom: Room):
    got = classroom.phones[1].curl("https://www.google.com/generate_204")
    assert got.exit_code == 7 and got.elapsed < 1.0, got


def test_dns_to_any_server_is_answered_by_the_pi(classroom: Room):
    phone, room = classroom.phones[1], classroom.room
    for tcp in (False, True):
        # Only the Pi knows the portal's name; the fake DNS would answer its sentinel.
        assert dns_query(phone, fi.DNS4, PORTAL_NAME, tcp=tcp) == [room.gateway4]
        assert dns_query(phone, fi.DNS6, PORTAL_NAME, tcp=tcp, aaaa=True) == [room.gateway6]
        assert dns_query(phone, "203.0.113.200", PORTAL_NAME, tcp=tcp) == [room.gateway4]
        # Anything else is forwarded by the Pi and gets the sentinel.
        assert dns_query(phone, fi.DNS4, "anything.example", tcp=tcp) == [fi.SENTINEL4]
    assert not any(q.name == PORTAL_NAME for q in room.dns_queries())
    # DNS over TLS would bypass the Pi: refused at once.
    result = phone.run(sys.executable, "-c", "import socket; socket.create_connection("
                       f"({fi.DNS4!r}, 853), timeout=3)", check=False)
    assert "ConnectionRefused" in result.stderr


def test_a_phone_not_accepted_reaches_only_the_walled_garden(classroom: Room):
    phone = classroom.phones[1]
    assert reaches(phone, f"http://{fi.GARDEN_HOST}/", family=4)
    assert reaches(phone, f"http://{fi.GARDEN_HOST}/", family=6)
    assert phone.curl(f"http://{fi.WEB4}/").status == 302
    assert phone.curl(f"http://[{fi.WEB6}]/").status == 302
    assert phone.curl(f"https://{fi.WEB4}/", insecure=True).exit_code == 7
    assert not phone.ping(fi.WEB4, 1) and not phone.ping(fi.WEB6, 1)
    assert not phone.ping(fi.SENTINEL4, 1)


KEEPALIVE = r"""
import socket, sys, json
req = b"GET /hotspot-detect.html HTTP/1.1\r\nHost: captive.apple.com\r\nConnection: keep-alive\r\n\r\n"
addr = socket.getaddrinfo("captive.apple.com", 80, socket.AF_INET)[0][4]
used = socket.create_connection(addr, timeout=3); used.sendall(req)
first = used.recv(65536)
idle = socket.create_connection(addr, timeout=3)     # opened before acceptance, no request yet
print(json.dumps({"first": first.decode("latin-1")}), flush=True)
sys.stdin.readline()                                 # the phone is accepted now
later = {}
for name, s in (("used", used), ("idle", idle)):
    got = b""
    try:
        s.sendall(req)
        while chunk := s.recv(65536):
            got += chunk
    except OSError as exc:
        got += f"<{type(exc).__name__}>".encode()
    later[name] = got.decode("latin-1")
print(json.dumps(later), flush=True)
"""


def test_acceptance_through_the_portal_and_no_redirect_on_an_old_connection(classroom: Room):
    phone = classroom.phones[0]
    held = subprocess.Popen([*phone.ns.exec_prefix(), sys.executable, "-c", KEEPALIVE],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout is not None and held.stdin is not None
        assert " 302 " in json.loads(held.stdout.readline())["first"]
        accept_via_portal(phone)
        held.stdin.write("go\n")
        held.stdin.flush()
        later = json.loads(held.stdout.readline())
    finally:
        held.kill()
        held.wait()
    for name, got in later.items():
        assert " 302 " not in got and "Location" not in got, f"{name} connection: {got[:200]}"
    status = classroom.network.helper_call("session-status", ip=phone.addresses(4)[0])
    assert status["accepted"] and status["mac"] == phone.mac


def test_an_accepted_phone_gets_every_online_answer_and_the_internet(classroom: Room):
    phone = classroom.phones[0]
    assert_online(probe_all(phone, keep_alive=False), "accepted",
                  login_location=fi.LOGIN_TRIGGER_LOCATION)
    android = phone.curl("https://www.google.com/generate_204")
    assert android.status == 204, android
    assert reaches(phone, f"http://{fi.WEB4}/") and reaches(phone, f"http://[{fi.WEB6}]/")
    assert phone.ping(fi.WEB4) and phone.ping(fi.WEB6)
    api = phone.curl(f"http://{PORTAL_NAME}/captive/api")
    assert api.header("content-type") == "application/captive+json"
    assert json.loads(api.body)["captive"] is False
    # The other phones are still captive.
    assert classroom.phones[1].curl(f"http://{fi.WEB4}/").status == 302


def test_phones_reach_neither_each_other_nor_the_pis_ssh(classroom: Room):
    p1, p2 = classroom.phones[:2]
    room = classroom.room
    assert not p1.ping(p2.addresses(4)[0], 1)
    assert not p1.ping(p2.privacy_addresses()[0], 1)
    for address in (room.gateway4, room.gateway6):
        result = p1.run(sys.executable, "-c", "import socket; socket.create_connection("
                        f"({address!r}, 22), timeout=3)", check=False)
        assert "ConnectionRefused" in result.stderr, address  # a reset, not a hang


def test_offline_accepted_phones_get_the_online_answers_from_the_pi(classroom: Room):
    room = classroom.room
    p1, p2 = classroom.phones[:2]
    room.cut_uplink()
    try:
        wait_for(lambda: answers(p1, room) == [CAPTURED], timeout=15,
                 what="the probe hosts answered with the captured address")
        for tcp in (False, True):
            assert dns_query(p1, room.gateway4, "dns.msftncsi.com", tcp=tcp) == \
                [probes.MSFT_NCSI_DNS_ADDRESS]
            assert dns_query(p1, fi.DNS4, "www.msftconnecttest.com", tcp=tcp) == [CAPTURED]
        assert dns_query(p1, room.gateway4, "captive.apple.com", aaaa=True) == []
        assert_online(probe_all(p1, keep_alive=False), "offline, accepted",
                      login_location=FRONT_PAGE)
        assert_redirected(probe_all(p2, keep_alive=True), "offline, not accepted")
    finally:
        room.restore_uplink()
    wait_for(lambda: answers(p1, room) == [fi.WEB4], timeout=15, what="online answers again")


def test_the_helper_refuses_garbage_and_unlisted_callers(classroom: Room):
    net = classroom.network
    code = f"""
import os, socket
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX); s.connect({str(net.socket)!r})
s.sendall(b'{{"verb": "session-list", "args": {{}}}}\\n'); s.shutdown(socket.SHUT_WR)
print(s.recv(4096).decode())
"""
    for _ in range(2):
        out = net.pi.run(sys.executable, "-c", code).stdout
        assert '"ok": false' in out and "may not call session-list" in out
    garbage = net.pi.run(sys.executable, "-c", "import socket; s = socket.socket(socket.AF_UNIX); "
                         f"s.connect({str(net.socket)!r}); s.sendall(b'\\x00garbage\\n'); "
                         "s.shutdown(socket.SHUT_WR); print(s.recv(4096).decode())").stdout
    assert "not a JSON line" in garbage
    log = (net.directory / "helper.log").read_text()
    assert log.count("may not call session-list") == 1  # logged once per caller and reason
    # Without the filter, dnsmasq answers DNS: there is no redirect to switch.
    with pytest.raises(ClassroomError, match="does not answer the classroom's DNS"):
        net.helper_call("dns-fallback", state="on")


def test_bad_input_exits_2_and_leaves_the_network_untouched(classroom: Room, tmp_path):
    net = classroom.network
    before = net.pi.run("nft", "list", "table", "inet", "classroom").stdout.split("elements")[0]
    bad = tmp_path / "bad.toml"
    bad.write_text(net.config.read_text().replace('interface = "wlan0"', 'interface = "nosuch0"'))
    result = net.pi.run(sys.executable, "-m", "appliance", "--config", str(bad), "network",
                        "check", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: {bad}: network.interface: interface 'nosuch0' does not exist on this machine"]
    bad.write_text(net.config.read_text().replace(
        "[network]\n", f'[network]\nterms_file = "{tmp_path}/missing.txt"\n'))
    result = net.pi.run(sys.executable, "-m", "appliance", "--config", str(bad), "network",
                        "apply", check=False)
    assert result.returncode == 2 and "network.terms_file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    after = net.pi.run("nft", "list", "table", "inet", "classroom").stdout.split("elements")[0]
    assert after == before


def test_a_revoked_session_loses_access_at_once(classroom: Room):
    phone, net = classroom.phones[0], classroom.network
    assert reaches(phone, f"http://{fi.WEB4}/")
    result = net.appliance("network", "sessions", "revoke", phone.mac, "--json")
    assert json.loads(result.stdout) == {"mac": phone.mac, "revoked": True}
    assert phone.curl(f"http://{fi.WEB4}/").status == 302
    assert not phone.ping(fi.WEB6, 1)


def test_a_phone_sized_chromium_signs_in_through_the_terms_page(classroom: Room, tmp_path):
    phone = classroom.phones[0]  # captive again since its session was revoked
    shots = SHOTS / "captive"
    shots.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([*phone.ns.exec_prefix(), sys.executable, str(BROWSER), str(shots)],
                            capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["terms_url"] == PORTAL and report["terms_title"] == "Welcome to the classroom network"
    box = report["button"]
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["height"] >= 40  # a thumb's
    assert report["done_url"] == f"http://{PORTAL_NAME}/captive/done", report["done_html"][:800]
    assert "You are online" in report["done_html"]
    assert "<body>Success</body>" in report["probe_after"]  # the sheet would now say "Done"
    assert (shots / "terms.png").stat().st_size > 5000 and (shots / "done.png").exists()


def test_sessions_come_back_after_the_portal_and_the_helper_restart(classroom: Room):
    phone, net = classroom.phones[2], classroom.network
    accept_via_portal(phone)
    assert reaches(phone, f"http://{fi.WEB4}/")
    net.stop("portal", "helper")
    for name in ("accepted_v4", "accepted_v6", "accepted_mac"):  # as after a reboot
        net.pi.run("nft", "flush", "set", "inet", "classroom", name)
    assert phone.curl(f"http://{fi.WEB4}/").status == 302
    net.start("helper", "portal")
    wait_for(lambda: reaches(phone, f"http://{fi.WEB4}/"), timeout=10, what="session restored")
    wait_for(lambda: reaches(phone, f"http://[{fi.WEB6}]/"), timeout=10, what="IPv6 restored")
    listed = json.loads(net.appliance("network", "sessions", "list", "--json").stdout)
    # phone1 signed in again in the browser test.
    assert sorted(s["mac"] for s in listed) == [classroom.phones[0].mac, phone.mac]
    assert all(3000 < s["seconds_remaining"] <= 3600 for s in listed)


def test_an_expired_session_loses_access_at_once(classroom: Room):
    phone, net = classroom.phones[1], classroom.network
    net.reconfigure(session_hours=0.002)  # 7 s
    try:
        net.helper_call("session-accept", ip=phone.addresses(4)[0])
        started = time.monotonic()
        assert reaches(phone, f"http://{fi.WEB4}/")
        wait_for(lambda: phone.curl(f"http://{fi.WEB4}/", timeout=2).status == 302, timeout=15,
                 what="the session to end")
        assert 6 <= time.monotonic() - started <= 10
        assert not phone.ping(fi.WEB6, 1)
    finally:
        net.reconfigure(session_hours=1.0)


def test_open_mode_answers_every_probe_online_for_everyone(classroom: Room):
    net, room = classroom.network, classroom.room
    phone = classroom.phones[1]  # never accepted (its session expired)
    net.reconfigure(mode="open")
    try:
        assert_online(probe_all(phone, keep_alive=False), "open",
                      login_location=fi.LOGIN_TRIGGER_LOCATION)
        assert reaches(phone, f"http://[{fi.WEB6}]/")
        assert b"open" in phone.curl(PORTAL).body
        room.cut_uplink()
        try:
            wait_for(lambda: answers(phone, room) == [CAPTURED], timeout=15,
                     what="offline answers")
            assert_online(probe_all(phone, keep_alive=False), "open, offline",
                          login_location=FRONT_PAGE)
        finally:
            room.restore_uplink()
        wait_for(lambda: answers(phone, room) == [fi.WEB4], timeout=15, what="online again")
    finally:
        net.reconfigure(mode="terms")
