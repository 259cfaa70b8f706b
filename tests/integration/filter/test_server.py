"""The filter serving real sockets on loopback, in front of an unbound serving a local zone, with
the UT1 lists and the synthetic adult list compiled, and an injected clock."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from appliance import config
from appliance.cli import cli
from appliance.filter import service, wire
from appliance.filter.identity import StaticIdentity
from appliance.harness.process import wait_for
from tests.integration.filter.conftest import first, free_port, query, write_filter_config

pytestmark = pytest.mark.integration

TZ = ZoneInfo("Europe/Paris")
LESSON = datetime(2026, 9, 8, 10, 0, tzinfo=TZ).timestamp()  # a Tuesday, 10:00
EVENING = datetime(2026, 9, 8, 19, 0, tzinfo=TZ).timestamp()


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Running:
    def __init__(self, path, clock, identity=None):
        self.path, self.clock, self.identity = path, clock, identity
        self.cfg = config.load(path)
        self.port = self.cfg.filter.port

    def start(self):
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=service.serve, args=(self.cfg, self.stop_event), kwargs={
            "clock": self.clock, "identity": self.identity, "ready": lambda s: self.ready.set()},
            daemon=True)
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def stop(self):
        self.stop_event.set()
        self.thread.join(10)

    def ask(self, name, qtype=wire.A, host="127.0.0.1", **kw):
        return query(host, self.port, name, qtype, **kw)


@pytest.fixture
def running(tmp_path, zone):
    started = []

    def make(clock=None, **extra):
        path = write_filter_config(tmp_path, f"127.0.0.1:{zone.port}", port=free_port(),
                                   listen=["127.0.0.1", "::1"], **extra)
        cfg = config.load(path)
        service.update_lists(cfg)
        r = Running(path, clock or Clock(LESSON),
                    StaticIdentity({"::1": "00:00:00:00:00:01"})).start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


def test_blocks_allows_and_dig_shows_the_ede(running):
    f = running()
    ok = f.ask("WwW.ExAmPlE.TeSt")
    assert ok.rcode == 0 and ok.questions[0].name == "WwW.ExAmPlE.TeSt"
    assert ok.answers[0].rdata == bytes([192, 0, 2, 10]) and ok.answers[0].ttl <= 60
    assert f.ask("www.example.test", wire.AAAA, host="::1").answers[0].rtype == wire.AAAA
    assert f.ask("www.example.test", tcp=True).answers[0].rdata == bytes([192, 0, 2, 10])
    blocked = f.ask("porn.test")
    assert blocked.rcode == wire.NXDOMAIN and blocked.edns.ede() == (15, "category adult")
    assert f.ask("www." + first("gambling")).edns.ede() == (15, "category gambling")
    dig = subprocess.run(["dig", "@127.0.0.1", "-p", str(f.port), "porn.test", "+tries=1", "+time=2"],
                         capture_output=True, text=True, timeout=10).stdout
    assert "NXDOMAIN" in dig and "EDE: 15 (Blocked): (category adult)" in dig


def test_cname_chain_and_safesearch_and_canaries(running):
    f = running()
    chained = f.ask("innocent.test")
    assert chained.rcode == wire.NXDOMAIN and chained.edns.ede()[1] == "category adult"
    safe = f.ask("www.google.com")
    assert [r.rtype for r in safe.answers] == [wire.CNAME, wire.A]
    assert safe.answers[0].target == "forcesafesearch.google.com"
    assert safe.answers[1].rdata == bytes([216, 239, 38, 120])
    yt = f.ask("www.youtube.com")
    assert yt.answers[0].target == "restrictmoderate.youtube.com" and len(yt.answers) == 2
    assert f.ask("use-application-dns.net").rcode == wire.NXDOMAIN
    assert f.ask("mask.icloud.com").rcode == wire.NXDOMAIN
    ddr = f.ask("_dns.resolver.arpa", wire.SVCB)
    assert ddr.rcode == 0 and not ddr.answers


def test_schedule_follows_the_injected_clock(running):
    clock = Clock(LESSON)
    f = running(clock, schedules=[{"group": "students", "categories": ["social_networks"],
                                   "start": "08:00", "end": "12:00"}])
    social = first("social_networks")
    assert f.ask(social).rcode == wire.NXDOMAIN
    clock.t = EVENING
    wait_for(lambda: f.ask(social).rcode == 0, timeout=5, what="the schedule to end")


def test_exam_override_take_effect_and_survive_a_restart(running, runner, tmp_path):
    f = running(Clock(time.time()), exam_allow=["moodle.school.test"])
    args = ["--config", str(f.path), "filter"]
    assert f.ask("www.example.test").rcode == 0
    until = datetime.fromtimestamp(time.time() + 3600, TZ).strftime("%Y-%m-%dT%H:%M")
    res = runner.invoke(cli, [*args, "exam", "start", "--group", "students", "--until", until, "--json"])
    assert res.exit_code == 0, res.output
    wait_for(lambda: f.ask("www.example.test").rcode == wire.NXDOMAIN, timeout=5, what="exam mode")
    assert f.ask("www.example.test").edns.ede() == (17, "exam mode")
    assert f.ask("moodle.school.test").rcode == 0
    # A restart of the filter keeps the exam.
    f.stop()
    again = running(Clock(time.time()), exam_allow=["moodle.school.test"])
    assert again.ask("www.example.test").rcode == wire.NXDOMAIN
    res = runner.invoke(cli, ["--config", str(again.path), "filter", "exam", "stop", "--group", "students"])
    assert res.exit_code == 0, res.output
    wait_for(lambda: again.ask("www.example.test").rcode == 0, timeout=5, what="exam end")
    gambling = "www." + first("gambling")
    assert again.ask(gambling).rcode == wire.NXDOMAIN
    res = runner.invoke(cli, ["--config", str(again.path), "filter", "override", "add",
                              first("gambling"), "--group", "students", "--for", "30m"])
    assert res.exit_code == 0, res.output
    wait_for(lambda: again.ask(gambling).rcode == 0, timeout=5, what="the override")


def test_explain_and_lists_commands(running, runner):
    f = running()
    res = runner.invoke(cli, ["--config", str(f.path), "filter", "explain", "www.porn.test",
                              "--group", "students", "--json"])
    assert res.exit_code == 0, res.output
    assert '"action": "block"' in res.output and "adult" in res.output
    res = runner.invoke(cli, ["--config", str(f.path), "filter", "explain", "www.porn.test",
                              "--device", "00:00:00:00:00:01"])
    assert res.exit_code == 0 and "default group students" in res.output
    res = runner.invoke(cli, ["--config", str(f.path), "filter", "lists", "show"])
    assert res.exit_code == 0 and "gambling" in res.output and "1 bad" in res.output


def test_truncation_tcp_fallback_and_malformed_packets(running):
    f = running()
    small = f.ask("big.test", wire.TXT, edns=False)
    assert small.flags & wire.TC and not small.answers
    full = f.ask("big.test", wire.TXT, tcp=True, edns=False)
    assert len(full.answers) == 12
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (b"", b"\x00", b"\xff" * 12, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c"):
            s.sendto(junk, ("127.0.0.1", f.port))
    assert f.ask("www.example.test").rcode == 0


def test_unreachable_upstream_is_servfail_quickly(tmp_path):
    path = write_filter_config(tmp_path, f"127.0.0.1:{free_port()}", port=free_port(),
                               listen=["127.0.0.1"])
    service.update_lists(config.load(path))
    f = Running(path, Clock(time.time())).start()
    try:
        started = time.monotonic()
        out = f.ask("www.example.test")
        assert out.rcode == wire.SERVFAIL and time.monotonic() - started < 1.2
        assert f.ask("porn.test").rcode == wire.NXDOMAIN  # blocking needs no upstream
    finally:
        f.stop()


def test_a_flood_from_one_client_does_not_starve_another(running):
    f = running()
    data = wire.build(wire.Message(1, wire.RD, (wire.Question("porn.test", wire.A),)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        for _ in range(3000):
            with contextlib.suppress(BlockingIOError):
                s.sendto(data, ("127.0.0.1", f.port))
        answered = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                s.recv(512)
                answered += 1
            except BlockingIOError:
                time.sleep(0.01)
    assert answered <= 700  # burst 400 + 200/s
    assert f.ask("www.example.test", host="::1").rcode == 0


def test_unbound_configs_check_and_the_baseline_follows_an_exam(tmp_path, zone, runner):
    from appliance.filter.state import Store
    from appliance.store import open_db
    from tests.integration.filter.conftest import Unbound

    port = free_port()
    path = write_filter_config(tmp_path, f"127.0.0.1:{zone.port}", port=free_port(),
                               listen=["127.0.0.1"], baseline_port=port,
                               exam_allow=["moodle.school.test"])
    cfg = config.load(path)
    upstream = cfg.appliance.state_dir / "unbound" / "unbound.conf"
    res = runner.invoke(cli, ["--config", str(path), "filter", "unbound-config", "--output", str(upstream)])
    assert res.exit_code == 0, res.output
    text = upstream.read_text()
    assert 'module-config: "validator iterator"' in text
    assert 'trust-anchor-file: "/usr/share/dns/root.key"' in text
    assert subprocess.run(["unbound-checkconf", str(upstream)], capture_output=True).returncode == 0
    # The baseline, as its unit renders it, but forwarding to the test zone.

    def render():
        return service.unbound_config(cfg, baseline=True, forward=(f"127.0.0.1@{zone.port}",),
                                      extra=('    local-zone: "test." nodefault',))

    text = render()
    base = service.baseline_path(cfg)
    baseline = Unbound(base.parent, "127.0.0.1", port, [], text=text)
    baseline.conf = base
    base.write_text(text)
    baseline.start()
    try:
        assert query("127.0.0.1", port, "www.example.test").rcode == 0
        assert query("127.0.0.1", port, "porn.test").rcode == wire.NXDOMAIN
        follower = service.BaselineFollower(cfg, Store(open_db(cfg.database_path)), render)
        follower()  # the state at start: nothing to do
        service.start_exam(cfg, "students", datetime.fromtimestamp(time.time() + 3600, TZ)
                           .strftime("%Y-%m-%dT%H:%M"))
        follower()
        assert 'local-zone: "." always_nxdomain' in base.read_text()
        wait_for(lambda: query("127.0.0.1", port, "www.example.test").rcode == wire.NXDOMAIN,
                 timeout=10, what="the baseline in exam mode")
        assert query("127.0.0.1", port, "moodle.school.test").rcode == 0
    finally:
        baseline.stop()


def test_several_workers_share_the_port_and_one_dying_stops_all(tmp_path, zone, start):
    port = free_port()
    path = write_filter_config(tmp_path, f"127.0.0.1:{zone.port}", port=port,
                               listen=["127.0.0.1"], workers=2)
    service.update_lists(config.load(path))
    proc = start(path, "filter", "serve")
    wait_for(lambda: _answers(port), timeout=20, what="the workers")
    children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.proc.pid)],
                                               capture_output=True, text=True).stdout.split()]
    assert len(children) == 2
    # Many clients (source ports): every one answered, blocked names blocked.
    for _ in range(40):
        assert query("127.0.0.1", port, "www.example.test").rcode == 0
        assert query("127.0.0.1", port, "porn.test").rcode == wire.NXDOMAIN
    os.kill(children[0], signal.SIGKILL)
    assert proc.proc.wait(10) == 1  # systemd restarts the whole filter
    wait_for(lambda: not any(os.path.exists(f"/proc/{c}") for c in children[1:]), timeout=10,
         what="the other worker to stop")


def _answers(port):
    try:
        return query("127.0.0.1", port, "www.example.test", timeout=0.3).rcode == 0
    except (OSError, wire.WireError):
        return False


def test_doh_names_are_blocked_and_their_addresses_listed_for_the_network(running):
    f = running(groups=[{"name": "students", "categories": ["adult", "doh"]}])
    doh = first("doh")
    out = f.ask(doh)
    assert out.rcode == wire.NXDOMAIN and out.edns.ede() == (15, "category doh")
    listed = service.doh_path(f.cfg)
    wait_for(lambda: listed.exists() and listed.read_text().split() == ["192.0.2.53", "2001:db8::53"],
             timeout=10, what="the DoH addresses file")


def test_sighup_takes_a_new_policy_and_keeps_the_running_one_on_a_bad_file(tmp_path, zone, start):
    port = free_port()
    path = write_filter_config(tmp_path, f"127.0.0.1:{zone.port}", port=port, listen=["127.0.0.1"])
    service.update_lists(config.load(path))
    proc = start(path, "filter", "serve")
    wait_for(lambda: _answers(port), timeout=20, what="the filter")
    assert query("127.0.0.1", port, "www.example.test").rcode == 0
    good = path.read_text()
    # A schedule naming a group that does not exist: refused, the running policy stays.
    path.write_text(good + '\n[[filter.schedules]]\ngroup = "nobody"\ncategories = ["games"]\n')
    proc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "filter.schedules[0].group: unknown group" in proc.output(), timeout=10,
             what="the error naming the key")
    assert "kept the running policy" in proc.output()
    assert query("127.0.0.1", port, "www.example.test").rcode == 0
    # A valid change: in force at once.
    path.write_text(good + '\n[[filter.groups]]\nname = "students"\nblock = ["example.test"]\n')
    proc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: query("127.0.0.1", port, "www.example.test").rcode == wire.NXDOMAIN,
             timeout=10, what="the new policy")
