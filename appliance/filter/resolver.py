"""The filter's answer to one query, without sockets: `Resolver.answer(bytes, client)` returns
the reply bytes, or a `Forward` the server sends upstream and hands back to `complete()`.

The hot path stays on bytes (python-zeroconf's lesson, and the research's measured 12-35x over
object parsing): `wire.parse_query` reads the question only; a decision is memoized per (group,
name) until the group's policy in force changes; a cached upstream answer is patched in place
(ID, RD, the client's letter case, TTLs counted down and capped for filtered groups) instead of
being built again. Upstream answers are cached as upstream gave them, never a blocked or
rewritten form, and the policy is applied to each client on every hit: so what is blocked for
one group is never served from the cache to another, and a CNAME chain is checked name by name
for the asking group even when the answer comes from the cache.
"""

from __future__ import annotations

import ipaddress
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.filter import wire
from appliance.filter.identity import Identity, LocalAnswers, NoLocalAnswers, StaticIdentity
from appliance.filter.lists import Matcher
from appliance.filter.policy import (
    BLOCK_TTL,
    Active,
    Decision,
    Policy,
    State,
    active,
    decide,
)

CacheKey = tuple[bytes, int, int, int]
MAX_CACHE_TTL = 86400
GROUP_MEMO_S = 5.0  # how long a client address keeps its group before identity is asked again
MEMO_MAX = 200_000
LOCAL_TTL = 60
DOH_CATEGORY = "doh"  # UT1's name for DNS-over-HTTPS resolvers


@dataclass
class Forward:
    """A query to send upstream (`data`, any ID; the server sets its own) and what to do with
    the answer."""

    query: wire.Query
    data: bytes
    key: CacheKey
    decision: Decision
    target: str = ""  # a SafeSearch rewrite: the name asked upstream instead
    tcp: bool = False


@dataclass
class _Entry:
    data: bytes
    stored: float
    ttl: int
    offsets: tuple[int, ...]
    chain: tuple[str, ...]
    question_len: int
    # The answer with its TTLs counted down for one (elapsed second, cap): most queries of a
    # second then only get their ID, RD bit and letter case patched in.
    template: tuple[int, int | None, bytes] | None = None


@dataclass
class _Snapshot:
    policy: Policy
    state: State
    matcher: Matcher
    trusted: bool
    actives: dict[str, Active]
    memo: dict[tuple[str, str], Decision] = field(default_factory=dict)
    # Our own answers (blocked, canary) by (group, question, type, bits): built once per snapshot.
    replies: dict[tuple[str, bytes, int, int], bytes] = field(default_factory=dict)


def _bits(q: wire.Query) -> int:
    """The parts of a query that change the upstream's answer besides the question."""
    edns, do = q.edns is not None, bool(q.edns and q.edns.do)
    return int(edns) | int(do) << 1 | int(bool(q.flags & wire.CD)) << 2


class Resolver:
    """Thread-safe enough for the server's threads: every shared structure is a dict replaced or
    updated by single operations; `refresh()` (called by one housekeeping thread) swaps in a new
    snapshot of policy, state, lists and clock trust."""

    def __init__(self, policy: Policy, *, matcher: Callable[[], Matcher],
                 state: Callable[[], State] = State, identity: Identity | None = None,
                 local: LocalAnswers | None = None, clock: Callable[[], float] = time.time,
                 trusted: Callable[[], bool] = lambda: True, cache_size: int = 20000,
                 monotonic: Callable[[], float] = time.monotonic,
                 block_page: tuple[str, ...] = (), walled: tuple[str, ...] = ()) -> None:
        self.policy = policy
        self._matcher = matcher
        self._state = state
        self.identity: Identity = identity or StaticIdentity()
        self.local: LocalAnswers = local or NoLocalAnswers()
        self.clock = clock
        self._trusted = trusted
        self.cache_size = cache_size
        self.monotonic = monotonic
        self.block_page = tuple(ipaddress.ip_address(a) for a in block_page)
        self.cache: dict[CacheKey, _Entry] = {}
        self._groups: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.stats: Counter[tuple[str, str]] = Counter()  # (group, "" | category) -> count
        self.blocked_names: Counter[str] = Counter()
        # Names of the `doh` category asked for since the server last looked: it resolves them
        # itself so the network can reject port 443 to their addresses.
        self.doh_names: set[str] = set()
        # The walled garden (`[network] walled_garden`, reachable before a phone is accepted):
        # every address upstream gives one of these names (or a subdomain), with when it was
        # last given, for the network helper's walled sets (what dnsmasq's nftset= did).
        self.walled = tuple(w.lower().rstrip(".") for w in walled)
        self.walled_addresses: dict[str, float] = {}
        self.walled_changed = False
        self.hits = 0
        self.misses = 0
        self.snap = self._build(policy)

    # -- snapshot ------------------------------------------------------------------------------
    def _build(self, policy: Policy, memo: dict[tuple[str, str], Decision] | None = None) -> _Snapshot:
        now, trusted, state = self.clock(), self._trusted(), self._state()
        actives = {g: active(policy, g, state, now, trusted) for g in policy.groups}
        return _Snapshot(policy, state, self._matcher(), trusted, actives,
                         memo if memo is not None else {})

    def refresh(self, policy: Policy | None = None) -> bool:
        """Take in a new policy, state, list file, clock trust or time: True if the decisions
        changed (the memo starts again)."""
        old = self.snap
        new = self._build(policy or old.policy)
        if policy is not None:
            self.policy = policy
            self._groups = {}
        changed = (new.policy is not old.policy or new.matcher is not old.matcher
                   or new.actives != old.actives or new.trusted != old.trusted)
        if not changed and len(old.memo) < MEMO_MAX:
            new.memo = old.memo
            new.replies = old.replies
        self.snap = new
        return changed

    def group_of(self, client: str) -> str:
        now = self.monotonic()
        hit = self._groups.get(client)
        if hit is not None and hit[1] > now:
            return hit[0]
        mac = self.identity.lookup(client)
        group = self.snap.policy.group_for(mac, client)[0]
        if len(self._groups) > 50_000:
            self._groups = {}
        # An address not yet known is asked again soon: its neighbour entry may be on its way.
        self._groups[client] = (group, now + (GROUP_MEMO_S if mac else 1.0))
        return group

    def forget_client(self, client: str | None = None) -> None:
        """A lease changed: ask identity again at the next query (of `client`, or of everyone)."""
        if client is None:
            self._groups = {}
        else:
            self._groups.pop(client, None)

    def _decide(self, snap: _Snapshot, group: str, name: str) -> Decision:
        d = snap.memo.get((group, name))
        if d is None:
            m = snap.matcher
            d = decide(snap.policy, snap.actives[group], name, lambda n: m.names(m.mask(n)))
            snap.memo[(group, name)] = d
        return d

    # -- answering -----------------------------------------------------------------------------
    def answer(self, data: bytes, client: str, tcp: bool = False) -> bytes | Forward | None:
        """The reply to `data` from `client`, a Forward, or None (not a query: dropped)."""
        try:
            q = wire.parse_query(data)
        except wire.WireError:
            return _formerr(data)
        if q.qclass != wire.IN:
            return wire.response(q, wire.REFUSED)
        snap = self.snap
        group = self.group_of(client)
        name = q.name.lower()
        self.stats[(group, "")] += 1
        local = self.local.addresses(name)
        if local is not None:
            return self._local(q, name, local)
        d = self._decide(snap, group, name)
        if d.action != "forward" and d.action != "rewrite":
            rkey = (group, q.key, q.qtype, _bits(q))
            made = snap.replies.get(rkey)
            if made is None:
                made = self._blocked(q, d, name)
                if len(snap.replies) < MEMO_MAX:
                    snap.replies[rkey] = made
            else:
                self._count_block(d, name)
            return _patch_ours(made, q, data)
        if d.action == "rewrite":
            return self._rewrite(snap, q, d, tcp)
        key = (q.key, q.qtype, q.qclass, _bits(q))
        entry = self.cache.get(key)
        if entry is not None:
            reply = self._from_cache(snap, q, d, entry, data, tcp)
            if reply is not None:
                self.hits += 1
                return reply
        self.misses += 1
        return Forward(q, data, key, d, tcp=tcp)

    def complete(self, fwd: Forward, response: bytes | None) -> bytes:
        """The reply to the client once upstream answered (`None`: it did not, SERVFAIL)."""
        q = fwd.query
        if response is None:
            return wire.response(q, wire.SERVFAIL, ede=(23, "upstream unreachable"))
        try:
            msg = wire.parse(response)
        except wire.WireError:
            return wire.response(q, wire.SERVFAIL, ede=(wire.EDE_OTHER, "bad upstream answer"))
        entry = self._store(fwd, response, msg)
        if self.walled:
            self._note_walled(q.name.lower(), msg)
        snap = self.snap
        if fwd.target:
            return self._rewritten(q, fwd, msg, response, entry)
        if entry is not None:
            reply = self._from_cache(snap, q, fwd.decision, entry, fwd.data, fwd.tcp)
            if reply is not None:
                return reply
        blocked = self._chain_block(snap, fwd.decision, tuple(
            r.target.lower() for r in msg.answers if r.target))
        if blocked is not None:
            return self._blocked(q, blocked, q.name.lower())
        return self._fit(q, _patch(bytearray(response), q, fwd.data, msg.ttl_offsets, 0,
                                   fwd.decision.ttl_cap), fwd.tcp)

    # -- pieces --------------------------------------------------------------------------------
    def _note_walled(self, name: str, msg: wire.Message) -> None:
        if not any(name == w or name.endswith("." + w) for w in self.walled):
            return
        now = self.monotonic()
        for r in msg.answers:
            if r.rtype in (wire.A, wire.AAAA) and len(r.rdata) in (4, 16):
                addr = str(ipaddress.ip_address(r.rdata))
                if addr not in self.walled_addresses:
                    self.walled_changed = True
                self.walled_addresses[addr] = now

    def _store(self, fwd: Forward, response: bytes, msg: wire.Message) -> _Entry | None:
        if msg.flags & wire.TC or msg.rcode not in (wire.NOERROR, wire.NXDOMAIN):
            return None
        qname = fwd.target or fwd.query.name
        if (len(msg.questions) != 1 or msg.questions[0].name.lower() != qname.lower()
                or msg.questions[0].qtype != fwd.query.qtype):
            return None
        qlen = len(fwd.key[0])
        if response[12:12 + qlen].lower() != fwd.key[0]:
            return None  # a compressed or odd question: serve it once, do not cache
        ttls = [struct.unpack_from("!I", response, o)[0] for o in msg.ttl_offsets]
        ttl = min(min(ttls) if ttls else 0, MAX_CACHE_TTL)
        if ttl <= 0:
            return None
        entry = _Entry(response, self.monotonic(), ttl, msg.ttl_offsets,
                       tuple(r.target.lower() for r in msg.answers if r.target), qlen)
        if len(self.cache) >= self.cache_size:
            self._evict()
        self.cache[fwd.key] = entry
        return entry

    def _evict(self) -> None:
        now = self.monotonic()
        with self._lock:
            for k in [k for k, e in list(self.cache.items()) if now - e.stored >= e.ttl]:
                self.cache.pop(k, None)
            if len(self.cache) >= self.cache_size:
                for k in list(self.cache)[: max(1, self.cache_size // 4)]:
                    self.cache.pop(k, None)

    def _chain_block(self, snap: _Snapshot, d: Decision, chain: tuple[str, ...]) -> Decision | None:
        if not d.inspect or not chain:
            return None
        for target in chain:
            td = self._decide(snap, d.group, target)
            if td.action in ("block", "nxdomain"):
                return Decision("block", d.group,
                                (f"CNAME target {target}: {td.reasons[-1]}",), td.category,
                                ttl_cap=BLOCK_TTL)
        return None

    def _from_cache(self, snap: _Snapshot, q: wire.Query, d: Decision, entry: _Entry,
                    data: bytes, tcp: bool) -> bytes | None:
        elapsed = int(self.monotonic() - entry.stored)
        if elapsed >= entry.ttl:
            self.cache.pop((q.key, q.qtype, q.qclass, _bits(q)), None)
            return None
        if entry.chain:
            blocked = self._chain_block(snap, d, entry.chain)
            if blocked is not None:
                return self._blocked(q, blocked, q.name.lower())
        t = entry.template
        if t is None or t[0] != elapsed or t[1] != d.ttl_cap:
            t = (elapsed, d.ttl_cap, _patch(bytearray(entry.data), q, data, entry.offsets, elapsed,
                                            d.ttl_cap))
            entry.template = t
        return self._fit(q, _patch_ours(t[2], q, data), tcp)

    def _fit(self, q: wire.Query, reply: bytes, tcp: bool) -> bytes:
        if not tcp and len(reply) > wire.max_size(q):
            return wire.truncated(q)
        return reply

    def _count_block(self, d: Decision, name: str) -> None:
        self.stats[(d.group, d.category or "blocked")] += 1
        if d.category != "canary":
            self.blocked_names[name] += 1
        if d.category == DOH_CATEGORY and len(self.doh_names) < 10_000:
            self.doh_names.add(name)

    def _blocked(self, q: wire.Query, d: Decision, name: str) -> bytes:
        self._count_block(d, name)
        if d.action == "nodata":
            return wire.response(q, wire.NOERROR, authority=(_soa(name),))
        code = wire.EDE_FILTERED if d.category in ("canary", "exam") else wire.EDE_BLOCKED
        text = {"canary": "bypass canary", "exam": "exam mode"}.get(d.category, f"category {d.category}")
        if self.block_page and d.category != "canary":
            # The block page: a browser asking for the blocked name over plain HTTP lands on the
            # portal, which says why (by name: no student data in the URL). Other types: no data.
            answers = tuple(wire.Record(q.name, rtype, wire.IN, BLOCK_TTL, ip.packed)
                            for ip in self.block_page
                            for rtype in ((wire.A,) if ip.version == 4 else (wire.AAAA,))
                            if q.qtype in (rtype, wire.ANY))
            return wire.response(q, wire.NOERROR, answers, (() if answers else (_soa(name),)),
                                 ede=(code, text))
        return wire.response(q, wire.NXDOMAIN, authority=(_soa(name),), ede=(code, text))

    def _local(self, q: wire.Query, name: str, addrs: list[str]) -> bytes:
        answers = []
        for a in addrs:
            ip = ipaddress.ip_address(a)
            rtype = wire.A if ip.version == 4 else wire.AAAA
            if q.qtype in (rtype, wire.ANY):
                answers.append(wire.Record(q.name, rtype, wire.IN, LOCAL_TTL, ip.packed))
        return wire.response(q, wire.NOERROR, tuple(answers), aa=True)

    def _rewrite(self, snap: _Snapshot, q: wire.Query, d: Decision, tcp: bool) -> bytes | Forward:
        cname = wire.Record(q.name, wire.CNAME, wire.IN, d.ttl_cap or 60, wire.name_wire(d.target),
                            d.target)
        if q.qtype == wire.CNAME:
            return wire.response(q, wire.NOERROR, (cname,))
        target_q = wire.Query(0, wire.RD | (q.flags & wire.CD), d.target, q.qtype, q.qclass,
                              wire.name_wire(d.target).lower(), 0, q.edns)
        key = (target_q.key, q.qtype, q.qclass, _bits(q))
        data = wire.build(wire.Message(0, target_q.flags, (wire.Question(d.target, q.qtype),),
                                       edns=wire.Edns(do=q.edns.do) if q.edns else None))
        entry = self.cache.get(key)
        if entry is not None and int(self.monotonic() - entry.stored) < entry.ttl:
            self.hits += 1
            return self._rewritten(q, Forward(q, data, key, d, d.target, tcp), wire.parse(entry.data),
                                   entry.data, entry)
        self.misses += 1
        return Forward(q, data, key, d, d.target, tcp)

    def _rewritten(self, q: wire.Query, fwd: Forward, msg: wire.Message, response: bytes,
                   entry: _Entry | None) -> bytes:
        """CNAME to the safe host, then the safe host's own records as upstream gave them."""
        elapsed = int(self.monotonic() - entry.stored) if entry else 0
        cap = fwd.decision.ttl_cap or 60
        cname = wire.Record(q.name, wire.CNAME, wire.IN, cap, wire.name_wire(fwd.target), fwd.target)
        answers = tuple(wire.Record(r.name, r.rtype, r.rclass, min(max(r.ttl - elapsed, 0), cap),
                                    r.rdata, r.target) for r in msg.answers)
        flags = wire.QR | wire.RA | (q.flags & (wire.RD | wire.CD)) | (msg.flags & wire.AD) | (
            msg.flags & 0xF)
        edns = wire.Edns(do=q.edns.do) if q.edns else None
        reply = wire.build(wire.Message(q.id, flags, (wire.Question(q.name, q.qtype, q.qclass),),
                                        (cname, *answers), msg.authority, (), edns))
        return self._fit(q, reply, fwd.tcp)


def _patch(buf: bytearray, q: wire.Query, query: bytes, offsets: tuple[int, ...], elapsed: int,
           cap: int | None) -> bytes:
    """An upstream answer made the client's: its ID and RD bit, its question's letter case (0x20),
    TTLs counted down by `elapsed` and capped at `cap`."""
    buf[0:2] = query[0:2]
    buf[2] = (buf[2] & ~(wire.RD >> 8)) | (query[2] & (wire.RD >> 8))
    qlen = q.question_end - 4 - wire.HEADER
    if buf[12:12 + qlen].lower() == query[12:12 + qlen].lower():
        buf[12:12 + qlen] = query[12:12 + qlen]
    if elapsed or cap is not None:
        for off in offsets:
            ttl = max(struct.unpack_from("!I", buf, off)[0] - elapsed, 0)
            if cap is not None and ttl > cap:
                ttl = cap
            struct.pack_into("!I", buf, off, ttl)
    return bytes(buf)


def _patch_ours(reply: bytes, q: wire.Query, query: bytes) -> bytes:
    """A reply built for an earlier query of the same question, made this query's: its ID, RD
    bit and the letter case of its question (the question is uncompressed at offset 12)."""
    end = q.question_end - 4
    rd = (reply[2] & 0xFE) | (query[2] & 0x01)
    return query[0:2] + bytes((rd,)) + reply[3:12] + query[12:end] + reply[end:]


def _soa(name: str) -> wire.Record:
    """A SOA for our own negative answers: a negative answer is cached by clients for at most its
    minimum (RFC 2308), kept short so an unblock acts fast."""
    labels = name.split(".")
    zone = ".".join(labels[-2:]) if len(labels) >= 2 else name
    rdata = (wire.name_wire("filter.invalid") + wire.name_wire("hostmaster.filter.invalid")
             + struct.pack("!5I", 1, 3600, 600, 86400, BLOCK_TTL))
    return wire.Record(zone, wire.SOA, wire.IN, BLOCK_TTL, rdata)


def _formerr(data: bytes) -> bytes | None:
    """FORMERR with the query's ID for a malformed query; None for what is not even a query
    (shorter than a header, or a response: answering those would let others bounce traffic)."""
    if len(data) < wire.HEADER or data[2] & 0x80:
        return None
    return data[0:2] + bytes([0x80 | (data[2] & 0x01), 0x80 | wire.FORMERR]) + b"\0" * 8
