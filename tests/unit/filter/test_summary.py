"""The filter's summary: aggregate figures and the attestation, valid against its own spec."""

import time

from appliance.filter import summary
from appliance.filter.state import Store
from appliance.store import open_db


def test_summary_before_the_filter_ever_ran(cfg):
    db = open_db(cfg.database_path)
    out = summary.SUMMARY.validate(summary.collect(cfg, db))
    assert out["active"] is False and out["queries"] is None


def test_summary_reports_blocks_per_category_and_group_and_attests(cfg):
    store = Store(open_db(cfg.database_path))
    now = time.time()
    store.record_policy("abc", ["staff"])
    store.add_stats({("students", ""): (100, 0), ("students", "adult"): (0, 7),
                     ("students", "exam"): (0, 3), ("teachers", ""): (20, 0)})
    for k, v in (("active_at", now - 5), ("lists_built_at", 1_790_000_000.0), ("policy_version", 1),
                 ("top_blocked", '{"porn.test": 7}')):
        store.set_value(k, v)
    store.start_exam("students", now + 600, now=now)
    out = summary.SUMMARY.validate(summary.collect(cfg, store.db, now=now))
    assert out["active"] is True
    assert out["attestation"] == "filtering active, lists of 2026-09-21, policy version 1"
    assert (out["queries"], out["blocked"], out["blocked_adult"], out["blocked_other"]) == (120, 10, 7, 3)
    assert out["groups"] == "students 100/10, teachers 20/0"
    assert out["top_blocked"] == "porn.test (7)"
    assert out["exam"].startswith("students until") and out["filtering_off"] == "staff"
    # Silent for over a minute: not attested.
    late = summary.collect(cfg, store.db, now=now + 120)
    assert late["active"] is False and late["attestation"] == "filtering not active"
