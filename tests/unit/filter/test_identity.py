"""What the filter takes from the network: the lease and neighbour reader behind a short cache
(re-read on a miss, with age, and when the lease file changes, reporting moved addresses), the
network's local-answers table switched by the uplink's state, and the walled garden's addresses
noted from upstream answers."""

from __future__ import annotations

import os

from appliance import config
from appliance.filter import policy, wire
from appliance.filter.identity import LeaseIdentity, NetworkAnswers
from appliance.filter.resolver import Forward, Resolver
from appliance.network import probes
from tests.unit.filter.test_resolver import Clock, a, matcher, q, upstream_answer  # noqa: F401


class Reader:
    def __init__(self, table):
        self.table, self.reads = dict(table), 0

    def __call__(self):
        self.reads += 1
        return dict(self.table)


def test_cached_then_read_again_on_a_miss_with_age_and_on_a_lease_change(tmp_path):
    lease = tmp_path / "dnsmasq.leases"
    lease.write_text("")
    reader, clock, moved = Reader({"192.0.2.10": "00:16:3e:00:00:01"}), Clock(100.0), []
    ident = LeaseIdentity(lease_file=lease, reader=reader, clock=clock, on_change=moved.append)
    assert ident.lookup("192.0.2.10") == "00:16:3e:00:00:01"
    first = reader.reads
    clock.t += 1
    assert ident.lookup("192.0.2.10") == "00:16:3e:00:00:01" and reader.reads == first
    # An address it does not know: read again (at most every 20 ms).
    reader.table["2001:db8::1234"] = "00:16:3e:00:00:01"
    assert ident.lookup("2001:db8::1234") == "00:16:3e:00:00:01"
    assert ident.lookup("::ffff:192.0.2.10") == "00:16:3e:00:00:01"  # v4 on a dual-stack socket
    reads = reader.reads
    clock.t += 0.2
    assert ident.lookup("192.0.2.99") is None and ident.lookup("192.0.2.99") is None
    assert reader.reads == reads + 1
    # The lease file changes (a new lease moved the address to another device).
    reader.table["192.0.2.10"] = "00:16:3e:00:00:02"
    clock.t += 1
    lease.write_text("x")
    os.utime(lease, ns=(1, 10**18))
    assert ident.lookup("192.0.2.10") == "00:16:3e:00:00:02"
    assert moved == ["192.0.2.10"]
    # Old entries are read again after max_age even without a change.
    reads = reader.reads
    clock.t += 6
    ident.lookup("192.0.2.10")
    assert reader.reads == reads + 1
    assert ident.lookup("not an address") is None
    reads = reader.reads
    clock.t += 1
    assert ident.lookup("127.0.0.1") is None and ident.lookup("::1") is None
    assert reader.reads == reads


def test_the_networks_local_answers_follow_the_uplink(tmp_path):
    cfg = config.from_dict({"appliance": {"id": "x"}, "network": {"portal_name": "classroom.internal"}})
    up, clock = {"on": True}, Clock(0.0)
    local = NetworkAnswers(cfg.network, online=lambda: up["on"], clock=clock)
    assert local.addresses("classroom.internal") == ["10.42.0.1", "fd42:ce::1"]
    assert local.addresses("captive.apple.com") is None
    up["on"] = False
    assert local.addresses("captive.apple.com") is None  # checked once a second
    clock.t += 1
    assert local.addresses("captive.apple.com") == [cfg.network.captured_address]
    assert local.addresses(probes.MSFT_NCSI_DNS_NAME) == [probes.MSFT_NCSI_DNS_ADDRESS]


def test_local_answers_come_before_the_policy_and_answer_nodata_for_the_other_family(matcher):  # noqa: F811
    cfg = config.from_dict({"appliance": {"id": "x"}, "network": {"ipv6": ""}})
    r = Resolver(policy.from_section(cfg.filter), matcher=lambda: matcher,
                 local=NetworkAnswers(cfg.network, online=lambda: True))
    out = wire.parse(r.answer(q("Classroom.Internal"), "10.0.0.9"))
    assert out.rcode == wire.NOERROR and [x.rdata for x in out.answers] == [bytes([10, 42, 0, 1])]
    six = wire.parse(r.answer(q("classroom.internal", wire.AAAA), "10.0.0.9"))
    assert six.rcode == wire.NOERROR and six.answers == ()


def test_walled_garden_addresses_are_noted_from_upstream(matcher):  # noqa: F811
    cfg = config.from_dict({"appliance": {"id": "x"}})
    r = Resolver(policy.from_section(cfg.filter), matcher=lambda: matcher,
                 walled=("garden.example",))
    fwd = r.answer(q("www.Garden.example"), "10.0.0.9")
    assert isinstance(fwd, Forward)
    r.complete(fwd, upstream_answer(fwd, a("www.garden.example", "203.0.113.7")))
    assert set(r.walled_addresses) == {"203.0.113.7"} and r.walled_changed
    other = r.answer(q("gardenexample.org"), "10.0.0.9")
    assert isinstance(other, Forward)
    r.complete(other, upstream_answer(other, a("gardenexample.org", "203.0.113.8")))
    assert set(r.walled_addresses) == {"203.0.113.7"}
