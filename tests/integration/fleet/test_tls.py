"""Traffic that leaves the building is TLS: the agent and ingest against a mutual-TLS Mosquitto
whose ACL confines every appliance to its own topics."""

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from appliance import config as config_module
from appliance.console.ingest import ingest_identity
from appliance.fleet import payloads, summaries
from appliance.fleet.broker import BrokerTls, Mosquitto
from appliance.fleet.pki import CertificateAuthority
from appliance.fleet.session import tls_context
from appliance.fleet.topics import Topics
from appliance.harness.process import wait_for, write_config
from appliance.store import open_db
from tests.integration.fleet.test_fleet_loop import agent_summary, count, fleet, state_of, wait_state

pytestmark = pytest.mark.integration


@pytest.fixture
def ca(tmp_path):
    return CertificateAuthority.open(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path, ca):
    server = ca.issue("broker", server_names=("localhost", "127.0.0.1"))
    acl = Topics().broker_acl(["console-ingest-console-1"])
    broker = Mosquitto(tmp_path / "tls-broker",
                       tls=BrokerTls(ca.ca_file, server.cert, server.key, acl=acl)).start()
    yield broker
    broker.stop()


def tls_config(path, ident, port, ca_file, pair, state_dir):
    return write_config(
        path,
        appliance={"id": ident, "state_dir": str(state_dir)},
        mqtt={"host": "localhost", "port": port, "tls": True, "keepalive": 2,
              "ca_file": str(ca_file), "cert_file": str(pair.cert), "key_file": str(pair.key)},
        agent={"interval": 0.5, "backoff_max": 1.0},
        console={"offline_after": 3.0},
    )


@pytest.fixture
def console_tls(tmp_path, ca, tls_broker):
    path = tls_config(tmp_path / "console.toml", "console-1", tls_broker.port, ca.ca_file,
                      ca.issue("console-ingest-console-1"), tmp_path / "console-state")
    assert ingest_identity(config_module.load(path)) == "console-ingest-console-1"
    return path


def test_agent_reports_over_mutual_tls(tmp_path, ca, tls_broker, console_tls, start):
    agent_cfg = tls_config(tmp_path / "agent.toml", "school-tls", tls_broker.port, ca.ca_file,
                           ca.issue("school-tls"), tmp_path / "agent-state")
    start(console_tls, "ingest")
    agent = start(agent_cfg, "agent")
    wait_state(console_tls, "school-tls", "online")
    # Acknowledgements pass the ACL too: the outbox empties.
    db = open_db(tmp_path / "agent-state" / "appliance.db")
    wait_for(lambda: count(db, "SELECT count(*) FROM health_outbox WHERE acked = 1") >= 2,
             what="acknowledged samples")
    # And so does its summary.
    wait_for(lambda: agent_summary(console_tls, "school-tls"), what="the agent's summary")
    agent.stop()
    wait_state(console_tls, "school-tls", "offline", reason="shutdown")


def test_an_appliance_cannot_speak_for_another(tmp_path, ca, tls_broker, console_tls, start):
    start(console_tls, "ingest")
    wait_for(lambda: fleet(console_tls)["ingest"]["broker_connected"], what="ingest connected")
    impostor_cert = ca.issue("school-a")
    cfg = config_module.load(tls_config(tmp_path / "a.toml", "school-a", tls_broker.port,
                                        ca.ca_file, impostor_cert, tmp_path / "a"))
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="school-b", protocol=mqtt.MQTTv5)
    client.tls_set_context(tls_context(cfg.mqtt))
    acks = {}
    client.on_publish = lambda c, u, mid, reason, props: acks.__setitem__(mid, reason)
    client.connect("localhost", tls_broker.port)
    client.loop_start()
    try:
        # school-a's certificate, asking to be school-b: the certificate decides who it is.
        other = client.publish(Topics().telemetry("school-b"),
                               payloads.telemetry(1, 1, {"cpu_pct": 99}), qos=1)
        own = client.publish(Topics().telemetry("school-a"),
                             payloads.telemetry(1, 1, {"cpu_pct": 5}), qos=1)
        body = summaries.build(1, True, {"agent": {"backlog": 0}}, summaries.specs())
        other_summary = client.publish(Topics().summary("school-b"), body, qos=1)
        own_summary = client.publish(Topics().summary("school-a"), body, qos=1)
        for info in (other, own, other_summary, own_summary):
            info.wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()
    assert acks[other.mid].value == 0x87  # Not authorized
    assert acks[own.mid].value == 0
    assert acks[other_summary.mid].value == 0x87
    assert acks[own_summary.mid].value == 0
    wait_for(lambda: agent_summary(console_tls, "school-a"), what="school-a's own summary")
    # Its own topic works; the other appliance never appears in the console.
    wait_state(console_tls, "school-a", "online")
    assert state_of(console_tls, "school-b") is None


def test_agent_with_a_foreign_certificate_is_refused_and_keeps_retrying(
        tmp_path, ca, tls_broker, console_tls, start):
    stranger = CertificateAuthority.open(tmp_path / "other-pki", name="Some other CA")
    agent_cfg = tls_config(tmp_path / "agent.toml", "school-x", tls_broker.port, ca.ca_file,
                           stranger.issue("school-x"), tmp_path / "agent-state")
    start(console_tls, "ingest")
    agent = start(agent_cfg, "agent")
    wait_for(lambda: "check the client certificate" in agent.output(), timeout=10,
             what="refused connection logged")
    # It keeps sampling into its outbox through several refused attempts, without crashing.
    db = open_db(tmp_path / "agent-state" / "appliance.db")
    wait_for(lambda: count(db, "SELECT count(*) FROM health_outbox") >= 4, what="sampling on")
    assert agent.running, agent.output()
    assert "Traceback" not in agent.output()
    assert state_of(console_tls, "school-x") is None
    assert "PRIVATE KEY" not in agent.output()


def test_ca_is_reused_and_keys_are_private(tmp_path):
    first = CertificateAuthority.open(tmp_path / "pki")
    again = CertificateAuthority.open(tmp_path / "pki")
    assert first.cert == again.cert
    pair = again.issue("school-z")
    for key in (tmp_path / "pki" / "ca.key", pair.key):
        assert key.stat().st_mode & 0o777 == 0o600
