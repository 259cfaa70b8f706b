import json
import logging

from appliance.console import records
from appliance.console.ingest import Ingest
from appliance.fleet import payloads
from appliance.store import open_db


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def make(cfg):
    clock = Clock()
    db = open_db(cfg.console_database_path)
    ingest = Ingest(cfg, db, clock=clock)
    records.set_ingest_state(db, heartbeat=clock.t, broker_connected=1)
    return ingest, db, clock


def device(db, ident):
    snap = records.snapshot(db, now=1000.5)
    return next(d for d in snap["devices"] if d["id"] == ident)


def test_birth_then_telemetry_shows_live_health(cfg):
    ingest, db, _ = make(cfg)
    assert ingest.handle("edge/v1/dev/pi-1/status", payloads.birth(1, 1, "0.1.0", "Pi one", 2.0))
    assert ingest.handle("edge/v1/dev/pi-1/tele", payloads.telemetry(1, 999_000, {"cpu_pct": 12.0}))
    d = device(db, "pi-1")
    assert d["state"] == "online" and d["name"] == "Pi one"
    assert d["health"]["cpu_pct"] == 12.0
    assert d["history"][0][1] == 12.0


def test_older_sample_does_not_replace_current_health(cfg):
    ingest, db, _ = make(cfg)
    ingest.handle("edge/v1/dev/pi-1/tele", payloads.telemetry(2, 999_000, {"cpu_pct": 50.0}))
    ingest.handle("edge/v1/dev/pi-1/tele", payloads.telemetry(1, 998_000, {"cpu_pct": 10.0}))
    assert device(db, "pi-1")["health"]["cpu_pct"] == 50.0
    assert db.execute("SELECT count(*) FROM health").fetchone()[0] == 2


def test_duplicate_sample_is_stored_once(cfg):
    ingest, db, _ = make(cfg)
    for _ in range(3):
        ingest.handle("edge/v1/dev/pi-1/tele", payloads.telemetry(1, 999_000, {"cpu_pct": 5.0}))
    assert db.execute("SELECT count(*) FROM health").fetchone()[0] == 1


def test_malformed_messages_are_counted_logged_once_and_ingest_goes_on(cfg, caplog):
    ingest, db, _ = make(cfg)
    caplog.set_level(logging.WARNING, logger="appliance.console.ingest")
    for _ in range(5):
        assert not ingest.handle("edge/v1/dev/pi-1/tele", b"\x00garbage")
    assert not ingest.handle("edge/v1/dev/BAD ID/tele", b"{}")
    assert not ingest.handle("edge/v1/dev/pi-1/whatever", b"{}")
    assert ingest.handle("edge/v1/dev/pi-1/tele", payloads.telemetry(1, 999_000, {"cpu_pct": 1.0}))
    rows = {(r["device_id"], r["reason"]): r["count"] for r in db.query("SELECT * FROM ingest_rejects")}
    assert rows == {("pi-1", "not JSON"): 5, ("(invalid)", "invalid device id"): 1,
                    ("pi-1", "unknown message kind"): 1}
    warnings = [r for r in caplog.records if "not JSON" in r.getMessage()]
    assert len(warnings) == 1
    assert records.snapshot(db, now=1000.5)["ingest"]["rejected_messages"] == 7


def test_status_from_a_stale_session_is_ignored(cfg):
    ingest, db, _ = make(cfg)
    ingest.handle("edge/v1/dev/pi-1/status", payloads.birth(5, 1, "0.1.0", "Pi", 2.0))
    assert not ingest.handle("edge/v1/dev/pi-1/status", payloads.will(4))
    assert device(db, "pi-1")["state"] == "online"
    ingest.handle("edge/v1/dev/pi-1/status", payloads.will(5))
    d = device(db, "pi-1")
    assert (d["state"], d["reason_text"]) == ("offline", "connection lost")


def test_history_is_pruned_past_retention(cfg):
    ingest, db, clock = make(cfg)
    clock.t = 90 * 86400.0
    old_ms = int((clock.t - (cfg.console.history_days + 1) * 86400) * 1000)
    ingest.handle("edge/v1/dev/pi-1/tele", payloads.telemetry(1, old_ms, {"cpu_pct": 1.0}))
    ingest.handle("edge/v1/dev/pi-1/tele", payloads.telemetry(2, int(clock.t * 1000), {"cpu_pct": 1.0}))
    assert records.prune_history(db, cfg.console.history_days, clock.t) == 1


def test_stored_samples_are_queued_for_acknowledgement_rejected_ones_are_not(cfg):
    ingest, _, _ = make(cfg)
    ingest.handle("edge/v1/dev/pi-1/tele", payloads.telemetry(7, 999_000, {"cpu_pct": 1.0}))
    ingest.handle("edge/v1/dev/pi-1/tele", payloads.telemetry(8, 999_500, {"cpu_pct": 1.0}))
    ingest.handle("edge/v1/dev/pi-2/tele", b"junk")
    assert ingest.pending_acks == {"pi-1": [7, 8]}
    assert not ingest.handle("edge/v1/dev/pi-1/ack", payloads.acks([7])[0])
    assert ingest.rejected == 1


def test_fleet_history_reads_one_key_range_per_device_not_the_whole_table(cfg):
    _, db, _ = make(cfg)
    plans = []
    original = db.execute

    def explain(sql, params=None):
        if "FROM devices d CROSS JOIN health" in sql:
            plans.extend(r[3] for r in original("EXPLAIN QUERY PLAN " + sql, params).fetchall())
        return original(sql, params)

    db.execute = explain
    records.snapshot(db, now=1000.5)
    assert any("USING PRIMARY KEY (device_id=? AND ts>?)" in p for p in plans), plans
    assert not any(p.startswith("SCAN h") for p in plans), plans


# -- summaries and clock flags ---------------------------------------------------------------

def summary(sections, ts=999_000, clock="synced"):
    return json.dumps({"v": 1, "ts": ts, "clock": clock, "s": sections}).encode()


def stored_summaries(db, ident="pi-1"):
    return {row[0]: (json.loads(row[1]), row[2]) for row in db.execute(
        "SELECT section, data, synced FROM device_summaries WHERE device_id = ?", [ident])}


AGENT = {"backlog": 4, "oldest_unacked": 998_000, "last_ack": 997_000, "unsynced": 0,
         "clock": "synced"}


def test_the_latest_summary_per_device_and_section_is_kept(cfg):
    ingest, db, clock = make(cfg)
    assert ingest.handle("edge/v1/dev/pi-1/summary", summary({"agent": AGENT}))
    clock.t += 5
    assert ingest.handle("edge/v1/dev/pi-1/summary",
                         summary({"agent": {**AGENT, "backlog": 0}}, ts=1, clock="unsynced"))
    # The latest by arrival, even with an earlier (untrusted) device time.
    assert stored_summaries(db) == {"agent": ({**AGENT, "backlog": 0}, 0)}
    assert db.execute("SELECT count(*) FROM device_summaries").fetchone()[0] == 1
    # A summary is a sign of life like a sample: the device exists and was heard just now.
    assert device(db, "pi-1")["last_seen"] == clock.t


def test_unknown_summary_sections_are_ignored_counted_and_logged_once(cfg, caplog):
    ingest, db, _ = make(cfg)
    caplog.set_level(logging.INFO, logger="appliance.console.ingest")
    for _ in range(3):
        assert ingest.handle("edge/v1/dev/pi-1/summary",
                             summary({"agent": AGENT, "widgets": {"courses": 3}}))
    assert list(stored_summaries(db)) == ["agent"]
    assert ingest.ignored_sections[("pi-1", "widgets")] == 3
    assert caplog.text.count("ignoring summary section 'widgets'") == 1
    assert records.snapshot(db, now=1000.5)["ingest"]["rejected_messages"] == 0
    # Only unknown sections: nothing stored, nothing rejected.
    assert not ingest.handle("edge/v1/dev/pi-2/summary", summary({"widgets": {}}))
    assert ingest.rejected == 0


def test_a_bad_summary_section_is_rejected_and_counted(cfg):
    ingest, db, _ = make(cfg)
    assert not ingest.handle("edge/v1/dev/pi-1/summary",
                             summary({"agent": {**AGENT, "backlog": -1}}))
    assert not ingest.handle("edge/v1/dev/pi-1/summary", b'{"v":1,"ts":1,"s":{}}')
    reasons = dict(db.execute("SELECT reason, count FROM ingest_rejects WHERE kind = 'summary'"))
    assert reasons == {"agent: field 'backlog' out of range": 1, "bad or missing 'clock'": 1}
    assert stored_summaries(db) == {}


def test_unsynced_samples_are_kept_flagged_but_never_current_nor_charted(cfg):
    ingest, db, _ = make(cfg)
    ingest.handle("edge/v1/dev/pi-1/tele", payloads.telemetry(1, 999_000, {"cpu_pct": 10.0}))
    assert ingest.handle("edge/v1/dev/pi-1/tele",
                         payloads.telemetry(2, 999_500, {"cpu_pct": 90.0}, synced=False))
    assert ingest.pending_acks == {"pi-1": [1, 2]}  # stored, so acknowledged
    d = device(db, "pi-1")
    assert d["health"]["cpu_pct"] == 10.0 and d["health"]["ts"] == 999_000
    assert d["history"][0][1] == 10.0
    flags = db.execute("SELECT ts, unsynced FROM health ORDER BY ts").fetchall()
    assert flags == [(999_000, 0), (999_500, 1)]
    history = records.device_history(db, "pi-1", 1000.0, 1)
    assert [p[1] for p in history["points"]] == [10.0] and history["unsynced"] == 1
