"""Traffic that leaves the building is TLS: the agent and ingest against a mutual-TLS Mosquitto."""

import pytest

from appliance.fleet.broker import BrokerTls, Mosquitto
from appliance.store import open_db
from tests.harness.pki import Pki
from tests.harness.services import wait_for, write_config
from tests.integration.test_fleet_loop import count, state_of, wait_state

pytestmark = pytest.mark.integration


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path, pki):
    server = pki.pair("localhost", server=True)
    broker = Mosquitto(tmp_path / "tls-broker",
                       tls=BrokerTls(pki.ca_file, server.cert, server.key)).start()
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


def test_agent_reports_over_mutual_tls(tmp_path, pki, tls_broker, start):
    console_cfg = tls_config(tmp_path / "console.toml", "console-1", tls_broker.port, pki.ca_file,
                             pki.pair("console-ingest-console-1"), tmp_path / "console-state")
    agent_cfg = tls_config(tmp_path / "agent.toml", "school-tls", tls_broker.port, pki.ca_file,
                           pki.pair("school-tls"), tmp_path / "agent-state")
    start(console_cfg, "ingest")
    agent = start(agent_cfg, "agent")
    wait_state(console_cfg, "school-tls", "online")
    agent.stop()
    wait_state(console_cfg, "school-tls", "offline", reason="shutdown")


def test_agent_with_a_foreign_certificate_is_refused_and_keeps_retrying(tmp_path, pki, tls_broker, start):
    console_cfg = tls_config(tmp_path / "console.toml", "console-1", tls_broker.port, pki.ca_file,
                             pki.pair("console-ingest-console-1"), tmp_path / "console-state")
    stranger = Pki(tmp_path / "other-pki", name="other-ca")
    agent_cfg = tls_config(tmp_path / "agent.toml", "school-x", tls_broker.port, pki.ca_file,
                           stranger.pair("school-x"), tmp_path / "agent-state")
    start(console_cfg, "ingest")
    agent = start(agent_cfg, "agent")
    wait_for(lambda: "check the client certificate" in agent.output(), timeout=10,
             what="refused connection logged")
    # It keeps sampling into its outbox through several refused attempts, without crashing.
    db = open_db(tmp_path / "agent-state" / "appliance.db")
    wait_for(lambda: count(db, "SELECT count(*) FROM health_outbox") >= 4, what="sampling on")
    assert agent.running, agent.output()
    assert "Traceback" not in agent.output()
    assert state_of(console_cfg, "school-x") is None
    # The private key never ends up in the log.
    assert "PRIVATE KEY" not in agent.output()
