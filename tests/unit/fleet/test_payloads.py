import json

import pytest

from appliance.fleet import payloads
from appliance.fleet.payloads import PayloadError
from appliance.fleet.topics import Topics


def test_birth_and_will_round_trip():
    status = payloads.parse_status(payloads.birth(7, 1000, "0.1.0", "School A", 60.0))
    assert (status.state, status.session, status.name, status.interval) == ("online", 7, "School A", 60.0)
    will = payloads.parse_status(payloads.will(7))
    assert (will.state, will.reason, will.session) == ("offline", "lwt", 7)


def test_telemetry_round_trip_drops_missing_metrics():
    raw = payloads.telemetry(3, 1234, {"cpu_pct": 12.5, "temp_c": None, "mem_pct": 40})
    sample = payloads.parse_telemetry(raw)
    assert sample.seq == 3 and sample.ts == 1234
    assert sample.metrics == {"cpu_pct": 12.5, "mem_pct": 40.0}


def test_unknown_metrics_are_ignored_for_forward_compatibility():
    raw = json.dumps({"v": 1, "seq": 1, "ts": 1, "m": {"cpu_pct": 1, "fan_rpm": 3000}}).encode()
    assert payloads.parse_telemetry(raw).metrics == {"cpu_pct": 1.0}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'{"v":2,"seq":1,"ts":1,"m":{}}', "unsupported schema version"),
        (b'{"v":1,"ts":1,"m":{}}', "bad or missing 'seq'"),
        (b'{"v":1,"seq":-1,"ts":1,"m":{}}', "bad or missing 'seq'"),
        (b'{"v":1,"seq":true,"ts":1,"m":{}}', "bad or missing 'seq'"),
        (b'{"v":1,"seq":1,"ts":1,"m":[]}', "bad or missing 'm'"),
        (b'{"v":1,"seq":1,"ts":1,"m":{"cpu_pct":"high"}}', "bad metric 'cpu_pct'"),
        (b'{"v":1,"seq":1,"ts":1,"m":{"cpu_pct":NaN}}', "bad metric 'cpu_pct'"),
        (b'{"v":1,"seq":1,"ts":1,"m":{"cpu_pct":250}}', "metric 'cpu_pct' out of range"),
        (b"{" * 70000, "too large"),
    ],
)
def test_malformed_telemetry_is_rejected_with_a_reason(raw, reason):
    with pytest.raises(PayloadError) as err:
        payloads.parse_telemetry(raw)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "raw",
    [
        b'{"v":1,"state":"sleepy","session":1}',
        b'{"v":1,"state":"online"}',
        b'{"v":1,"state":"online","session":1,"name":5}',
        b'{"v":1,"state":"online","session":1,"interval":0}',
    ],
)
def test_malformed_status_is_rejected(raw):
    with pytest.raises(PayloadError):
        payloads.parse_status(raw)


def test_topics_are_built_and_parsed_in_one_place():
    t = Topics("edge/v1")
    assert t.status("pi-1") == "edge/v1/dev/pi-1/status"
    assert t.parse(t.telemetry("pi-1")) == ("pi-1", "tele")
    assert t.parse("edge/v1/dev/pi-1") is None
    assert t.parse("other/v1/dev/pi-1/tele") is None
    assert t.all_devices() == "edge/v1/dev/+/#"


def test_acks_compress_to_ranges_and_round_trip():
    [raw] = payloads.acks([5, 1, 2, 3, 9, 3])
    assert json.loads(raw)["seqs"] == [[1, 3], [5, 5], [9, 9]]
    assert payloads.parse_ack(raw) == [(1, 3), (5, 5), (9, 9)]


@pytest.mark.parametrize("raw", [
    b'{"v":1}', b'{"v":1,"seqs":[[3,1]]}', b'{"v":1,"seqs":[[1]]}', b'{"v":1,"seqs":[["a",2]]}',
    b'{"v":1,"seqs":[[-1,2]]}', b'{"v":1,"seqs":[[true,2]]}',
    b'{"v":1,"seqs":' + json.dumps([[i, i] for i in range(0, 2000, 2)]).encode() + b"}",
])
def test_malformed_acks_are_rejected(raw):
    with pytest.raises(PayloadError):
        payloads.parse_ack(raw)


def test_many_gaps_are_acknowledged_in_several_messages_each_accepted():
    messages = payloads.acks(list(range(0, 3000, 2)))  # 1500 single-sample ranges
    assert len(messages) == 3
    assert sum(len(payloads.parse_ack(m)) for m in messages) == 1500


def test_telemetry_carries_the_clock_flag_only_when_unsynced():
    synced = payloads.telemetry(1, 1234, {"cpu_pct": 1.0})
    assert b"clock" not in synced  # a synced sample is what older consoles already parse
    assert payloads.parse_telemetry(synced).synced is True
    flagged = payloads.parse_telemetry(payloads.telemetry(1, 1234, {"cpu_pct": 1.0}, synced=False))
    assert flagged.synced is False and flagged.metrics == {"cpu_pct": 1.0}


def test_old_telemetry_without_clock_is_accepted_as_synced():
    raw = b'{"v":1,"seq":9,"ts":5,"m":{"cpu_pct":2}}'
    assert payloads.parse_telemetry(raw).synced is True


@pytest.mark.parametrize("clock", ['"later"', "true", "0", '""'])
def test_bad_clock_flag_is_rejected(clock):
    raw = f'{{"v":1,"seq":9,"ts":5,"m":{{}},"clock":{clock}}}'.encode()
    with pytest.raises(PayloadError, match="bad 'clock'"):
        payloads.parse_telemetry(raw)


def test_summary_topic_is_built_and_allowed_for_the_device_only():
    topics = Topics()
    assert topics.summary("pi-1") == "edge/v1/dev/pi-1/summary"
    assert topics.parse(topics.summary("pi-1")) == ("pi-1", "summary")
    acl = topics.broker_acl(["console-ingest-x"])
    assert "pattern write edge/v1/dev/%u/summary" in acl.splitlines()
