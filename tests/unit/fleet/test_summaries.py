"""Capability summaries: specs check themselves, messages are strict per section, unknown
sections are ignored, and the registry finds every provider."""

import json
import sys
import types

import pytest

from appliance.fleet import summaries
from appliance.fleet.payloads import MAX_PAYLOAD_BYTES, PayloadError
from appliance.fleet.summaries import Field, SummarySpec

SPEC = SummarySpec("network", "Network", (
    Field("clients", "Clients", "count", high=500),
    Field("sent", "Sent", "bytes"),
    Field("uptime", "Up for", "seconds"),
    Field("since", "Since", "timestamp"),
    Field("ssid", "SSID", "text"),
    Field("open", "Open", "bool"),
    Field("load", "Air time", "pct"),
))
KNOWN = {"network": SPEC}
GOOD = {"clients": 12, "sent": 1 << 40, "uptime": 3600.5, "since": 1_767_225_600_000,
        "ssid": "Room 7", "open": False, "load": 42.5}


def message(sections, **envelope):
    return json.dumps({"v": 1, "ts": 1_767_225_600_123, "clock": "synced", "s": sections,
                       **envelope}).encode()


def test_a_good_section_round_trips_in_spec_order():
    raw = summaries.build(5, True, {"network": GOOD}, KNOWN)
    parsed = summaries.parse(raw, KNOWN)
    assert parsed.ts == 5 and parsed.synced
    assert parsed.sections == {"network": GOOD}
    assert list(parsed.sections["network"]) == [f.key for f in SPEC.fields]
    assert not parsed.rejected and not parsed.unknown


def test_missing_fields_and_nulls_are_none():
    parsed = summaries.parse(message({"network": {"clients": None, "ssid": "x"}}), KNOWN)
    values = parsed.sections["network"]
    assert values["clients"] is None and values["ssid"] == "x" and values["open"] is None


@pytest.mark.parametrize(("values", "reason"), [
    ({"rogue": 1}, "unknown field 'rogue'"),
    ({"clients": "12"}, "bad count field 'clients'"),
    ({"clients": 1.5}, "bad count field 'clients'"),
    ({"clients": True}, "bad count field 'clients'"),
    ({"clients": 501}, "field 'clients' out of range"),
    ({"clients": -1}, "field 'clients' out of range"),
    ({"sent": 2**53}, "field 'sent' out of range"),
    ({"uptime": -0.5}, "field 'uptime' out of range"),
    ({"since": 1.5}, "bad timestamp field 'since'"),
    ({"ssid": 7}, "bad text field 'ssid'"),
    ({"ssid": "x" * 201}, "bad text field 'ssid'"),
    ({"open": 1}, "bad bool field 'open'"),
    ({"load": 100.1}, "field 'load' out of range"),
    ({"load": [1]}, "bad pct field 'load'"),
    ([1, 2], "not an object"),
])
def test_a_bad_section_is_rejected_and_the_others_kept(values, reason):
    other = SummarySpec("agent", "Agent", (Field("backlog", "Backlog", "count"),))
    parsed = summaries.parse(message({"network": values, "agent": {"backlog": 3}}),
                             {**KNOWN, "agent": other})
    assert parsed.rejected == {"network": reason}
    assert parsed.sections == {"agent": {"backlog": 3}}


def test_not_a_number_is_rejected():
    # Python's json reads NaN; the contract does not.
    raw = b'{"v":1,"ts":1,"clock":"synced","s":{"network":{"uptime":NaN}}}'
    assert summaries.parse(raw, KNOWN).rejected == {"network": "bad seconds field 'uptime'"}


def test_unknown_sections_are_ignored_so_newer_appliances_work():
    parsed = summaries.parse(message({"network": GOOD, "moodle": {"courses": 3}}), KNOWN)
    assert parsed.unknown == ("moodle",)
    assert list(parsed.sections) == ["network"] and not parsed.rejected


@pytest.mark.parametrize(("raw", "reason"), [
    (b"nope", "not JSON"),
    (b'{"v":2,"ts":1,"clock":"synced","s":{}}', "unsupported schema version"),
    (message({}, ts=-1), "bad or missing 'ts'"),
    (message({}, ts="1"), "bad or missing 'ts'"),
    (message({}, clock="maybe"), "bad or missing 'clock'"),
    (message([]), "bad or missing 's'"),
    (message({f"s{i}": {} for i in range(33)}), "bad or missing 's'"),
    (b'{"v":1,"ts":1,"clock":"synced","s":{"network":{"ssid":"' + b"x" * MAX_PAYLOAD_BYTES + b'"}}}',
     "too large"),
])
def test_a_bad_envelope_rejects_the_message(raw, reason):
    with pytest.raises(PayloadError) as exc:
        summaries.parse(raw, KNOWN)
    assert exc.value.reason == reason


def test_unsynced_clock_is_carried():
    parsed = summaries.parse(summaries.build(5, False, {"network": {}}, KNOWN), KNOWN)
    assert parsed.synced is False


def test_build_refuses_what_parse_would_reject():
    with pytest.raises(PayloadError, match="unknown field"):
        summaries.build(1, True, {"network": {"rogue": 1}}, KNOWN)


@pytest.mark.parametrize("make", [
    lambda: Field("Bad Key", "x", "count"),
    lambda: Field("k", "x", "colour"),
    lambda: Field("k", "x", "text", high=3),
    lambda: Field("k", "x", "count", low=5, high=1),
    lambda: SummarySpec("Net-work", "x", (Field("k", "x", "count"),)),
    lambda: SummarySpec("net", "x", (Field("k", "x", "count"), Field("k", "y", "text"))),
    lambda: SummarySpec("net", "x", ()),
])
def test_a_malformed_spec_fails_where_it_is_declared(make):
    with pytest.raises(ValueError):
        make()


def test_the_registry_yields_every_capability_summary():
    providers = summaries.providers()
    assert providers[0].spec.name == "agent"
    assert "devices" in [p.spec.name for p in providers]
    assert "filter" in [p.spec.name for p in providers]
    assert "network" in [p.spec.name for p in providers]
    assert "backlog" in [f.key for f in summaries.specs()["agent"].fields]


def test_a_module_without_a_spec_is_refused(monkeypatch):
    module = types.ModuleType("appliance_test_nosummary")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    with pytest.raises(TypeError, match="must define SUMMARY"):
        summaries.providers((module.__name__,))
