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
