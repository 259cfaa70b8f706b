"""The README's main job: the lab brings up a whole fleet on loopback and stops it cleanly."""

import json
import random
import re
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from appliance.fleet.broker import port_open
from appliance.harness.process import REPO, wait_for

pytestmark = pytest.mark.integration


def free_base_port():
    # Below the kernel's ephemeral range (ip_local_port_range, 32768-60999 by default): a port
    # in it may be, a moment later, the local end of some client's connection on 127.0.0.1,
    # which no probe sees and which makes the lab's broker fail with "Address already in use".
    low, _high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(50):
        base = random.randrange(20000, min(low, 32768) - 100, 100)
        if not any(port_open("127.0.0.1", p) for p in (base, base + 1, base + 11, base + 12, base + 90)):
            return base
    raise RuntimeError("no free port range")


def page(port, path):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}").read().decode()


def sign_in(base, password):
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    page = opener.open(base + "/login").read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    opener.open(base + "/login", urllib.parse.urlencode(
        {"username": "admin", "password": password, "csrf_token": token}).encode())
    return opener


def test_lab_runs_a_fleet_and_stops_cleanly(tmp_path):
    base_port = free_base_port()
    lab = subprocess.Popen(
        [sys.executable, "-m", "appliance", "lab", "--dir", str(tmp_path / "lab"),
         "--base-port", str(base_port), "--interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )
    try:
        lines = []
        for line in lab.stdout:
            lines.append(line)
            if line.startswith("Try:"):
                break
        banner = "".join(lines)
        console = f"http://127.0.0.1:{base_port + 1}"
        assert console + "/" in banner
        assert f"http://127.0.0.1:{base_port + 11}/" in banner
        assert f"http://127.0.0.1:{base_port + 12}/" in banner
        password = re.search(r"password: (\S+)", banner).group(1)
        assert (tmp_path / "lab" / "secrets" / "console-admin-password").stat().st_mode & 0o077 == 0

        # Both portals show their landing page, and the school's (replayed) Moodle mirrored.
        assert f"http://127.0.0.1:{base_port + 90}/" in banner
        for n in (1, 2):
            port = base_port + 10 + n
            assert f"Lab school {n}" in page(port, "/")
            assert f"http://127.0.0.1:{port}/moodle/" in banner
            courses = page(port, "/moodle/")
            assert "Biology 7" in courses and "История 5" in courses
            found = page(port, "/search?q=" + urllib.parse.quote("хлоропласт"))
            assert 'href="/moodle/course/2/m/7/chapter/2"' in found  # one search box for both

        opener = sign_in(console, password)

        def fleet():
            return json.loads(opener.open(console + "/api/fleet").read())

        wait_for(lambda: fleet()["counts"]["online"] == 2, timeout=20, what="2 appliances online")
        wait_for(lambda: all(d["health"]["mem_pct"] is not None for d in fleet()["devices"]),
                 timeout=10, what="live health from both")

        # Stop one appliance's agent: offline within its keepalive window.
        pid = int(re.search(r"lab-school-2; agent pid (\d+)", banner).group(1))
        psutil.Process(pid).send_signal(signal.SIGKILL)
        wait_for(lambda: fleet()["counts"]["online"] == 1, timeout=10, what="one offline")
        gone = next(d for d in fleet()["devices"] if d["id"] == "lab-school-2")
        assert gone["state"] == "offline"

        # The lab's broker speaks only mutual TLS, as a district's does: plain MQTT gets nowhere.
        plain = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="outsider", protocol=mqtt.MQTTv5)
        refused = False
        try:
            plain.connect("127.0.0.1", base_port, keepalive=5)
            for _ in range(20):
                if plain.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                    refused = True
                    break
        except OSError:
            refused = True
        assert refused and not plain.is_connected()

        children = psutil.Process(lab.pid).children(recursive=True)
        assert len(children) >= 6  # broker, ingest, console, portals, agents (+ gunicorn workers)
    finally:
        lab.send_signal(signal.SIGINT)
        out, _ = lab.communicate(timeout=60)
    assert lab.returncode == 0, out
    assert "lab: stopped" in out
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    assert not port_open("127.0.0.1", base_port)
    assert not port_open("127.0.0.1", base_port + 90)  # the replayed Moodle stopped with the lab


def test_lab_with_a_classroom_puts_a_phone_behind_the_portal_and_cleans_up(tmp_path):
    from appliance.harness.netns import namespaces
    from appliance.network.probes import USER_AGENTS

    base_port = free_base_port()
    lab = subprocess.Popen(
        [sys.executable, "-m", "appliance", "lab", "--dir", str(tmp_path / "lab"), "--appliances",
         "1", "--base-port", str(base_port), "--interval", "1", "--classroom"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )
    phone = "celab-phone1"
    probe = "http://captive.apple.com/hotspot-detect.html"

    def curl(*args):
        out = subprocess.run(["ip", "netns", "exec", phone, "curl", "-s", "-o", "/dev/null", "-w",
                              "%{http_code} %{redirect_url}", "--max-time", "5", *args],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip()

    try:
        lines = []
        for line in lab.stdout:
            lines.append(line)
            if "lists every command" in line:
                break
        banner = "".join(lines)
        assert "classroom celab-pi" in banner, banner
        assert f"ip netns exec {phone} curl -si -A" in banner
        assert {"celab-pi", "celab-inet", phone} <= set(namespaces())
        ios = USER_AGENTS["ios"]
        assert curl("-A", ios, probe) == "302 http://classroom.internal/captive/"
        assert curl("-X", "POST", "-H", "Origin: http://classroom.internal",
                    "http://classroom.internal/captive/accept").startswith("302 ")
        assert curl("-A", ios, probe) == "200"
        # The phones resolve through the filter: the banner's dig shows the block and its EDE.
        assert f"ip netns exec {phone} dig www.casino.example" in banner
        dig = subprocess.run(["ip", "netns", "exec", phone, "dig", "www.casino.example",
                              "+tries=1", "+time=3"], capture_output=True, text=True, timeout=20)
        assert "EDE: 15 (Blocked): (category gambling)" in dig.stdout, dig.stdout
        # The agent in the Pi namespace reaches the lab's broker over the management link.
        password = re.search(r"password: (\S+)", banner).group(1)
        console = f"http://127.0.0.1:{base_port + 1}"
        opener = sign_in(console, password)
        wait_for(lambda: json.loads(opener.open(console + "/api/fleet").read())["counts"]["online"]
                 == 1, timeout=30, what="the classroom's agent online")

        # A believable classroom in the inventory: fingerprinted phones, the teacher's laptop,
        # the display and the printer announcing themselves.
        assert "devices   an Android phone 192.0.2." in banner
        config = tmp_path / "lab" / "appliances" / "lab-school-1" / "appliance.toml"
        expected = {
            "02:ce:00:00:00:01": ("phone", "android", None),
            "02:ce:00:00:00:02": ("phone", "ios", None),
            "02:ce:00:00:00:03": ("chromebook", "chromeos", None),
            "02:ce:00:00:00:21": ("laptop", "macos", None),
            "f0:18:98:00:00:10": ("display", "tvos", "AppleTV6,2"),
            "3c:d9:2b:00:00:12": ("printer", "printer", "HP LaserJet Pro M404dn"),
        }

        def inventory():
            out = subprocess.run([sys.executable, "-m", "appliance", "--config", str(config),
                                  "devices", "list", "--json"], capture_output=True, text=True,
                                 timeout=30, cwd=REPO)
            found = {d["mac"]: d for d in json.loads(out.stdout)["devices"]} if out.stdout else {}
            return {m: (d["kind"], d["os"], d["model"]) for m, d in found.items()}, found

        wait_for(lambda: all(inventory()[0].get(m) == v for m, v in expected.items()),
                 timeout=40, what=f"the classroom's devices identified ({inventory()[0]})")
        _, found = inventory()
        assert "apple" in found["f0:18:98:00:00:10"]["vendor"].lower()
        assert "hewlett" in found["3c:d9:2b:00:00:12"]["vendor"].lower()
        assert found["02:ce:00:00:00:01"]["randomized"]
    finally:
        lab.send_signal(signal.SIGINT)
        out, _ = lab.communicate(timeout=90)
    assert lab.returncode == 0, out
    assert not [n for n in namespaces() if n.startswith("celab-")]
