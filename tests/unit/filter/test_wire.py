"""The DNS wire parser and builder: round trips, 0x20, EDNS, and malformed packets that must be
rejected cleanly (fuzzed with hypothesis, plus the known nasties by hand)."""

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.filter import wire
from appliance.filter.wire import Edns, Message, Question, Record, WireError


def query(name: str, qtype: int = wire.A, edns: Edns | None = None, ident: int = 0x1234) -> bytes:
    return wire.build(Message(ident, wire.RD, (Question(name, qtype),), edns=edns))


def test_query_round_trip_keeps_case_and_edns():
    data = query("WwW.ExAmple.ORG", wire.AAAA, Edns(udp_size=4096, do=True))
    q = wire.parse_query(data)
    assert q.name == "WwW.ExAmple.ORG"
    assert q.key == wire.name_wire("www.example.org")
    assert q.qtype == wire.AAAA and q.id == 0x1234
    assert q.edns is not None and q.edns.udp_size == 4096 and q.edns.do
    assert q.question_end == 12 + len(wire.name_wire("www.example.org")) + 4


def test_response_compresses_names_and_parses_back():
    a = Record("www.example.org", wire.CNAME, wire.IN, 300, wire.name_wire("cdn.example.net"),
               "cdn.example.net")
    b = Record("cdn.example.net", wire.A, wire.IN, 60, bytes([192, 0, 2, 1]))
    msg = Message(7, wire.QR | wire.RD | wire.RA, (Question("www.example.org", wire.A),), (a, b),
                  edns=Edns(options=(wire.ede_option(wire.EDE_BLOCKED, "adult"),)))
    data = wire.build(msg)
    # The question name, written once, is pointed to by the answer: compressed.
    assert data.count(b"\x07example\x03org") == 1
    back = wire.parse(data)
    assert back.answers[0].target == "cdn.example.net"
    assert back.answers == msg.answers
    assert back.edns is not None and back.edns.ede() == (wire.EDE_BLOCKED, "adult")
    # TTL offsets point at the TTLs.
    assert [struct.unpack_from("!I", data, o)[0] for o in back.ttl_offsets] == [300, 60]


def test_blocked_response_carries_ede_and_echoes_case():
    q = wire.parse_query(query("PoRn.Example", edns=Edns()))
    out = wire.parse(wire.response(q, wire.NXDOMAIN, ede=(wire.EDE_BLOCKED, "category adult")))
    assert out.rcode == wire.NXDOMAIN and out.flags & wire.QR and out.flags & wire.RD
    assert out.questions[0].name == "PoRn.Example"
    assert out.edns is not None and out.edns.ede() == (wire.EDE_BLOCKED, "category adult")


def test_no_edns_in_query_means_none_in_answer_and_512_bytes():
    q = wire.parse_query(query("example.org"))
    assert q.edns is None and wire.max_size(q) == 512
    assert wire.parse(wire.response(q, wire.NXDOMAIN, ede=(wire.EDE_BLOCKED, "x"))).edns is None
    tc = wire.parse(wire.truncated(q))
    assert tc.flags & wire.TC and not tc.answers


def test_escaped_labels_round_trip():
    name = "a\\046b.c\\032d.example"
    assert wire.parse(wire.build(Message(1, 0, (Question(name, 1),)))).questions[0].name == name


# -- known nasties -----------------------------------------------------------------------------

HEADER_1Q = struct.pack("!6H", 1, 0, 1, 0, 0, 0)


@pytest.mark.parametrize(("data", "why"), [
    (b"", "shorter"),
    (b"\x00" * 11, "shorter"),
    (HEADER_1Q + b"\xc0\x0c\x00\x01\x00\x01", "point back"),        # pointer to itself
    (HEADER_1Q + b"\x01a\xc0\x0c\x00\x01\x00\x01", "point back"),    # a loop via an earlier label
    (HEADER_1Q + b"\xc0\x20" + b"\x00" * 40, "point back"),          # forward pointer
    (HEADER_1Q + b"\x05ab\x00\x00", "truncated"),
    (HEADER_1Q + b"\x80abc\x00\x00\x01\x00\x01", "label type"),
    (struct.pack("!6H", 1, 0, 65535, 65535, 65535, 65535) + b"\x00" * 20, "counts"),
    (HEADER_1Q + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01", "longer than 255"),
    # OPT whose option says it is longer than the record.
    (struct.pack("!6H", 1, 0, 1, 0, 0, 1) + b"\x00\x00\x01\x00\x01"
     + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 4) + b"\x00\x0f\x00\x09", "longer than the record"),
    # Two OPT records.
    (struct.pack("!6H", 1, 0, 1, 0, 0, 2) + b"\x00\x00\x01\x00\x01"
     + (b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)) * 2, "repeated"),
    # Rdata length past the end.
    (struct.pack("!6H", 1, 0x8000, 1, 1, 0, 0) + b"\x00\x00\x01\x00\x01"
     + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 200) + b"\x01\x02", "past the end"),
    # A CNAME whose rdata length disagrees with its name.
    (struct.pack("!6H", 1, 0x8000, 1, 1, 0, 0) + b"\x00\x00\x01\x00\x01"
     + b"\x00" + struct.pack("!HHIH", 5, 1, 5, 4) + b"\x01a\x00\x00", "does not match"),
])
def test_nasty_packets_rejected(data, why):
    with pytest.raises(WireError, match=why):
        wire.parse(data)


def test_parse_query_rejects_responses_and_compressed_questions():
    with pytest.raises(WireError):
        wire.parse_query(wire.build(Message(1, wire.QR, (Question("a.example", 1),))))
    with pytest.raises(WireError):
        wire.parse_query(struct.pack("!6H", 1, 0, 2, 0, 0, 0) + b"\x00\x00\x01\x00\x01" * 2)
    # A question "a" + pointer to offset 0 (the header).
    with pytest.raises(WireError):
        wire.parse_query(HEADER_1Q + b"\x01a\xc0\x00\x00\x01\x00\x01")


def test_names_too_long_cannot_be_built():
    with pytest.raises(WireError):
        wire.name_wire("a" * 64 + ".example")
    with pytest.raises(WireError):
        wire.name_wire(".".join(["abcdefgh"] * 30))
    with pytest.raises(WireError):
        wire.name_wire("bad..name")


# -- fuzz --------------------------------------------------------------------------------------

@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_crash(data):
    for f in (wire.parse, wire.parse_query):
        with contextlib.suppress(WireError):
            f(data)


VALID = wire.build(Message(
    9, wire.QR | wire.RD, (Question("www.example.org", wire.A),),
    (Record("www.example.org", wire.CNAME, 1, 30, wire.name_wire("x.example.org"), "x.example.org"),
     Record("x.example.org", wire.A, 1, 30, b"\x01\x02\x03\x04")),
    (Record("example.org", wire.SOA, 1, 30, wire.name_wire("ns.example.org")
            + wire.name_wire("h.example.org") + b"\x00" * 20),),
    (Record("x.example.org", wire.MX, 1, 30, b"\x00\x0a" + wire.name_wire("mx.example.org")),),
    Edns(options=((10, b"cookie12"),))))


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6),
       st.integers(0, len(VALID)))
def test_mutated_packets_never_crash_and_reparse(mutations, cut):
    data = bytearray(VALID)
    for at, value in mutations:
        data[at] = value
    try:
        msg = wire.parse(bytes(data[:cut]))
    except WireError:
        return
    # Whatever we accept, we can write again and read back the same records.
    again = wire.parse(wire.build(msg))
    assert again.answers == msg.answers and again.questions == msg.questions


label = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789-_", min_size=1, max_size=20)


@settings(max_examples=500, deadline=None)
@given(st.lists(label, min_size=0, max_size=8), st.integers(0, 65535))
def test_names_round_trip(labels, qtype):
    name = ".".join(labels)
    q = wire.parse_query(query(name, qtype))
    assert q.name == name and q.qtype == qtype and q.key == wire.name_wire(name).lower()
