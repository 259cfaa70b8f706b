"""The fake internet's DNS and HTTP answers, without sockets."""

import ipaddress
import random
import struct

import pytest

from appliance.harness import fakeinternet as fi
from appliance.network.probes import PROBES


def query(name: str, qtype: int = fi.TYPE_A, ident: int = 0x1234, flags: int = 0x0100) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\x00"
    return struct.pack("!6H", ident, flags, 1, 0, 0, 0) + labels + struct.pack("!HH", qtype, 1)


def answers(reply: bytes) -> tuple[int, int, list[str]]:
    """(id, rcode, addresses) of a reply built by build_response (answers use a 0xC00C pointer)."""
    ident, flags, qdcount, ancount, _ns, _ar = struct.unpack_from("!6H", reply)
    offset = 12
    if qdcount:
        while reply[offset]:
            offset += reply[offset] + 1
        offset += 5
    found = []
    for _ in range(ancount):
        _ptr, _rtype, _cls, _ttl, length = struct.unpack_from("!HHHIH", reply, offset)
        offset += 12
        found.append(str(ipaddress.ip_address(reply[offset:offset + length])))
        offset += length
    return ident, flags & 0xF, found


@pytest.mark.parametrize("host", sorted({p.host for p in PROBES}))
def test_probe_hosts_resolve_to_the_web_server(host):
    assert answers(fi.dns_answer(query(host))[0]) == (0x1234, 0, [fi.WEB4])
    assert answers(fi.dns_answer(query(host.upper() + ".", fi.TYPE_AAAA))[0])[2] == [fi.WEB6]


def test_other_names_get_the_sentinel_and_other_types_nodata():
    assert answers(fi.dns_answer(query("example.org"))[0])[2] == [fi.SENTINEL4]
    assert answers(fi.dns_answer(query("example.org", fi.TYPE_AAAA))[0])[2] == [fi.SENTINEL6]
    assert answers(fi.dns_answer(query("dns.msftncsi.com"))[0])[2] == ["131.107.255.255"]
    assert answers(fi.dns_answer(query("example.org", 15))[0]) == (0x1234, 0, [])
    reply, parsed = fi.dns_answer(query("example.org"))
    assert parsed is not None and parsed.name == "example.org"
    flags = struct.unpack_from("!H", reply, 2)[0]
    assert flags & 0x8000 and flags & 0x0400 and flags & 0x0100  # response, authoritative, RD echoed


def test_malformed_queries_get_formerr_or_nothing():
    assert fi.dns_answer(b"")[0] is None
    assert fi.dns_answer(b"\x00" * 11)[0] is None
    two = struct.pack("!6H", 7, 0, 2, 0, 0, 0)
    assert answers(fi.dns_answer(two)[0])[:2] == (7, fi.RCODE_FORMERR)
    loop = struct.pack("!6H", 8, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
    assert answers(fi.dns_answer(loop)[0])[:2] == (8, fi.RCODE_FORMERR)
    # A response is never answered (two fake servers must not ping-pong).
    assert fi.dns_answer(query("example.org", flags=0x8000))[0] is None
    # Another opcode: NOTIMP.
    assert answers(fi.dns_answer(query("example.org", flags=2 << 11))[0])[1] == fi.RCODE_NOTIMP


def test_random_bytes_never_raise():
    rng = random.Random(15)
    base = query("captive.apple.com")
    for _ in range(5000):
        if rng.random() < 0.5:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        else:  # a real query with a few bytes changed: reaches the deeper parsing
            data = bytearray(base)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data[:rng.randrange(len(data) + 1)])
        reply, _ = fi.dns_answer(data)
        assert reply is None or reply[:2] == data[:2]


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.url)
def test_web_answers_each_probe_online(probe):
    answer = fi.web_answer(probe.host, probe.path, https=probe.https)
    if probe.login_trigger:
        assert answer.status == 302
        assert ("Location", fi.LOGIN_TRIGGER_LOCATION) in answer.headers
    else:
        assert answer == probe.online


def test_web_answers_any_other_url_with_a_recognisable_page():
    assert fi.web_answer("Example.ORG:80", "/x?y").body == b"fake internet: example.org\n"
    assert fi.web_answer("captive.apple.com", "/other").body == fi.page_for("captive.apple.com")
    # Query strings do not hide a probe (Firefox adds ?ipv4).
    assert fi.web_answer("detectportal.firefox.com", "/success.txt?ipv4").body == b"success\n"


def test_dns_log_lines_parse_back():
    text = ("dns udp 203.0.113.2 example.org A -> 203.0.113.99\n"
            "dns tcp 2001:db8::1 example.org MX ->\n"
            f"dns udp 192.0.2.7 {fi.MALFORMED} - -> formerr\nweb 1.2.3.4 a / 200\n")
    entries = fi.parse_dns_log(text)
    assert [(e.transport, e.name, e.qtype, e.answers) for e in entries] == [
        ("udp", "example.org", "A", ("203.0.113.99",)), ("tcp", "example.org", "MX", ()),
        ("udp", fi.MALFORMED, "-", ("formerr",))]
