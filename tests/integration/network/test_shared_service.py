"""open-service / close-service in the virtual classroom: the rendered ruleset, the real helper,
clients on isolated bridge ports. phone1 is a display (a TCP server on 7000 and 7001, a UDP echo
on 6005), phone2 a staff laptop, phone3 a student's phone."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from appliance.harness.classroom import ClassroomError, Phone

from .conftest import Room

pytestmark = pytest.mark.integration

# Answers "pong <line>" on each TCP line (ports 7000, 7001) and echoes UDP on 6005.
SERVER = r"""
import socket, sys, threading
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, _ = s.accept()
        def serve(c=c):
            f = c.makefile("rwb")
            for line in f:
                f.write(b"pong " + line); f.flush()
        threading.Thread(target=serve, daemon=True).start()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(2048); s.sendto(b"pong " + data, peer)
for port in (7000, 7001):
    threading.Thread(target=tcp, args=(port,), daemon=True).start()
udp(6005)
"""

# argv: ip, proto, port -> prints "ok" when the server answered within 2 s, else "no".
PROBE = r"""
import socket, sys
ip, proto, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if proto == "tcp":
        s = socket.create_connection((ip, port), timeout=2); s.sendall(b"hi\n"); ok = s.recv(64)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
        s.sendto(b"hi", (ip, port)); ok = s.recv(64)
    print("ok" if ok.startswith(b"pong") else "no")
except OSError:
    print("no")
"""

# One TCP connection kept open: a line on stdin is sent, the answer (or "no") printed.
STREAM = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
for line in sys.stdin:
    try:
        s.sendall(line.encode()); print("ok" if s.recv(64).startswith(b"pong") else "no", flush=True)
    except OSError:
        print("no", flush=True)
"""


def reach(phone: Phone, ip: str, proto: str = "tcp", port: int = 7000) -> bool:
    out = phone.run(sys.executable, "-c", PROBE, ip, proto, str(port), timeout=20).stdout
    return out.strip() == "ok"


@pytest.fixture(scope="module")
def display(classroom: Room) -> str:
    phone = classroom.phones[0]
    classroom.room.start_process(phone.ns, sys.executable, "-c", SERVER)
    ip = phone.addresses(4)[0]
    deadline = time.monotonic() + 10
    # The Pi itself may reach it (it is no classroom-to-classroom forward).
    while classroom.room.pi.run(sys.executable, "-c", PROBE, ip, "tcp", "7000").stdout.strip() != "ok":
        assert time.monotonic() < deadline, "the display's server did not start"
        time.sleep(0.2)
    return ip


def test_clients_are_isolated_until_a_service_is_opened(classroom: Room, display: str) -> None:
    _, staff, student = classroom.phones
    assert classroom.room.pi.run("sysctl", "-n", "net.ipv4.conf.wlan0.proxy_arp_pvlan").stdout.strip() == "1"
    assert not reach(staff, display)
    assert not reach(student, display)


def test_open_service_lets_the_staff_device_reach_only_those_ports(classroom: Room,
                                                                     display: str) -> None:
    disp, staff, student = classroom.phones
    net = classroom.network
    result = net.helper_call("open-service", from_mac=staff.mac, to_mac=disp.mac,
                             ports="tcp:7000,udp:6000-6010", seconds="600")
    assert result["to"] == [display] and result["from"] == staff.addresses(4)
    assert reach(staff, display, "tcp", 7000)
    assert reach(staff, display, "udp", 6005)
    assert not reach(staff, display, "tcp", 7001)  # listening, but not opened
    assert not reach(student, display, "tcp", 7000)
    assert not reach(student, display, "udp", 6005)
    # The display may not start connections to the staff device either (replies only).
    classroom.room.start_process(staff.ns, sys.executable, "-c", SERVER)
    time.sleep(0.5)
    assert reach(staff, "127.0.0.1", "tcp", 7000)  # it listens
    assert not reach(disp, staff.addresses(4)[0], "tcp", 7000)


def test_an_opening_survives_a_ruleset_reload(classroom: Room, display: str) -> None:
    staff = classroom.phones[1]
    done = classroom.network.apply()
    assert done["kept_elements"] >= 2
    assert reach(staff, display, "tcp", 7000)
    assert reach(staff, display, "udp", 6005)


def test_close_service_ends_it_at_once_even_a_running_stream(classroom: Room,
                                                            display: str) -> None:
    disp, staff, student = classroom.phones
    stream = subprocess.Popen([*staff.ns.exec_prefix(), sys.executable, "-c", STREAM, display,
                               "7000"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert stream.stdin is not None and stream.stdout is not None
        stream.stdin.write("one\n")
        stream.stdin.flush()
        assert stream.stdout.readline().strip() == "ok"
        assert classroom.network.helper_call("close-service", from_mac=staff.mac,
                                             to_mac=disp.mac)["closed"] is True
        stream.stdin.write("two\n")
        stream.stdin.flush()
        assert stream.stdout.readline().strip() == "no"
    finally:
        stream.kill()
        stream.wait()
    assert not reach(staff, display, "tcp", 7000)
    assert not reach(staff, display, "udp", 6005)
    assert not reach(student, display, "tcp", 7000)
    with pytest.raises(ClassroomError, match="no opening"):
        classroom.network.helper_call("close-service", from_mac=staff.mac, to_mac=disp.mac)


@pytest.mark.parametrize("args, message", [
    ({"ports": "tcp:0"}, "outside 1-65535"),
    ({"ports": "tcp:7000; flush ruleset"}, "is not tcp:PORT"),
    ({"ports": "sctp:7000"}, "is not tcp:PORT"),
    ({"ports": "udp:7000-6000"}, "backwards"),
    ({"ports": ",".join(f"tcp:{p}" for p in range(1, 18))}, "1-16 entries"),
    ({"seconds": "5"}, "seconds must be"),
    ({"to_mac": "02:ce:00:00:00:01 } flush ruleset"}, "not a MAC"),
    ({"to_mac": "02:ce:00:00:99:99"}, "no classroom IPv4 address"),
])
def test_bad_arguments_are_refused_and_reach_nothing(classroom: Room, display: str,
                                                     args: dict[str, str], message: str) -> None:
    disp, staff, _ = classroom.phones
    full = {"from_mac": staff.mac, "to_mac": disp.mac, "ports": "tcp:7000", "seconds": "600",
            **args}
    with pytest.raises(ClassroomError, match=message):
        classroom.network.helper_call("open-service", **full)
    assert not reach(staff, display)


def test_the_device_inventory_opens_and_closes_it_by_itself(classroom: Room, display: str) -> None:
    """`appliance devices serve` on the Pi: once the display announces AirPlay and the laptop is
    put in the staff group, the service asks the helper; a group change closes it again."""
    disp, staff, student = classroom.phones
    net, room = classroom.network, classroom.room
    workdir = net.directory
    room.start_process(room.pi, sys.executable, "-m", "appliance", "--config", str(net.config),
                       "devices", "serve", log=workdir / "devices.log")
    ready = workdir / "display.ready"
    room.start_process(disp.ns, sys.executable, "-m", "appliance.harness.mdnsdevice", "announce",
                       "--address", display, "--type", "_airplay._tcp", "--name",
                       "Room 101 Display", "--host", "display", "--port", "7000", "--txt",
                       "model=AppleTV6,2", "--ready", str(ready), log=workdir / "display.log")

    def until(check, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                listed = net.appliance("devices", "list", "--all", "--json", check=False)
                raise AssertionError(f"{what} within {timeout} s; service log:\n"
                                     f"{(workdir / 'devices.log').read_text()[-2000:]}\n"
                                     f"inventory: {listed.stdout[-2000:]} {listed.stderr[-500:]}")
            time.sleep(0.5)

    def display_known() -> bool:
        out = net.appliance("devices", "list", "--all", "--json", check=False).stdout
        return '"AppleTV6,2"' in out and staff.mac in out

    until(display_known, "the display and the laptop in the inventory")
    assert not reach(staff, display)
    net.appliance("devices", "group", staff.mac, "staff")
    until(lambda: reach(staff, display), "the staff laptop reaches the display")
    assert reach(staff, display, "udp", 6005)  # AirPlay's RAOP range 6000-7011
    assert not reach(staff, display, "tcp", 7001)
    assert not reach(student, display)
    net.appliance("devices", "group", staff.mac, "")
    until(lambda: not reach(staff, display), "the opening closed after the group change")
