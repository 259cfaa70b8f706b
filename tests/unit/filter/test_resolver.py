"""The resolver without sockets: queries in, replies or Forwards out, upstream answers fed back."""

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import config
from appliance.filter import lists, policy, wire
from appliance.filter.identity import StaticIdentity
from appliance.filter.lists import Source
from appliance.filter.policy import State
from appliance.filter.resolver import Forward, Resolver
from appliance.filter.wire import Edns, Message, Question, Record


class Clock:
    def __init__(self, t=1_790_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def matcher(tmp_path):
    out = tmp_path / "l.bin"
    lists.compile_lists([(Source("adult", "x"), ["porn.test", "cdn-porn.test"]),
                         (Source("social_networks", "y"), ["social.test"])], out)
    return lists.Matcher.open(out)


def make(matcher, state=None, trusted=True, **section):
    cfg = config.from_dict({"appliance": {"id": "t"}, "filter": {
        "groups": [{"name": "teachers", "macs": ["00:00:00:00:00:01"]}], **section}})
    clock = Clock()
    st = {"state": state or State()}
    r = Resolver(policy.from_section(cfg.filter), matcher=lambda: matcher, state=lambda: st["state"],
                 identity=StaticIdentity({"10.0.0.2": "00:00:00:00:00:01"}), clock=clock,
                 trusted=lambda: trusted, monotonic=clock)
    return r, clock, st


def q(name, qtype=wire.A, ident=0x4242, edns=True):
    return wire.build(Message(ident, wire.RD, (Question(name, qtype),), edns=Edns() if edns else None))


def upstream_answer(fwd: Forward, *records, rcode=0):
    msg = wire.parse(fwd.data)
    return wire.build(Message(0x9999, wire.QR | wire.RD | wire.RA | rcode, msg.questions, records,
                              edns=msg.edns))


def a(name, ip="192.0.2.7", ttl=300):
    return Record(name, wire.A, wire.IN, ttl, bytes(map(int, ip.split("."))))


def cname(name, target, ttl=300):
    return Record(name, wire.CNAME, wire.IN, ttl, wire.name_wire(target), target)


def test_blocked_with_ede_and_not_forwarded(matcher):
    r, _, _ = make(matcher)
    out = wire.parse(r.answer(q("WWW.Porn.TEST"), "10.0.0.9"))
    assert out.rcode == wire.NXDOMAIN and out.id == 0x4242
    assert out.questions[0].name == "WWW.Porn.TEST"
    assert out.edns.ede() == (wire.EDE_BLOCKED, "category adult")
    # Every query type is filtered.
    for qtype in (wire.AAAA, wire.HTTPS, wire.TXT, wire.MX, wire.ANY):
        assert wire.parse(r.answer(q("porn.test", qtype), "10.0.0.9")).rcode == wire.NXDOMAIN


def test_forward_cache_countdown_case_and_cap(matcher):
    r, clock, _ = make(matcher)
    fwd = r.answer(q("Example.ORG"), "10.0.0.9")
    assert isinstance(fwd, Forward)
    reply = wire.parse(r.complete(fwd, upstream_answer(fwd, a("example.org"))))
    assert reply.id == 0x4242 and reply.questions[0].name == "Example.ORG"
    assert reply.answers[0].ttl == 60  # capped for a filtered group
    clock.t += 10
    hit = r.answer(q("eXample.org", ident=7), "10.0.0.9")
    assert isinstance(hit, bytes)
    hit = wire.parse(hit)
    assert hit.id == 7 and hit.questions[0].name == "eXample.org" and hit.answers[0].ttl == 60
    assert r.hits == 1
    # Teachers are filtered too (capped); an expired entry is asked again.
    clock.t += 300
    assert isinstance(r.answer(q("example.org"), "10.0.0.9"), Forward)


def test_cname_chain_checked_name_by_name_even_from_cache(matcher):
    r, _, _ = make(matcher, groups=[{"name": "staff", "filtering": False, "ranges": ["10.0.5.0/24"]}])
    fwd = r.answer(q("innocent.example"), "10.0.0.9")
    resp = upstream_answer(fwd, cname("innocent.example", "x.cdn-porn.test"), a("x.cdn-porn.test"))
    out = wire.parse(r.complete(fwd, resp))
    assert out.rcode == wire.NXDOMAIN and out.edns.ede()[1] == "category adult"
    # The cached upstream answer is not served to students either...
    assert wire.parse(r.answer(q("innocent.example"), "10.0.0.9")).rcode == wire.NXDOMAIN
    # ...but is to a group with filtering off: the cache holds upstream's truth, not a block.
    staff = wire.parse(r.answer(q("innocent.example"), "10.0.5.5"))
    assert staff.rcode == wire.NOERROR and len(staff.answers) == 2


def test_safesearch_rewrite_is_cname_plus_target_addresses(matcher):
    r, _, _ = make(matcher)
    fwd = r.answer(q("www.google.fr"), "10.0.0.9")
    assert isinstance(fwd, Forward) and fwd.target == "forcesafesearch.google.com"
    assert wire.parse(fwd.data).questions[0].name == "forcesafesearch.google.com"
    out = wire.parse(r.complete(fwd, upstream_answer(fwd, a("forcesafesearch.google.com", "216.239.38.120"))))
    assert [x.rtype for x in out.answers] == [wire.CNAME, wire.A]
    assert out.answers[0].target == "forcesafesearch.google.com"
    assert out.questions[0].name == "www.google.fr"
    # The second time it comes from the cache.
    again = r.answer(q("www.google.com"), "10.0.0.9")
    assert isinstance(again, bytes) and wire.parse(again).answers[1].rdata == bytes([216, 239, 38, 120])


def test_canaries_and_nodata(matcher):
    r, _, _ = make(matcher)
    assert wire.parse(r.answer(q("use-application-dns.net"), "10.0.0.9")).rcode == wire.NXDOMAIN
    ddr = wire.parse(r.answer(q("_dns.resolver.arpa", wire.SVCB), "10.0.0.9"))
    assert ddr.rcode == wire.NOERROR and not ddr.answers


def test_exam_started_takes_effect_at_the_next_refresh(matcher):
    r, clock, st = make(matcher)
    assert isinstance(r.answer(q("en.wikipedia.org"), "10.0.0.9"), Forward)
    exam = policy.Exam("students", clock.t + 600, frozenset({"moodle.test"}))
    st["state"] = State(exams=(exam,), version=2)
    assert r.refresh()
    out = wire.parse(r.answer(q("en.wikipedia.org"), "10.0.0.9"))
    assert out.rcode == wire.NXDOMAIN and out.edns.ede() == (wire.EDE_FILTERED, "exam mode")
    assert isinstance(r.answer(q("moodle.test"), "10.0.0.9"), Forward)
    # Teachers (by MAC) are not in the students' exam.
    assert isinstance(r.answer(q("en.wikipedia.org"), "10.0.0.2"), Forward)
    clock.t += 601
    r.refresh()
    assert isinstance(r.answer(q("en.wikipedia.org"), "10.0.0.9"), Forward)


def test_servfail_on_no_upstream_and_formerr_on_garbage(matcher):
    r, _, _ = make(matcher)
    fwd = r.answer(q("example.org"), "10.0.0.9")
    out = wire.parse(r.complete(fwd, None))
    assert out.rcode == wire.SERVFAIL and out.id == 0x4242
    assert wire.parse(r.complete(fwd, b"\x00\x01garbage")).rcode == wire.SERVFAIL
    bad = struct.pack("!6H", 5, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
    fe = r.answer(bad, "10.0.0.9")
    assert fe[:2] == b"\x00\x05" and fe[3] & 0xF == wire.FORMERR
    assert r.answer(b"\x01", "10.0.0.9") is None
    assert r.answer(wire.build(Message(1, wire.QR, (Question("a.test", 1),))), "10.0.0.9") is None


def test_big_answers_truncated_for_udp_clients_without_edns(matcher):
    r, _, _ = make(matcher)
    fwd = r.answer(q("big.example", edns=False), "10.0.0.9")
    many = [a("big.example", f"192.0.2.{i}") for i in range(1, 60)]
    out = wire.parse(r.complete(fwd, upstream_answer(fwd, *many)))
    assert out.flags & wire.TC and not out.answers
    tcp = r.answer(q("big.example", edns=False), "10.0.0.9", tcp=True)
    assert len(wire.parse(tcp).answers) == 59



@pytest.fixture(scope="module")
def fuzz_resolver(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "l.bin"
    lists.compile_lists([(Source("adult", "x"), ["porn.test"])], out)
    return make(lists.Matcher.open(out))[0]


# Any bytes from any client: an answer, a Forward or nothing, never an exception; and whatever
# upstream sends back is turned into a reply.
@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_random_queries_and_upstream_answers_never_crash(fuzz_resolver, query_bytes, upstream_bytes):
    r = fuzz_resolver
    for data in (query_bytes, q("www.example.org")[:12] + query_bytes, q("www.example.org")):
        out = r.answer(data, "10.0.0.9")
        if isinstance(out, Forward):
            assert wire.parse(r.complete(out, upstream_bytes)).id == 0x4242
        elif out is not None:
            assert out[:2] == data[:2]


def test_block_page_answers_the_portal_address_with_the_ede(matcher):
    r, _, _ = make(matcher)
    r.block_page = (ipaddress.ip_address("192.168.4.1"), ipaddress.ip_address("2001:db8::1"))
    a4 = wire.parse(r.answer(q("porn.test"), "10.0.0.9"))
    assert a4.rcode == 0 and a4.answers[0].rdata == bytes([192, 168, 4, 1]) and a4.answers[0].ttl == 10
    assert a4.edns.ede() == (wire.EDE_BLOCKED, "category adult")
    assert wire.parse(r.answer(q("porn.test", wire.AAAA), "10.0.0.9")).answers[0].rtype == wire.AAAA
    https = wire.parse(r.answer(q("porn.test", wire.HTTPS), "10.0.0.9"))
    assert https.rcode == 0 and not https.answers
    assert wire.parse(r.answer(q("use-application-dns.net"), "10.0.0.9")).rcode == wire.NXDOMAIN
