"""The agent's outbox without a broker: sampling, acknowledgements, retention."""

from appliance.clock import ClockTrust
from appliance.fleet import payloads
from appliance.fleet.agent import Agent
from appliance.store import open_db


def make_agent(cfg, clock=None, **kwargs):
    metrics = {"cpu_pct": 5.0, "mem_pct": 50.0, "disk_pct": 10.0, "temp_c": None,
               "load1": 0.1, "uptime_s": 100.0}
    wall = clock or (lambda: 1_800_000_000.0)
    kwargs.setdefault("clock", ClockTrust(cfg.appliance.state_dir, now=wall, sync_probe=lambda: True))
    return Agent(cfg, open_db(cfg.database_path), collect=lambda: dict(metrics),
                 wall_clock=wall, **kwargs)


def test_samples_are_kept_until_acknowledged(cfg):
    agent = make_agent(cfg)
    seqs = [agent.sample() for _ in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    stored = agent.db.execute("SELECT payload FROM health_outbox WHERE seq = 3").fetchone()[0]
    sample = payloads.parse_telemetry(stored)
    assert sample.seq == 3 and sample.metrics["cpu_pct"] == 5.0 and "temp_c" not in sample.metrics
    agent.acknowledge([(1, 2), (4, 4)])
    assert agent.unacknowledged() == 2
    agent.acknowledge([(1, 5)])
    assert agent.unacknowledged() == 0


def test_nothing_is_sent_while_disconnected(cfg):
    agent = make_agent(cfg)
    agent.sample()
    assert agent.send_pending() == 0


def test_retention_bounds_the_outbox(cfg):
    now = [1_800_000_000.0]
    agent = make_agent(cfg, clock=lambda: now[0])
    agent.sample()
    now[0] += cfg.agent.retention_hours * 3600 + 1
    agent.sample()
    agent.prune()
    assert [r[0] for r in agent.db.execute("SELECT seq FROM health_outbox")] == [2]


def test_session_counter_is_persisted_per_attempt(cfg):
    agent = make_agent(cfg)
    agent._arm_will()
    agent._arm_will()
    again = make_agent(cfg)
    assert again.session_counter == 2
