"""The helper's pure parts: the wire protocol, the allowlist, sessions' lifetimes, leases."""

from __future__ import annotations

import json

import pytest

from appliance import config
from appliance.network import leases, nft, sessions, verbs
from appliance.network.verbs import Caller, Refused


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\xff\xfe", "not a JSON line"),
    (b"hello", "not a JSON line"),
    (b"[1]", "object with a verb"),
    (b'{"verb": "reboot"}', "not one the helper knows"),
    (b'{"verb": "session-accept", "args": {}}', "takes ip"),
    (b'{"verb": "session-accept", "args": {"ip": "10.0.0.1", "mac": "02:00:00:00:00:01"}}', "takes ip"),
    (b'{"verb": "session-accept", "args": {"ip": "nope"}}', "not an IP"),
    (b'{"verb": "session-revoke", "args": {"mac": "zz"}}', "not a MAC"),
    (b'{"verb": "session-list", "args": {"x": 1}}', "no arguments"),
    (b"x" * 5000, "too long"),
])
def test_garbage_is_refused(raw, reason):
    with pytest.raises(Refused) as err:
        verbs.parse(raw)
    assert reason in err.value.reason


def test_a_good_request_parses_and_is_normalised():
    req = verbs.parse(b'{"verb": "session-revoke", "args": {"mac": "02:AA:00:00:00:01"}}')
    assert (req.verb, req.args) == ("session-revoke", {"mac": "02:aa:00:00:00:01"})
    six = verbs.parse(b'{"verb": "session-accept", "args": {"ip": "fd42:ce:0::9"}}')
    assert six.args == {"ip": "fd42:ce::9"}


def test_allowlist_by_user_and_unit():
    helper = config.HelperSection(session_accept=("root:appliance-portal.service",),
                                  session_list=("0",))
    portal = Caller(10, 0, "appliance-portal.service")
    shell = Caller(11, 0, "session-1.scope")
    assert verbs.allowed(portal, "session-accept", helper)
    assert not verbs.allowed(shell, "session-accept", helper)
    assert verbs.allowed(shell, "session-list", helper)
    assert not verbs.allowed(Caller(12, 65534, None), "session-list", helper)


def test_unit_of_reads_the_cgroup_line():
    assert verbs.unit_of("0::/system.slice/appliance-portal.service\n") == "appliance-portal.service"
    assert verbs.unit_of("0::/user.slice/user-0.slice/session-3.scope\n") is None


def test_a_hidden_caller_is_found_by_its_unit_s_cgroup_members():
    # The portal and the filter hold CAP_NET_BIND_SERVICE, which the helper lacks: their /proc
    # entries are invisible to it under ProtectProc=invisible, the cgroup tree is not.
    units = {"appliance-portal.service": "412\n4120\n", "appliance-filter.service": "41\n"}
    assert verbs.unit_by_membership(units, 41) == "appliance-filter.service"
    assert verbs.unit_by_membership(units, 4120) == "appliance-portal.service"
    assert verbs.unit_by_membership(units, 4) is None


def test_remaining_uses_boot_time_within_a_boot_and_caps_after_a_reboot():
    s = sessions.Session("02:00:00:00:00:01", "10.42.0.5", 1000.0, 1000.0 + 3600, "boot-a", 50.0 + 3600)
    same = sessions.Clock(wall=999_999.0, boot=50.0 + 600, boot_id="boot-a")  # wall clock jumped
    assert sessions.remaining(s, same, 3600) == 3000
    rebooted = sessions.Clock(wall=1000.0 + 1800, boot=5.0, boot_id="boot-b")
    assert sessions.remaining(s, rebooted, 3600) == 1800
    clock_behind = sessions.Clock(wall=0.0, boot=5.0, boot_id="boot-b")  # no RTC, no NTP yet
    assert sessions.remaining(s, clock_behind, 3600) == 3600  # capped: never longer than granted
    over = sessions.Clock(wall=1000.0 + 7200, boot=5.0, boot_id="boot-b")
    assert sessions.remaining(s, over, 3600) == 0


def test_sessions_persist_and_expire(tmp_path):
    db = sessions.open_sessions_db(tmp_path / "appliance.db")
    now = sessions.Clock(100.0, 10.0, "b")
    sessions.accept(db, "02:00:00:00:00:01", "10.42.0.5", ("fd42:ce::5",), now, 60)
    sessions.add_addresses(db, "02:00:00:00:00:01", ("fd42:ce::77",))
    again = sessions.open_sessions_db(tmp_path / "appliance.db")
    (s,) = sessions.all_sessions(again)
    assert s.addresses == ("10.42.0.5", "fd42:ce::5", "fd42:ce::77")
    assert sessions.by_address(again, "fd42:ce::77") == s
    assert sessions.expire(again, sessions.Clock(100.0, 30.0, "b"), 60) == []
    assert [x.mac for x in sessions.expire(again, sessions.Clock(100.0, 71.0, "b"), 60)] == [s.mac]
    assert sessions.all_sessions(again) == []


def test_nft_set_json_parses():
    text = json.dumps({"nftables": [{"metainfo": {}}, {"set": {"name": "accepted_v4", "elem": [
        {"elem": {"val": {"concat": ["02:00:00:00:00:09", "10.42.0.9"]}, "timeout": 60, "expires": 42}},
        {"elem": {"val": "203.0.113.5", "expires": "1h2m3s"}}, "198.51.100.7"]}}]})
    assert nft.parse_set(text) == [("02:00:00:00:00:09 . 10.42.0.9", 42), ("203.0.113.5", 3723),
                                   ("198.51.100.7", 0)]
    assert "delete element inet classroom accepted_v6 { 02:00:00:00:00:09 . fd42:ce::9 }" in \
        nft.delete_elements("02:00:00:00:00:09", ("10.42.0.9", "fd42:ce::9"))


def test_leases_and_neighbours_merge():
    neigh = leases.parse_neighbours(json.dumps([
        {"dst": "10.42.0.20", "dev": "wlan0", "lladdr": "02:AA:00:00:00:01", "state": ["REACHABLE"]},
        {"dst": "fd42:ce::1234", "lladdr": "02:aa:00:00:00:01", "state": ["STALE"]},
        {"dst": "fe80::1", "lladdr": "02:aa:00:00:00:01", "state": ["STALE"]},
        {"dst": "10.42.0.99", "state": ["FAILED"]},
    ]))
    assert neigh == [("10.42.0.20", "02:aa:00:00:00:01"), ("fd42:ce::1234", "02:aa:00:00:00:01")]
    lease = leases.parse_leases("1767225600 02:bb:00:00:00:02 10.42.0.21 phone2 01:02:bb\n"
                                "1767225600 02:aa:00:00:00:01 10.42.0.20 * *\n"
                                "duid 00:01:00:01\n")
    devices = leases.merge(neigh, lease)
    assert devices == [
        leases.Device("02:aa:00:00:00:01", ("10.42.0.20", "fd42:ce::1234"), ""),
        leases.Device("02:bb:00:00:00:02", ("10.42.0.21",), "phone2"),
    ]


OPEN = {"from_mac": "02:CE:00:00:00:21", "to_mac": "f0:18:98:00:00:10", "ports": "tcp:7000",
        "seconds": "600"}


@pytest.mark.parametrize(("args", "reason"), [
    ({"ports": ""}, "1-16 entries"),
    ({"ports": "tcp:7000,"}, "is not tcp:PORT"),
    ({"ports": "tcp: 7000"}, "is not tcp:PORT"),
    ({"ports": "icmp:1"}, "is not tcp:PORT"),
    ({"ports": "tcp:65536"}, "outside 1-65535"),
    ({"ports": "udp:0-10"}, "outside 1-65535"),
    ({"ports": "udp:10-9"}, "backwards"),
    ({"ports": "tcp:1\nflush ruleset"}, "is not tcp:PORT"),
    ({"ports": ",".join(["tcp:1"] * 17)}, "1-16 entries"),
    ({"seconds": "59"}, "seconds must be"),
    ({"seconds": "86401"}, "seconds must be"),
    ({"seconds": "\u0661\u0662\u0660"}, "seconds must be"),  # Arabic-Indic digits: isdigit()
    ({"from_mac": "02:ce:00:00:00:21 . 10.0.0.1"}, "from_mac is not a MAC"),
])
def test_open_service_arguments_are_strict(args, reason):
    raw = json.dumps({"verb": "open-service", "args": {**OPEN, **args}}).encode()
    with pytest.raises(Refused) as err:
        verbs.parse(raw)
    assert reason in err.value.reason


def test_open_service_arguments_are_normalised():
    req = verbs.parse(json.dumps({"verb": "open-service", "args": {
        **OPEN, "ports": "tcp:7000,udp:6000-6010,tcp:7000,udp:5-5", "seconds": "0600"}}).encode())
    assert req.args == {"from_mac": "02:ce:00:00:00:21", "to_mac": "f0:18:98:00:00:10",
                        "ports": "tcp:7000,udp:6000-6010,udp:5", "seconds": "600"}
    assert verbs.parse_ports("x", req.args["ports"]) == (("tcp", 7000, 7000), ("udp", 6000, 6010),
                                                         ("udp", 5, 5))


def test_share_elements_pair_both_directions_ipv4_only():
    fwd, rev = nft.share_pairs("02:ce:00:00:00:21", ("10.42.0.21", "fd42:ce::21"),
                               "f0:18:98:00:00:10", ("10.42.0.10",),
                               (("tcp", 7000, 7000), ("udp", 6000, 6010)))
    assert fwd == ("02:ce:00:00:00:21 . 10.42.0.21 . 10.42.0.10 . tcp . 7000",
                   "02:ce:00:00:00:21 . 10.42.0.21 . 10.42.0.10 . udp . 6000-6010")
    assert rev == ("f0:18:98:00:00:10 . 10.42.0.10 . 10.42.0.21 . tcp . 7000",
                   "f0:18:98:00:00:10 . 10.42.0.10 . 10.42.0.21 . udp . 6000-6010")
    script = nft.delete_share_elements(fwd, rev)
    # Added for a second first, so deleting what the kernel already expired succeeds.
    assert script.index("add element inet classroom share_fwd_v4") < \
        script.index("delete element inet classroom share_fwd_v4")
    assert f"delete element inet classroom share_rev_v4 {{ {rev[0]}, {rev[1]} }}" in script
    assert nft.delete_share_elements((), ()) == ""


def test_a_range_in_a_set_reads_back_as_nft_writes_it():
    text = json.dumps({"nftables": [{"set": {"name": "share_fwd_v4", "elem": [{"elem": {"val": {
        "concat": ["02:ce:00:00:00:21", "10.42.0.21", "10.42.0.10", "udp",
                   {"range": [6000, 6010]}]}, "expires": 30}}]}}]})
    assert nft.parse_set(text) == [("02:ce:00:00:00:21 . 10.42.0.21 . 10.42.0.10 . udp . 6000-6010",
                                    30)]


def test_shares_persist_and_expire_by_boot_time(tmp_path):
    db = sessions.open_sessions_db(tmp_path / "appliance.db")
    share = sessions.Share("02:ce:00:00:00:21", "f0:18:98:00:00:10", ("a . b",), ("c . d", "e"))
    sessions.put_share(db, share, sessions.Clock(100.0, 10.0, "b"), 60)
    assert sessions.get_share(db, share.from_mac, share.to_mac) == share
    assert sessions.expire_shares(db, sessions.Clock(100.0, 69.0, "b")) == []
    assert sessions.expire_shares(db, sessions.Clock(100.0, 70.0, "b")) == [share]
    assert sessions.get_share(db, share.from_mac, share.to_mac) is None
    sessions.put_share(db, share, sessions.Clock(100.0, 10.0, "b"), 60)
    # After a reboot the kernel's table is new: the opening is gone whatever the clock says.
    assert sessions.expire_shares(db, sessions.Clock(100.0, 1.0, "c")) == [share]


def test_one_canonical_address_form_for_leases_neighbours_and_portal_clients():
    # The filter and the portal look devices up by this form: a dual-stack listener's
    # ::ffff:a.b.c.d must find the IPv4 lease, a link-local neighbour its zone-less entry.
    assert leases.canonical_ip("::ffff:192.0.2.10") == "192.0.2.10"
    assert leases.canonical_ip("fe80::1%wlan0") == "fe80::1"
    assert leases.canonical_ip("2001:DB8::0:1") == "2001:db8::1"
    assert leases.canonical_ip("not an address") is None
