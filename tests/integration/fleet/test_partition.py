"""A classroom whose uplink silently dies: the agent runs in its own network namespace, joined to
the console's namespace by a veth pair, and nftables inside the Pi's namespace drops the traffic.

Nothing closes the TCP connection, so only keepalives can notice: the broker publishes the
agent's Last Will after 1.5 x keepalive, and the agent reconnects on its own once healed.
"""

import pytest

from appliance.fleet.broker import Mosquitto
from appliance.harness.process import wait_for, write_config
from tests.integration.fleet.test_fleet_loop import state_of, wait_state

pytestmark = pytest.mark.integration

CONSOLE_SIDE = "192.0.2.1"
PI_SIDE = "192.0.2.2"

PARTITION = f"""
table inet partition {{
    chain out {{
        type filter hook output priority 0; policy accept;
        ip daddr {CONSOLE_SIDE} drop
    }}
    chain in {{
        type filter hook input priority 0; policy accept;
        ip saddr {CONSOLE_SIDE} drop
    }}
}}
"""


@pytest.fixture
def classroom(network, tmp_path):
    """Two namespaces: the console side (broker, ingest) and the Pi, joined by a veth pair."""
    console = network.add("console")
    pi = network.add("pi")
    network.link("console", "pi", f"{CONSOLE_SIDE}/24", f"{PI_SIDE}/24")
    broker = Mosquitto(tmp_path / "broker", host=CONSOLE_SIDE, netns=console.name).start()
    yield console, pi, broker
    broker.stop()


def test_silent_partition_is_detected_by_keepalive_and_heals(classroom, tmp_path, start):
    console, pi, broker = classroom
    mqtt = {"host": CONSOLE_SIDE, "port": broker.port, "tls": False, "keepalive": 2}
    console_cfg = write_config(
        tmp_path / "console" / "console.toml",
        appliance={"id": "console", "state_dir": str(tmp_path / "console" / "state")},
        mqtt=mqtt, console={"offline_after": 30.0},
    )
    agent_cfg = write_config(
        tmp_path / "pi" / "appliance.toml",
        appliance={"id": "school-far", "state_dir": str(tmp_path / "pi" / "state")},
        mqtt=mqtt, agent={"interval": 1.0, "backoff_max": 1.0},
    )
    start(console_cfg, "ingest", netns=console.name)
    agent = start(agent_cfg, "agent", netns=pi.name)
    wait_state(console_cfg, "school-far", "online", timeout=20)

    pi.run("nft", "-f", "-", input=PARTITION)
    # Broker side: no FIN, no RST; the Last Will comes after 1.5 x keepalive (3 s), not at once.
    wait_state(console_cfg, "school-far", "offline", reason="lwt", timeout=10)
    assert agent.running

    pi.run("nft", "delete", "table", "inet", "partition")
    wait_state(console_cfg, "school-far", "online", timeout=30)
    assert state_of(console_cfg, "school-far") == ("online", None)
    wait_for(lambda: "connected to" in agent.output(), what="agent reconnect logged")
