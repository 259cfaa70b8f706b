"""The filter wired into the classroom network, as `scripts/lab --classroom` runs it: the
network's `apply` with `[filter] enabled` (dnsmasq with `port=0`: DHCP and RAs only), the helper,
the portal, unbound on loopback forwarding to the fake internet, the baseline unbound, and
`appliance filter serve` on port 53 of the Pi. Phones with real leases ask port 53 of the Pi or
of any server (the nft redirect) over IPv4 and IPv6: blocked names get the block page's address
with the EDE, allowed names the fake internet's answer, the portal's name the local answer; a
listed MAC is a teacher on every address; `dns-fallback on` hands port 53 to the baseline, and
the helper's health check does it by itself when the filter is killed; DoH addresses the filter
resolved are rejected on 443; walled-garden names resolved by the filter open the garden."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.filter import wire
from appliance.filter.lab import PROCESSES, READY_NAME, PiFilter, resolves
from appliance.harness import fakeinternet as fi
from appliance.harness.classroom import Classroom, Phone
from appliance.harness.process import wait_for
from appliance.lab.parts import appliance_command
from appliance.network import render
from appliance.network.lab import PORTAL_NAME, PiNetwork

pytestmark = pytest.mark.integration

# One query from inside a phone; prints {"rcode", "addresses", "ede", "aa"} or {"timeout": true}.
ASK = r"""
import ipaddress, json, socket, sys
from appliance.filter import wire
server, name, qtype = sys.argv[1], sys.argv[2], int(sys.argv[3])
src = sys.argv[4] if len(sys.argv) > 4 else None
fam = socket.AF_INET6 if ":" in server else socket.AF_INET
with socket.socket(fam, socket.SOCK_DGRAM) as s:
    if src:
        s.bind((src, 0))
    s.settimeout(2)
    s.sendto(wire.build(wire.Message(0x77, wire.RD, (wire.Question(name, qtype),),
                                     edns=wire.Edns())), (server, 53))
    try:
        m = wire.parse(s.recv(4096))
    except TimeoutError:
        print(json.dumps({"timeout": True})); sys.exit(0)
print(json.dumps({"rcode": m.rcode, "aa": bool(m.flags & wire.AA),
                  "ede": list(m.edns.ede()) if m.edns and m.edns.ede() else None,
                  "addresses": [str(ipaddress.ip_address(r.rdata)) for r in m.answers
                                if r.rtype in (1, 28)]}))
"""

# Connect to host:port over TCP from inside a phone; prints "open", "refused" or "timeout".
CONNECT = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close(); print("open")
except ConnectionRefusedError:
    print("refused")
except OSError:
    print("timeout")
"""


# Ask for a router advertisement from inside a phone; prints the RDNSS addresses it carries.
RDNSS = r"""
import ipaddress, json, socket, struct, sys, time
dev = sys.argv[1]
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.settimeout(1)
found, deadline = [], time.monotonic() + 10
while not found and time.monotonic() < deadline:
    s.sendto(bytes([133, 0, 0, 0, 0, 0, 0, 0]), ("ff02::2", 0, 0, socket.if_nametoindex(dev)))
    try:
        while not found:
            data = s.recv(4096)
            if data[0] != 134:
                continue
            i = 16
            while i + 2 <= len(data) and data[i + 1]:
                kind, size = data[i], data[i + 1] * 8
                if kind == 25:
                    found += [str(ipaddress.ip_address(data[j:j + 16])) for j in range(i + 8, i + size, 16)]
                i += size
    except TimeoutError:
        pass
print(json.dumps(found))
"""


@dataclass
class Room:
    room: Classroom
    network: PiNetwork
    pi_filter: PiFilter
    commands: dict[str, list[str]]
    workdir: Path
    procs: dict[str, object]

    @property
    def student(self) -> Phone:
        return self.room.phones[0]

    @property
    def teacher(self) -> Phone:
        return self.room.phones[1]

    def start_filter(self) -> None:
        self.procs["filter"] = self.room.start_process(
            self.room.pi, *self.commands["filter"], log=self.workdir / "filter.log")
        wait_for(lambda: resolves(self.room.pi, self.room.gateway4, READY_NAME, port=53),
                 timeout=20, what="the filter to resolve through unbound")


def ask(phone: Phone, server: str, name: str, qtype: int = wire.A,
        source: str | None = None) -> dict[str, object]:
    args = [server, name, str(qtype), *([source] if source else [])]
    out = phone.run(sys.executable, "-c", ASK, *args, check=False, timeout=20)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def connect(phone: Phone, host: str, port: int) -> str:
    return phone.run(sys.executable, "-c", CONNECT, host, str(port), check=False,
                     timeout=20).stdout.strip()


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    workdir = tmp_path_factory.mktemp("filter-classroom")
    run_dir = Path(tempfile.mkdtemp(prefix="filter-helper-"))
    run_dir.chmod(0o755)
    with Classroom(workdir=workdir / "room", management=False) as classroom:
        pi_dir = workdir / "pi"
        pi_filter = PiFilter(pi_dir / "state", pi_dir / "lists",
                             block_page=(classroom.gateway4, classroom.gateway6))
        section = pi_filter.section()
        section["groups"] = [*section["groups"],  # type: ignore[misc]
                             {"name": "teachers", "macs": [classroom.phones[1].mac]}]
        network = PiNetwork(classroom, pi_dir, run_dir=run_dir, extra={"filter": section})
        network.write_config()
        try:
            network.apply()
            pi_filter.prepare(network.config)
            commands = pi_filter.commands(network.config, appliance_command())
            procs: dict[str, object] = {
                name: classroom.start_process(classroom.pi, *commands[name],
                                              log=workdir / f"{name}.log")
                for name in PROCESSES if name != "filter"}
            ctx = Room(classroom, network, pi_filter, commands, workdir, procs)
            ctx.start_filter()
            network.start()
            classroom.dhcp_all(timeout=15)
            for phone in classroom.phones:
                phone.wait_ipv6()
            yield ctx
        finally:
            network.close()
            shutil.rmtree(run_dir, ignore_errors=True)


def test_dnsmasq_leaves_dns_to_the_filter_and_still_names_the_pi(room: Room):
    conf = (room.network.render_dir / render.DNSMASQ).read_text()
    assert "port=0\n" in conf and "addn-hosts" not in conf
    lease = room.student.dhcp()
    assert lease.dns == (room.room.gateway4,)  # DHCPv4 option 6
    ra = room.student.run(sys.executable, "-c", RDNSS, room.student.dev, timeout=30)
    assert json.loads(ra.stdout) == [room.room.gateway6], ra.stderr  # the RA's RDNSS
    # Nothing but the filter (python) listens on port 53 in the Pi.
    sockets = room.room.pi.run("ss", "-Hlunp", "sport = :53").stdout
    assert sockets and "dnsmasq" not in sockets and "python" in sockets, sockets


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_a_phone_is_filtered_through_port_53_of_the_pi_and_of_any_server(room: Room, family: str):
    v6 = family == "v6"
    pi = room.room.gateway6 if v6 else room.room.gateway4
    qtype = wire.AAAA if v6 else wire.A
    for server in (pi, fi.DNS6 if v6 else fi.DNS4):  # the Pi, and a server the redirect catches
        blocked = ask(room.student, server, "www.casino.example", qtype)
        assert blocked["rcode"] == wire.NOERROR and blocked["addresses"] == [pi], blocked
        assert blocked["ede"] == [wire.EDE_BLOCKED, "category gambling"]
        adult = ask(room.student, server, "porn.example", qtype)
        assert adult["addresses"] == [pi] and adult["ede"] == [wire.EDE_BLOCKED, "category adult"]
        allowed = ask(room.student, server, "www.allowed.example", qtype)
        assert allowed == {"rcode": 0, "aa": False, "ede": None,
                           "addresses": [fi.SENTINEL6 if v6 else fi.SENTINEL4]}
        portal = ask(room.student, server, PORTAL_NAME, qtype)
        assert portal["addresses"] == [pi] and portal["aa"] and portal["ede"] is None
        canary = ask(room.student, server, "use-application-dns.net", qtype)
        assert canary["rcode"] == wire.NXDOMAIN


def test_a_listed_mac_is_a_teacher_on_every_address_and_a_random_one_a_student(room: Room):
    teacher, v4 = room.teacher, room.room.gateway4
    assert ask(teacher, v4, "www.casino.example")["addresses"] == [fi.SENTINEL4]
    for address in teacher.addresses(6):  # SLAAC and privacy addresses
        # The Pi learns a new IPv6 neighbour when it first answers it: the very first query from
        # an address it never heard may get the default group (docs/filter.md says so).
        wait_for(lambda a=address: ask(teacher, room.room.gateway6, "www.casino.example",
                                       wire.AAAA, source=a)["addresses"] == [fi.SENTINEL6],
                 timeout=5, what=f"{address} to be the teacher's")
    # A new lease (another client id, as after a reinstall, and another address): still the
    # teacher, at once.
    hosts = list(room.room.subnet4.hosts())
    teacher.release()
    lease = teacher.dhcp(address=str(hosts[170]), send=("0x3d:ff00000001",))
    assert lease.address == str(hosts[170])
    assert ask(teacher, v4, "www.casino.example")["addresses"] == [fi.SENTINEL4]
    # Teachers still do not get adult sites.
    assert ask(teacher, v4, "porn.example")["ede"] == [wire.EDE_BLOCKED, "category adult"]
    assert ask(room.room.phones[2], v4, "www.casino.example")["addresses"] == [v4]


def test_dns_fallback_hands_port_53_to_the_baseline_and_back(room: Room):
    v4 = room.room.gateway4
    done = room.network.helper_call("dns-fallback", state="on")
    assert done == {"fallback": True, "port": 5336, "held": True}
    try:
        # The baseline: adult names NXDOMAIN (no EDE: unbound's own answer), gambling is not in
        # it, SafeSearch still applies; held, the health check does not switch back.
        wait_for(lambda: ask(room.student, v4, "porn.example")["rcode"] == wire.NXDOMAIN,
                 timeout=5, what="the baseline to answer")
        for _ in range(3):
            assert ask(room.student, v4, "porn.example") == {
                "rcode": wire.NXDOMAIN, "aa": True, "ede": None, "addresses": []}
            assert ask(room.student, fi.DNS4, "www.casino.example")["addresses"] == [fi.SENTINEL4]
    finally:
        room.network.helper_call("dns-fallback", state="off")
    assert ask(room.student, v4, "porn.example")["ede"] == [wire.EDE_BLOCKED, "category adult"]


def test_the_helper_falls_back_when_the_filter_dies_and_back_when_it_returns(room: Room):
    v4 = room.room.gateway4
    proc = room.procs["filter"]
    proc.kill()  # type: ignore[attr-defined]  # kill -9
    proc.wait()  # type: ignore[attr-defined]
    try:
        wait_for(lambda: ask(room.student, v4, "porn.example").get("rcode") == wire.NXDOMAIN,
                 timeout=10, what="the health check to switch to the baseline")
        assert ask(room.student, v4, "www.allowed.example")["addresses"] == [fi.SENTINEL4]
    finally:
        room.start_filter()
    wait_for(lambda: ask(room.student, v4, "porn.example").get("ede") is not None, timeout=10,
             what="the redirect back to the filter")


def test_doh_addresses_the_filter_resolved_are_rejected_on_443(room: Room):
    # An accepted phone reaches the fake internet's 443 (the sentinel serves HTTPS) ...
    phone = room.room.phones[2]
    lease_ip = phone.addresses(4)[0]
    room.network.helper_call("session-accept", ip=lease_ip)
    assert connect(phone, fi.SENTINEL4, 443) == "open"
    # ... until a device asks for a DoH resolver's name: the filter blocks it (the students lose
    # the doh category in the lab), resolves it itself (to the sentinel, as the fake internet
    # answers every name) and the helper puts the address into doh_v4, whose 443 is rejected.
    assert ask(phone, room.room.gateway4, "doh.example")["ede"] == [wire.EDE_BLOCKED, "category doh"]
    wait_for(lambda: fi.SENTINEL4 in room.room.pi.run("nft", "list", "set", "inet", "classroom",
                                                       "doh_v4").stdout,
             timeout=10, what="the DoH address in doh_v4")
    assert connect(phone, fi.SENTINEL4, 443) == "refused"
    assert connect(phone, fi.SENTINEL4, 80) == "open"


def test_a_walled_garden_name_resolved_by_the_filter_opens_the_garden(room: Room):
    phone = room.student  # not accepted
    # Before: port 80 of the garden's address is the captive responder's (not accepted).
    assert room.room.phones[0].curl(f"http://{fi.GARDEN4}/").status == 302
    assert ask(phone, room.room.gateway4, fi.GARDEN_HOST)["addresses"] == [fi.GARDEN4]
    wait_for(lambda: fi.GARDEN4 in room.room.pi.run("nft", "list", "set", "inet", "classroom",
                                                     "walled_v4").stdout,
             timeout=5, what="the garden's address in walled_v4")
    result = phone.curl(f"http://{fi.GARDEN_HOST}/")
    assert result.status == 200 and fi.GARDEN_HOST.encode() in result.body, result
