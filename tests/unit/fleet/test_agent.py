"""The agent's outbox without a broker: sampling, acknowledgements, retention."""

from appliance.clock import ClockTrust
from appliance.fleet import payloads, summaries
from appliance.fleet.agent import HOLD_UNSYNCED_S, MIGRATIONS, Agent, retime_rows
from appliance.store import migrate, open_db


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


# -- clock trust ---------------------------------------------------------------------------------

class Probe:
    """The NTP state, switchable by the test."""

    def __init__(self, synced):
        self.synced = synced

    def __call__(self):
        return self.synced


def clocked_agent(cfg, *, synced, boot="boot-1", wall=1_800_000_000.0, mono=100.0):
    walls, monos, probe = [wall], [mono], Probe(synced)
    agent = Agent(
        cfg, open_db(cfg.database_path), collect=lambda: {"cpu_pct": 1.0},
        wall_clock=lambda: walls[0], monotonic=lambda: monos[0], boot=boot,
        clock=ClockTrust(cfg.appliance.state_dir, now=lambda: walls[0], sync_probe=probe),
    )
    return agent, walls, monos, probe


def outbox(agent):
    return agent.db.execute("SELECT seq, ts, synced, payload FROM health_outbox ORDER BY seq").fetchall()


def test_samples_before_sync_are_flagged_then_retimed_in_the_same_boot(cfg):
    agent, walls, monos, probe = clocked_agent(cfg, synced=False, wall=0.0, mono=100.0)
    agent.sample()                     # at monotonic 100, the wall clock says 1970
    monos[0] = 160.0
    agent.sample()
    assert [r[2] for r in outbox(agent)] == [0, 0]
    assert payloads.parse_telemetry(outbox(agent)[0][3]).synced is False
    assert agent.retime() == 0         # nothing to go by yet

    # NTP steps the clock; the next sample notices and the earlier ones are re-timed.
    probe.synced, walls[0], monos[0] = True, 1_800_000_000.0, 400.0
    agent.sample()
    assert agent.retime() == 2
    rows = outbox(agent)
    assert [r[1] for r in rows] == [1_800_000_000_000 - 300_000, 1_800_000_000_000 - 240_000,
                                    1_800_000_000_000]
    assert [r[2] for r in rows] == [1, 1, 1]
    for seq, ts, _, payload in rows:
        sample = payloads.parse_telemetry(payload)
        assert (sample.seq, sample.ts, sample.synced, sample.metrics) == (seq, ts, True, {"cpu_pct": 1.0})


def test_samples_of_an_earlier_boot_are_not_retimed_and_go_out_flagged(cfg):
    agent, *_ = clocked_agent(cfg, synced=False, boot="boot-1", wall=0.0)
    agent.sample()
    agent.db.conn.close()
    again, *_ = clocked_agent(cfg, synced=True, boot="boot-2")
    again.sample()
    assert again.retime() == 0
    # Not held back even while this boot's unsynced samples would be: it can never be fixed.
    for holding in (True, False):
        sent = {seq: payloads.parse_telemetry(p).synced for seq, p in again.candidates(holding=holding)}
        assert sent == {1: False, 2: True}


def test_this_boots_unsynced_samples_wait_for_ntp_after_a_connect(cfg):
    agent, _, monos, _ = clocked_agent(cfg, synced=False, boot="boot-1", wall=0.0)
    agent.sample()
    agent._connected_at = monos[0]
    assert agent.holding(monos[0]) and agent.candidates(holding=True) == []
    # After the hold they go out flagged: a Pi without NTP still reports.
    assert not agent.holding(monos[0] + HOLD_UNSYNCED_S)
    assert len(agent.candidates(holding=False)) == 2


def test_a_plausible_clock_still_flags_samples(cfg):
    ClockTrust(cfg.appliance.state_dir, now=lambda: 1_700_000_000.0,
               sync_probe=lambda: True).record_good_time()
    agent, *_ = clocked_agent(cfg, synced=False)
    assert agent.clock.state() == "plausible"
    agent.sample()
    assert outbox(agent)[0][2] == 0


def test_retention_waits_while_the_clock_is_unknown(cfg):
    agent, *_ = clocked_agent(cfg, synced=False, wall=4_000_000_000.0)  # years ahead
    agent.sample()
    assert agent.prune() is False
    assert len(outbox(agent)) == 1


def test_retime_rows_is_pure():
    raw = payloads.telemetry(4, 5, {"mem_pct": 20.0}, synced=False)
    [(seq, ts, payload)] = retime_rows([(4, raw, 50.0)], 1_000.0, 80.0)
    assert (seq, ts) == (4, 970_000)
    assert payloads.parse_telemetry(payload) == payloads.Telemetry(4, 970_000, {"mem_pct": 20.0})


def test_outbox_of_an_older_agent_is_migrated_as_synced(cfg):
    db = open_db(cfg.database_path)
    migrate(db, "fleet.agent", MIGRATIONS[:1])
    db.execute("INSERT INTO health_outbox (ts, payload) VALUES (1, ?)",
               [payloads.telemetry(1, 1, {"cpu_pct": 1.0})])
    agent, *_ = clocked_agent(cfg, synced=False)
    assert outbox(agent)[0][2] == 1


# -- the agent's summary ---------------------------------------------------------------------

def test_agent_summary_reports_backlog_acknowledgement_and_clock(cfg):
    agent, walls, _, probe = clocked_agent(cfg, synced=False, wall=0.0)
    [agent.sample() for _ in range(3)]
    [section] = [agent.collect_summaries()["agent"]]
    assert section == {"backlog": 3, "oldest_unacked": 0, "last_ack": None, "unsynced": 3,
                       "clock": "unknown"}
    probe.synced, walls[0] = True, 1_800_000_000.0
    agent.sample()
    agent.retime()
    agent.acknowledge([(1, 3)])
    section = agent.collect_summaries()["agent"]
    assert section["backlog"] == 1 and section["unsynced"] == 0 and section["clock"] == "synced"
    assert section["last_ack"] == 1_800_000_000_000
    assert section["oldest_unacked"] == 1_800_000_000_000
    # Persisted: a restarted agent reports the same last acknowledgement.
    assert clocked_agent(cfg, synced=True)[0].collect_summaries()["agent"]["last_ack"] == 1_800_000_000_000


def test_a_failing_summary_provider_is_left_out_and_the_others_kept(cfg, caplog):
    good = summaries.providers()[0]

    def broken(config, db):
        raise RuntimeError("disk on fire")

    bad = summaries.Provider(summaries.SummarySpec("net", "Net", (summaries.Field("x", "X", "count"),)),
                             broken)
    agent = make_agent(cfg, summary_providers=(bad, good))
    assert list(agent.collect_summaries()) == ["agent"]
    agent.collect_summaries()
    assert caplog.text.count("summary 'net' left out") == 1


def test_no_summary_is_published_while_disconnected(cfg):
    agent = make_agent(cfg)
    assert agent.report_summary() is False
