"""The fleet loop against a real Mosquitto: agent -> broker -> ingest -> console database."""

from __future__ import annotations

import signal
import sqlite3

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from appliance import config as config_module
from appliance.console import records
from appliance.console.schema import MIGRATIONS
from appliance.fleet import summaries
from appliance.harness.process import wait_for, write_config
from appliance.store import migrate, open_db

pytestmark = pytest.mark.integration


def fleet(console_config):
    cfg = config_module.load(console_config)
    db = open_db(cfg.console_database_path)
    migrate(db, "console", MIGRATIONS)  # the test may look before ingest has started
    try:
        snap = records.snapshot(db, fallback_silent_after=cfg.console.offline_after)
    finally:
        db.conn.close()
    return snap


def device(console_config, ident):
    return next((d for d in fleet(console_config)["devices"] if d["id"] == ident), None)


def state_of(console_config, ident):
    d = device(console_config, ident)
    return (d["state"], d["reason"]) if d else None


def wait_state(console_config, ident, state, timeout=15.0, reason=None):
    def check():
        s = state_of(console_config, ident)
        return s is not None and s[0] == state and (reason is None or s[1] == reason)

    wait_for(check, timeout=timeout, what=f"{ident} {state} ({reason or 'any reason'}); "
             f"last seen {state_of(console_config, ident)}")


def count(db, sql):
    try:
        return db.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # the agent has not created its tables yet
        return 0


def agent_db(appliance_cfg_path):
    cfg = config_module.load(appliance_cfg_path)
    return open_db(cfg.database_path)


def test_agent_reports_health_and_presence(appliance_config, console_config, start):
    start(console_config, "ingest")
    cfg = appliance_config("school-a")
    agent = start(cfg, "agent")
    wait_state(console_config, "school-a", "online")
    d = wait_for(lambda: (x := device(console_config, "school-a")) and x["health"]["cpu_pct"] is not None
                 and len(x["history"]) >= 1 and x, what="health")
    assert 0 <= d["health"]["mem_pct"] <= 100
    assert d["health"]["uptime_s"] > 0
    assert d["name"] == "School A"

    # A clean stop says goodbye: offline at once, reason "agent stopped".
    assert agent.stop() == 0
    wait_state(console_config, "school-a", "offline", reason="shutdown", timeout=5)

    # Started again: online, with a higher session counter.
    start(cfg, "agent")
    wait_state(console_config, "school-a", "online")


def test_killed_agent_is_marked_offline_by_its_last_will(appliance_config, console_config, start):
    start(console_config, "ingest")
    cfg = appliance_config("school-b")
    agent = start(cfg, "agent")
    wait_state(console_config, "school-b", "online")
    agent.stop(signal.SIGKILL)
    # keepalive is 2 s in tests; the kernel closes the socket, so the will comes at once.
    wait_state(console_config, "school-b", "offline", reason="lwt", timeout=5)
    start(cfg, "agent")
    wait_state(console_config, "school-b", "online")


def test_agent_started_without_broker_keeps_sampling_and_catches_up(
        broker, appliance_config, console_config, start):
    broker.stop()
    cfg = appliance_config("school-c", interval=0.5)
    agent = start(cfg, "agent")
    db = agent_db(cfg)
    wait_for(lambda: count(db, "SELECT count(*) FROM health_outbox") >= 5,
             what="samples while the broker is down")
    assert agent.running
    assert count(db, "SELECT count(*) FROM health_outbox WHERE acked = 1") == 0
    taken_offline = count(db, "SELECT max(seq) FROM health_outbox")
    # Ingest and agent race to reconnect: samples the broker took before ingest subscribed are
    # lost in transit, so they stay unacknowledged and are sent again.
    start(console_config, "ingest")
    broker.start()
    wait_state(console_config, "school-c", "online", timeout=20)
    wait_for(lambda: count(db, f"SELECT count(*) FROM health_outbox WHERE acked = 0 "
                               f"AND seq <= {taken_offline}") == 0,
             timeout=30, what="backlog acknowledged by the console")
    console_db = open_db(config_module.load(console_config).console_database_path)
    stored = console_db.execute("SELECT count(*) FROM health WHERE device_id = 'school-c'").fetchone()[0]
    assert stored >= taken_offline
    assert "unreachable (connection refused)" in agent.output()


def test_broker_restart_shows_offline_then_online(broker, appliance_config, console_config, start):
    start(console_config, "ingest")
    start(appliance_config("school-d"), "agent")
    wait_state(console_config, "school-d", "online")
    broker.stop()
    wait_state(console_config, "school-d", "offline", reason="broker", timeout=10)
    assert fleet(console_config)["ingest"]["broker_connected"] is False
    broker.start()
    # Both the agent and the ingest worker reconnect on their own (jittered, capped at 1 s here).
    wait_state(console_config, "school-d", "online", timeout=20)


def test_malformed_payloads_are_rejected_counted_and_ingest_goes_on(
        broker, appliance_config, console_config, start):
    ingest = start(console_config, "ingest")
    wait_for(lambda: fleet(console_config)["ingest"]["broker_connected"], what="ingest connected")
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-garbage", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        for payload in (b"\x00\xff garbage", b"[]", b'{"v":1,"seq":1,"ts":1,"m":{"cpu_pct":1e9}}'):
            for _ in range(3):
                pub.publish("edge/v1/dev/evil-1/tele", payload, qos=1).wait_for_publish(5)
        pub.publish("edge/v1/dev/evil-1/status", b'{"v":1,"state":"x"}', qos=1).wait_for_publish(5)
    finally:
        pub.loop_stop()
        pub.disconnect()
    wait_for(lambda: fleet(console_config)["ingest"]["rejected_messages"] == 10, what="10 rejects")
    log = ingest.output()
    assert log.count("rejected tele message from evil-1: not JSON") == 1
    assert log.count("out of range") == 1
    # Ingest is still alive and stores good messages.
    start(appliance_config("school-e"), "agent")
    wait_state(console_config, "school-e", "online")
    assert ingest.running


def test_bad_config_stops_the_service_with_a_clear_error(tmp_path, start):
    bad = tmp_path / "bad.toml"
    bad.write_text('[appliance]\nid = "x"\n[mqtt]\nport = 99999\n')
    proc = start(bad, "agent")
    assert proc.proc.wait(15) == 2  # the status systemd units do not restart
    assert f"{bad}: mqtt.port: must be a TCP port" in proc.output()
    assert "Traceback" not in proc.output()
    missing = start(tmp_path / "missing.toml", "portal")
    assert missing.proc.wait(15) == 2
    assert "no such file" in missing.output()


def test_unsafe_or_missing_secret_files_stop_the_service_with_a_clear_error(tmp_path, start):
    password = tmp_path / "mqtt-password"
    password.write_text("s3cret-password\n")
    password.chmod(0o644)
    cfg = write_config(tmp_path / "a.toml", appliance={"id": "x", "state_dir": str(tmp_path / "s")},
                       mqtt={"tls": False, "username": "x", "password_file": str(password)})
    proc = start(cfg, "agent")
    assert proc.proc.wait(15) == 2
    assert f"{password}: mqtt.password_file: secret file is readable by others" in proc.output()
    assert "s3cret" not in proc.output() and "Traceback" not in proc.output()

    cfg = write_config(tmp_path / "b.toml", appliance={"id": "x", "state_dir": str(tmp_path / "s")},
                       mqtt={"tls": True, "ca_file": str(tmp_path / "no-ca.crt")})
    proc = start(cfg, "ingest")
    assert proc.proc.wait(15) == 2
    assert "mqtt.ca_file: cannot load CA certificate" in proc.output()
    assert "Traceback" not in proc.output()


def test_session_counter_survives_restarts(appliance_config, console_config, start):
    start(console_config, "ingest")
    cfg = appliance_config("school-f")
    sessions = []
    for _ in range(2):
        agent = start(cfg, "agent")
        wait_state(console_config, "school-f", "online")
        agent.stop()
        db = agent_db(cfg)
        sessions.append(db.execute("SELECT value FROM agent_state WHERE key = 'session'").fetchone()[0])
        db.conn.close()
    # The counter continues from the stored value: a Will from the first run can never look
    # newer than the second run's birth.
    assert 1 <= sessions[0] < sessions[1]


def agent_summary(console_config, ident):
    cfg = config_module.load(console_config)
    db = open_db(cfg.console_database_path)
    migrate(db, "console", MIGRATIONS)
    try:
        entries = records.device_summaries(db, ident, summaries.specs()) or []
    finally:
        db.conn.close()
    entry = next((e for e in entries if e["name"] == "agent"), None)
    if entry is None or entry["received_at"] is None:
        return None
    return {f["key"]: f["value"] for f in entry["fields"]} | {"_synced": entry["synced"]}


def test_agent_summary_reaches_the_console_with_its_backlog(
        broker, appliance_config, console_config, start):
    # Samples pile up while the broker is away: the first summary after the connect shows them.
    broker.stop()
    cfg = appliance_config("school-g", interval=0.5)
    start(cfg, "agent")
    db = agent_db(cfg)
    wait_for(lambda: count(db, "SELECT count(*) FROM health_outbox") >= 6, what="a backlog")
    start(console_config, "ingest")
    broker.start()
    wait_state(console_config, "school-g", "online", timeout=20)
    first = wait_for(lambda: agent_summary(console_config, "school-g"), timeout=20,
                     what="the agent's summary in console.db")
    assert first["clock"] == "synced" and first["_synced"] is True  # the host's clock (conftest)
    assert first["backlog"] >= 1 and first["oldest_unacked"] is not None
    # Then the backlog drains and the summary follows: acknowledged, confirmed just now.
    drained = wait_for(
        lambda: (s := agent_summary(console_config, "school-g")) and s["last_ack"] is not None
        and s["backlog"] <= 2 and s, timeout=30, what="a drained backlog in the summary")
    assert drained["unsynced"] == 0
    last_ack = db.execute("SELECT value FROM agent_state WHERE key = 'last_ack_ms'").fetchone()[0]
    assert abs(last_ack - drained["last_ack"]) < 60_000
