"""The virtual classroom, for real: namespaces, a plain dnsmasq, busybox udhcpc, SLAAC, curl, dig.

One classroom is shared by the module (building it takes under a second, but leases and SLAAC
take a few): tests that change it (the uplink cut) put it back. Lifetime tests build their own.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.harness import fakeinternet as fi
from appliance.harness.classroom import Classroom, Lease, curl
from appliance.harness.netns import ip, namespace_pids, namespaces
from appliance.harness.process import REPO, wait_for
from appliance.network.probes import PROBES, USER_AGENTS

pytestmark = pytest.mark.integration


def dnsmasq(room: Classroom, workdir: Path) -> subprocess.Popen[bytes]:
    """A minimal dnsmasq for the classroom: DHCPv4 leases, router advertisements, no DNS."""
    net = room.subnet4
    hosts = list(net.hosts())
    return room.start_process(
        room.pi, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--user=root",
        "--port=0", f"--interface={room.wlan.bridge}", "--bind-interfaces",
        f"--dhcp-range={hosts[99]},{hosts[198]},{net.netmask},1h",
        f"--dhcp-option=option:router,{room.gateway4}",
        f"--dhcp-option=option:dns-server,{room.gateway4}",
        "--enable-ra", f"--dhcp-range=::,constructor:{room.wlan.bridge},ra-only,64,1h",
        f"--dhcp-leasefile={workdir / 'leases'}", "--pid-file=", "--log-facility=-",
        "--log-dhcp", "--no-ping", log=workdir / "dnsmasq.log")


@pytest.fixture(scope="module")
def classroom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Classroom, list[Lease]]]:
    workdir = tmp_path_factory.mktemp("classroom")
    with Classroom(workdir=workdir / "room") as room:
        dnsmasq(room, workdir)
        leases = room.dhcp_all(timeout=15)
        yield room, leases


@pytest.fixture
def room(classroom: tuple[Classroom, list[Lease]]) -> Classroom:
    return classroom[0]


def test_phones_take_leases_from_dnsmasq(classroom):
    room, leases = classroom
    assert len(leases) == 3
    addresses = {lease.address for lease in leases}
    assert len(addresses) == 3
    for phone, lease in zip(room.phones, leases, strict=True):
        assert lease.router == room.gateway4 == "192.0.2.1"
        assert lease.dns == (room.gateway4,)
        assert lease.prefixlen == 24
        assert 0 < (lease.seconds or 0) <= 3600
        assert phone.addresses(4) == [lease.address]
        assert phone.mac.startswith("02:")
        # Our hook wrote the phone's own resolver, not the machine's.
        assert phone.resolv_conf.read_text().strip() == f"nameserver {room.gateway4}"
        route = phone.run("ip", "route", "show", "default").stdout
        assert f"via {room.gateway4}" in route
    leasefile = (room.workdir.parent / "leases").read_text()
    for phone in room.phones:
        assert phone.mac in leasefile


def test_phones_get_slaac_and_privacy_addresses(room):
    for phone in room.phones:
        v6 = phone.wait_ipv6(timeout=20)
        assert all(a.startswith("2001:db8:42:") for a in v6)
        assert phone.privacy_addresses()
        route = phone.run("ip", "-6", "route", "show", "default").stdout
        assert "via fe80:" in route


def test_machine_resolver_untouched(room):
    # Nothing of ours points the machine at the classroom.
    resolv = Path("/etc/resolv.conf").read_text() if Path("/etc/resolv.conf").exists() else ""
    assert room.gateway4 not in resolv and fi.DNS4 not in resolv


def test_phones_reach_the_pi_but_not_each_other(classroom):
    room, leases = classroom
    one, two, three = room.phones
    assert one.ping(room.gateway4)
    assert one.ping(room.gateway6)
    assert not one.ping(leases[1].address, timeout=1)
    assert not two.ping(leases[2].address, timeout=1)
    two.wait_ipv6()
    assert not three.ping(two.addresses(6)[0], timeout=1)
    # The bridge ports really are isolated (what ap_isolate does on a radio).
    out = room.pi.run("bridge", "-d", "link", "show").stdout
    assert out.count("isolated on") == 3


def test_phones_fetch_from_the_pi_over_ipv4_and_ipv6(room, tmp_path):
    (tmp_path / "hello.txt").write_text("from the pi\n")
    server = room.start_process(room.pi, sys.executable, "-m", "http.server", "8080",
                                "--bind", "::", "--directory", str(tmp_path))
    phone = room.phones[0]
    phone.wait_ipv6()
    ok = wait_for(lambda: phone.curl(f"http://{room.gateway4}:8080/hello.txt", timeout=1).status,
                  timeout=10, what="the Pi's test server")
    assert ok == 200
    v4 = phone.curl(f"http://{room.gateway4}:8080/hello.txt", user_agent=USER_AGENTS["ios"])
    v6 = phone.curl(f"http://[{room.gateway6}]:8080/hello.txt")
    assert v4.body == v6.body == b"from the pi\n"
    assert v4.header("content-type") == "text/plain"
    server.terminate()
    server.wait(5)


def test_the_fake_internet_answers_every_probe_from_the_pi(room):
    for probe in PROBES:
        result = curl(room.pi, probe.url, user_agent=USER_AGENTS.get(probe.platform),
                      cacert=room.internet_ca)
        assert result.status == probe.online.status, (probe.url, result.error)
        if probe.login_trigger:
            assert result.header("Location") == fi.LOGIN_TRIGGER_LOCATION
            continue
        assert result.body == probe.online.body, probe.url
        for key, value in probe.online.headers:
            assert result.header(key) == value


def test_the_fake_internet_answers_over_ipv6_and_for_any_host(room):
    apple = next(p for p in PROBES if p.host == "captive.apple.com")
    v6 = curl(room.pi, apple.url, family=6)
    assert (v6.status, v6.body) == (200, apple.online.body)
    other = curl(room.pi, "http://example.org/some/page")
    assert (other.status, other.body) == (200, fi.page_for("example.org"))
    assert any(line.startswith(f"web {fi.PI_UPLINK6} captive.apple.com")
               for line in room.internet_log("web").splitlines())


def dig(room: Classroom, server: str, name: str, qtype: str = "A", *flags: str) -> list[str]:
    out = room.pi.run("dig", "+short", "+time=2", "+tries=1", *flags, f"@{server}", name, qtype)
    return out.stdout.split()


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
@pytest.mark.parametrize("server", [fi.DNS4, fi.DNS6])
def test_the_fake_dns_answers_probe_hosts_and_a_sentinel(room, transport, server):
    assert dig(room, server, "captive.apple.com", "A", transport) == [fi.WEB4]
    assert dig(room, server, "CONNECTIVITYCHECK.gstatic.com", "AAAA", transport) == [fi.WEB6]
    assert dig(room, server, "dns.msftncsi.com", "A", transport) == ["131.107.255.255"]
    assert dig(room, server, "anything.example.org", "A", transport) == [fi.SENTINEL4]
    assert dig(room, server, "anything.example.org", "AAAA", transport) == [fi.SENTINEL6]
    # Other types: NODATA (NOERROR, no answer), not an error.
    full = room.pi.run("dig", "+time=2", "+tries=1", transport, f"@{server}", "example.org", "MX")
    assert "status: NOERROR" in full.stdout and "ANSWER: 0" in full.stdout
    assert "flags: qr aa" in full.stdout


GARBAGE = textwrap.dedent("""
    import socket, struct, sys
    server = sys.argv[1]
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    packets = [b"", b"\\x00", b"\\xff" * 11, b"\\x12\\x34" + b"\\x00" * 10,
               struct.pack("!6H", 7, 0, 5, 0, 0, 0) + b"\\x01a\\x00\\x00\\x01\\x00\\x01",
               struct.pack("!6H", 8, 0, 1, 0, 0, 0) + b"\\xc0\\x0c\\x00\\x01\\x00\\x01",  # loop
               struct.pack("!6H", 9, 0, 1, 0, 0, 0) + b"\\x3fabc",
               struct.pack("!6H", 10, 0x8000, 1, 0, 0, 0) + b"\\x00\\x00\\x01\\x00\\x01",
               bytes(range(256)) * 8]
    udp = socket.socket(family, socket.SOCK_DGRAM)
    for p in packets:
        udp.sendto(p, (server, 53))
    for p in packets:
        tcp = socket.create_connection((server, 53), 2)
        tcp.sendall(struct.pack("!H", len(p) + 7) + p)   # a length that lies, then hang up
        tcp.close()
    tcp = socket.create_connection((server, 53), 2)
    tcp.sendall(b"\\xff")
    tcp.close()
    print("sent")
""")


@pytest.mark.parametrize("server", [fi.DNS4, fi.DNS6])
def test_malformed_dns_does_not_kill_the_server(room, server):
    out = room.pi.run(sys.executable, "-c", GARBAGE, server)
    assert out.stdout.strip() == "sent"
    # A header we can read but a question we cannot: FORMERR, with the query's id.
    probe = room.pi.run(sys.executable, "-c", textwrap.dedent(f"""
        import socket, struct
        s = socket.socket({'socket.AF_INET6' if ':' in server else 'socket.AF_INET'},
                          socket.SOCK_DGRAM)
        s.settimeout(2)
        s.sendto(struct.pack("!6H", 4242, 0x0100, 2, 0, 0, 0), ("{server}", 53))
        ident, flags = struct.unpack("!HH", s.recv(512)[:4])
        print(ident, flags & 0xF, flags >> 15)
    """))
    assert probe.stdout.split() == ["4242", "1", "1"]
    assert dig(room, server, "captive.apple.com", "A", "+tcp") == [fi.WEB4]
    assert dig(room, server, "captive.apple.com") == [fi.WEB4]
    assert any(e.name == fi.MALFORMED for e in room.dns_queries())


@pytest.mark.parametrize("silent", [False, True])
def test_cut_uplink_takes_the_internet_away_and_restore_brings_it_back(room, silent):
    apple = next(p for p in PROBES if p.host == "captive.apple.com")
    room.cut_uplink(silent=silent)
    try:
        assert not room.online
        # The Pi's DNS forwarder (the fake DNS) and the probe both fail.
        dns = room.pi.run("dig", "+time=1", "+tries=1", f"@{fi.DNS4}", "captive.apple.com",
                          check=False)
        assert dns.returncode != 0
        pinned = (f"captive.apple.com:80:{fi.WEB4}",)
        assert curl(room.pi, apple.url, resolve=pinned, timeout=1).status == 0
        assert curl(room.pi, f"http://[{fi.WEB6}]/", timeout=1).status == 0
    finally:
        room.restore_uplink()
    assert room.online
    fetched = wait_for(lambda: curl(room.pi, apple.url, timeout=2).body == apple.online.body,
                       timeout=10, what="the internet back")
    assert fetched
    assert curl(room.pi, apple.url, family=6, timeout=2).status == 200
    # The IPv6 route to the classroom comes back too.
    assert str(room.subnet6) in room.inet.run("ip", "-6", "route").stdout


def test_the_management_link_reaches_the_machine_only(room):
    host = room.broker_host
    assert host is not None and host.startswith("198.1")
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, 0))
    listener.listen(1)
    listener.settimeout(5)
    port = listener.getsockname()[1]
    try:
        client = room.pi.popen(sys.executable, "-c", (
            f"import socket; c = socket.create_connection(({host!r}, {port}), 3); c.sendall(b'hi')"))
        conn, peer = listener.accept()
        assert peer[0] == room.pi_management_address
        assert conn.recv(10) == b"hi"
        conn.close()
        client.wait(5)
    finally:
        listener.close()
    # Through our device the machine routes the /30 and nothing else (no default route).
    ours = [line.split()[0] for line in ip("-4", "route", "show", "table", "all").stdout.splitlines()
            if f"dev {room.management.b_dev} " in f"{line} " and not line.startswith(("local", "broadcast"))]
    assert ours == [str(ipaddress.ip_interface(room.management.b_addrs[0]).network)]
    assert "203.0.113" not in ip("route", "show", "table", "all").stdout


def test_classroom_addresses_are_configurable(tmp_path):
    with Classroom(phones=1, subnet4="10.42.0.0/24", subnet6="2001:db8:77::/64",
                   management=False, workdir=tmp_path / "room") as room:
        assert room.gateway4 == "10.42.0.1" and room.gateway6 == "2001:db8:77::1"
        assert room.broker_host is None
        assert "10.42.0.1/24" in room.pi.run("ip", "addr", "show", "wlan0").stdout
        assert "2001:db8:77::/64" in room.inet.run("ip", "-6", "route").stdout
    with pytest.raises(Exception, match="overlaps"):
        Classroom(subnet4="203.0.113.0/25")


def test_offline_start_and_close_leaves_nothing(tmp_path):
    room = Classroom(phones=2, offline=True, workdir=tmp_path / "room").start()
    names = [room.pi.name, room.inet.name, *(p.name for p in room.phones)]
    pids = room.pids
    host_dev = room.management.b_dev
    assert len(pids) == 2 and not room.online
    assert curl(room.pi, f"http://{fi.WEB4}/", timeout=1).status == 0
    assert all(Path(f"/etc/netns/{n}").exists() for n in names)
    room.close()
    room.close()  # twice is fine
    left = set(namespaces())
    assert not left & set(names)
    assert not any(Path(f"/etc/netns/{n}").exists() for n in names)
    assert not [pid for pid in pids if alive(pid)]
    assert ip("link", "show", host_dev, check=False).returncode != 0


def alive(pid: int) -> bool:
    """Running (a zombie waiting for an init that does not reap counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


KILLED_RUN = """
import sys, time
from appliance.harness.classroom import Classroom
room = Classroom(sys.argv[1], phones=1).start()
print(" ".join(map(str, room.pids)), flush=True)
time.sleep(120)
"""


def test_a_new_start_removes_what_a_killed_run_left(tmp_path):
    prefix = f"cs{os.getpid() % 100000}"
    run = subprocess.Popen([sys.executable, "-c", KILLED_RUN, prefix], stdout=subprocess.PIPE,
                           text=True, cwd=REPO)
    try:
        pids = [int(p) for p in run.stdout.readline().split()]
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert len(pids) == 2
    assert f"{prefix}-pi" in namespaces()
    assert set(pids) <= set(namespace_pids(f"{prefix}-inet"))  # the servers outlived it
    with Classroom(prefix, phones=1, workdir=tmp_path / "room") as room:
        # Same names, built anew: the stale ones (and their servers) are gone.
        assert not [pid for pid in pids if alive(pid)]
        assert dig(room, fi.DNS4, "captive.apple.com") == [fi.WEB4]
    assert not [n for n in namespaces() if n.startswith(f"{prefix}-")]
    assert not list(Path("/etc/netns").glob(f"{prefix}-*"))
