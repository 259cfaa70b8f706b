"""Real parts for the filter's tests: an unbound serving a local zone (the upstream), the filter
on free ports, and a raw DNS client.

The upstream unbound differs from production in one line: `module-config: "iterator"` (no
DNSSEC validation) because its zone is local data, not signed; and it answers only its local
zone (`local-zone: "." static`), so nothing ever leaves the machine.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from appliance.filter import unbound, wire
from appliance.filter.wire import Edns, Message, Question
from appliance.harness.process import wait_for, write_config
from tests.unit.filter.conftest import UT1

DATA = Path(__file__).resolve().parents[2] / "data" / "filter"
ADULT = DATA / "adult-synthetic.txt"


def first(category: str) -> str:
    from appliance.filter.lists import normalize

    return next(n for n in (normalize(line) for line in (UT1 / category / "domains").open()) if n)


def zone_lines() -> list[str]:
    """The fake internet's names: ordinary, CNAME chains into blocked names, the SafeSearch
    hosts, a listed social network and gambling site (resolvable: a block is the filter's)."""
    records = {
        "www.example.test": ["A 192.0.2.10", "AAAA 2001:db8::10"],
        "moodle.school.test": ["A 192.0.2.20"],
        "innocent.test": ["CNAME x.cdn-porn.test"],
        "x.cdn-porn.test": ["A 192.0.2.66"],
        "porn.test": ["A 192.0.2.67"],
        "forcesafesearch.google.com": ["A 216.239.38.120"],
        "restrictmoderate.youtube.com": ["A 216.239.38.119"],
        "restrict.youtube.com": ["A 216.239.38.118"],
        "strict.bing.com": ["A 204.79.197.220"],
        "www.google.com": ["A 142.250.1.1"],
        "www.youtube.com": ["A 142.250.1.2"],
        first("social_networks"): ["A 192.0.2.30"],
        "www." + first("gambling"): ["A 192.0.2.31"],
        first("doh"): ["A 192.0.2.53", "AAAA 2001:db8::53"],
        "big.test": [f'TXT "{"x" * 200} {i}"' for i in range(12)],
    }
    out = ['    local-zone: "." static']
    for name, rrs in records.items():
        out += [f"    local-data: '{name}. 300 IN {rr}'" for rr in rrs]
    return out


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on `host`."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        with socket.socket(fam, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            with socket.socket(fam, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
                return int(port)


def query(host: str, port: int, name: str, qtype: int = wire.A, *, edns: bool = True,
          timeout: float = 3.0, tcp: bool = False) -> wire.Message:
    data = wire.build(Message(0x1234, wire.RD, (Question(name, qtype),),
                              edns=Edns(udp_size=1232) if edns else None))
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    if tcp:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(data)) + data)
            n = struct.unpack("!H", s.recv(2))[0]
            buf = b""
            while len(buf) < n:
                buf += s.recv(n - len(buf))
            return wire.parse(buf)
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, (host, port))
        return wire.parse(s.recv(65535))


class Unbound:
    """unbound -d under a rendered config, optionally inside a namespace; stopped by pid."""

    def __init__(self, folder: Path, listen: str, port: int, lines: list[str],
                 prefix: list[str] | None = None, text: str | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "unbound.conf"
        opts = unbound.UnboundOptions(interfaces=(listen,), port=port, directory=folder,
                                      trust_anchor=None, access=("0.0.0.0/0", "::/0"))
        self.conf.write_text(text if text is not None else unbound.render(opts, lines))
        self.listen, self.port = listen, port
        self.log = folder / "unbound.log"
        self.prefix = prefix or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Unbound:
        subprocess.run(["unbound-checkconf", str(self.conf)], check=True, capture_output=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([*self.prefix, shutil.which("unbound") or "unbound", "-d",
                                          "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(self.answers, timeout=15, what=f"unbound on {self.listen}:{self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def answers(self) -> bool:
        if self.prefix:  # inside a namespace: ask from there
            out = subprocess.run([*self.prefix, "dig", f"@{self.listen}", "-p", str(self.port),
                                  "www.example.test", "+tries=1", "+time=1"],
                                 capture_output=True, text=True, check=False).stdout
            return "status: NOERROR" in out
        with contextlib.suppress(OSError, wire.WireError):
            return query(self.listen, self.port, "www.example.test", timeout=0.3).rcode == 0
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def zone(tmp_path):
    """The fake internet's resolver: unbound on loopback serving zone_lines()."""
    u = Unbound(tmp_path / "zone", "127.0.0.1", free_port(), zone_lines()).start()
    yield u
    u.stop()


def filter_sections(tmp_path: Path, upstream: str, *, port: int, listen: list[str],
                    **filter_extra: object) -> dict[str, dict[str, object]]:
    return {
        "appliance": {"id": "filter-test", "state_dir": str(tmp_path / "state")},
        "agent": {"clock_source": "host"},
        "filter": {
            "listen": listen, "port": port, "upstreams": [upstream], "timezone": "Europe/Paris",
            "upstream_timeout": 1.0,
            "lists": [{"category": "adult", "path": str(ADULT)},
                      {"category": "ut1", "path": str(UT1), "layout": "ut1",
                       "categories": ["gambling", "social_networks", "mixed_adult", "doh"]}],
            **filter_extra,
        },
    }


def write_filter_config(tmp_path: Path, upstream: str, **kw: object) -> Path:
    return write_config(tmp_path / "appliance.toml", **filter_sections(tmp_path, upstream, **kw))  # type: ignore[arg-type]
