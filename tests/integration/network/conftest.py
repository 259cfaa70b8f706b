"""One virtual classroom (appliance.harness.classroom) with the classroom network running on its
Pi (appliance.network.lab.PiNetwork: the rendered dnsmasq and ruleset, the helper, the captive
responder and the portal), shared by the module: building it and taking leases costs seconds."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.harness.classroom import Classroom, Lease, Phone
from appliance.network.lab import PiNetwork

# Fetch URLs from inside a phone with a plain socket, to see what curl hides: whether the server
# closed the connection after its answer. argv[1]: JSON list of [host, path, user_agent,
# keep_alive]; prints a JSON list of {status, headers, body, closed}.
RAW_HTTP = r"""
import json, socket, sys
out = []
for host, path, ua, keep in json.loads(sys.argv[1]):
    addr = socket.getaddrinfo(host, 80, socket.AF_INET, socket.SOCK_STREAM)[0][4]
    s = socket.create_connection(addr, timeout=3)
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nAccept: */*\r\n"
               f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n").encode())
    data, closed = b"", False
    try:
        while chunk := s.recv(65536):
            data += chunk
        closed = True
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    out.append({"status": status, "headers": headers, "body": body.decode("latin-1"),
                "closed": closed})
print(json.dumps(out))
"""


def raw_http(phone: Phone, requests: list[tuple[str, str, str, bool]]) -> list[dict[str, object]]:
    result = phone.run(sys.executable, "-c", RAW_HTTP, json.dumps(requests), timeout=120)
    return json.loads(result.stdout)


# A DNS query for an A (or AAAA) record from inside a namespace; prints the addresses.
DNS_QUERY = r"""
import ipaddress, json, socket, struct, sys
server, name, tcp, qtype = sys.argv[1], sys.argv[2], sys.argv[3] == "tcp", int(sys.argv[4])
family = socket.AF_INET6 if ":" in server else socket.AF_INET
labels = b"".join(bytes([len(l)]) + l.encode() for l in name.split("."))
q = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(">HH", qtype, 1)
if tcp:
    s = socket.socket(family, socket.SOCK_STREAM); s.settimeout(3); s.connect((server, 53))
    s.sendall(struct.pack(">H", len(q)) + q)
    n = struct.unpack(">H", s.recv(2))[0]; d = b""
    while len(d) < n: d += s.recv(n - len(d))
else:
    s = socket.socket(family, socket.SOCK_DGRAM); s.settimeout(3)
    s.sendto(q, (server, 53)); d = s.recv(4096)
an = struct.unpack(">H", d[6:8])[0]; i = 12
while d[i]: i += d[i] + 1
i += 5; out = []
for _ in range(an):
    if d[i] & 0xC0 == 0xC0: i += 2
    else:
        while d[i]: i += d[i] + 1
        i += 1
    t, c, ttl, ln = struct.unpack(">HHIH", d[i:i+10]); i += 10
    if t in (1, 28): out.append(str(ipaddress.ip_address(d[i:i+ln])))
    i += ln
print(json.dumps(out))
"""


def dns_query(phone: Phone, server: str, name: str, *, tcp: bool = False,
              aaaa: bool = False, tolerant: bool = False) -> list[str]:
    """The A (or AAAA) answers of `server` to `name`, asked from `phone`. With `tolerant`, a
    query that timed out answers [] (waiting for a change) instead of failing."""
    result = phone.run(sys.executable, "-c", DNS_QUERY, server, name, "tcp" if tcp else "udp",
                       "28" if aaaa else "1", check=False)
    if tolerant and result.returncode != 0:
        return []
    assert result.returncode == 0, result.stderr
    answers: list[str] = json.loads(result.stdout)
    return answers


@dataclass
class Room:
    room: Classroom
    network: PiNetwork
    leases: list[Lease]

    @property
    def phones(self) -> list[Phone]:
        return self.room.phones


@pytest.fixture(scope="module")
def classroom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    workdir = tmp_path_factory.mktemp("classroom")
    # The helper's socket where an unprivileged caller (nobody) can reach it: pytest's folders
    # are 0700.
    run_dir = Path(tempfile.mkdtemp(prefix="classroom-helper-"))
    run_dir.chmod(0o755)
    with Classroom(workdir=workdir / "room", management=False) as room:
        network = PiNetwork(room, workdir / "pi", run_dir=run_dir)
        network.write_config()
        try:
            network.apply()
            network.start()
            leases = room.dhcp_all(timeout=15)
            for phone in room.phones:
                phone.wait_ipv6()
            yield Room(room, network, leases)
        finally:
            network.close()
            shutil.rmtree(run_dir, ignore_errors=True)
