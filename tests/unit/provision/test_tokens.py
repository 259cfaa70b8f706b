"""Enrollment tokens: one use, an expiry, only a hash stored, every step in the audit log."""

import sqlite3
import threading

import pytest

from appliance.provision import tokens
from appliance.provision.enrollment import open_console_db


@pytest.fixture
def db(cfg):
    return open_console_db(cfg)


def rows(db, sql, params=()):
    return db.execute(sql, params).fetchall()


def test_a_token_enrolls_its_device_once(db):
    issued = tokens.issue(db, "school-1", 3600, now=1000.0)
    assert tokens.consume(db, issued.token, "school-1", "10.0.0.5", now=1001.0) == issued.token_id
    with pytest.raises(tokens.TokenRefused, match="already used"):
        tokens.consume(db, issued.token, "school-1", "10.0.0.5", now=1002.0)


def test_an_expired_token_is_refused(db):
    issued = tokens.issue(db, "school-1", 60, now=1000.0)
    with pytest.raises(tokens.TokenRefused, match="expired"):
        tokens.consume(db, issued.token, "school-1", "10.0.0.5", now=1060.0)


def test_a_token_only_enrolls_the_device_it_was_made_for(db):
    issued = tokens.issue(db, "school-1", 3600, now=1000.0)
    with pytest.raises(tokens.TokenRefused, match="unknown") as refused:
        tokens.consume(db, issued.token, "school-2", "10.0.0.5", now=1001.0)
    assert refused.value.token_id is None
    # Still good for its own device.
    tokens.consume(db, issued.token, "school-1", "10.0.0.5", now=1002.0)
    with pytest.raises(tokens.TokenRefused, match="unknown"):
        tokens.consume(db, "made-up", "school-1", "10.0.0.5", now=1003.0)


def test_only_the_hash_is_stored_and_the_audit_log_never_holds_the_token(db, cfg):
    issued = tokens.issue(db, "school-1", 3600, now=1000.0)
    tokens.consume(db, issued.token, "school-1", "10.0.0.5", now=1001.0)
    tokens.audit(db, tokens.REFUSED, 1002.0, device_id="school-1", detail="test")
    stored = rows(db, "SELECT token_hash, used_by FROM enrollment_tokens")
    assert stored == [(tokens.hash_token(issued.token), "10.0.0.5")]
    db.conn.close()
    raw = cfg.console_database_path.read_bytes() + b"".join(
        p.read_bytes() for p in cfg.console_database_path.parent.glob("console.db-*"))
    assert issued.token.encode() not in raw
    log = tokens.audit_log(open_console_db(cfg), "school-1")
    assert [r["event"] for r in log] == ["refused", "issued"]
    assert log[1]["token_id"] == issued.token_id


def test_two_concurrent_uses_of_one_token_enroll_once(db, cfg):
    issued = tokens.issue(db, "school-1", 3600, now=1000.0)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def use() -> None:
        own = open_console_db(cfg)  # a connection each, as gunicorn workers have
        barrier.wait()
        try:
            tokens.consume(own, issued.token, "school-1", "10.0.0.5", now=1001.0)
            outcomes.append("ok")
        except tokens.TokenRefused as exc:
            outcomes.append(exc.reason)
        except sqlite3.OperationalError as exc:  # pragma: no cover - would be a failure
            outcomes.append(str(exc))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["enrollment token was already used"] * 7 + ["ok"]


def test_rate_limit_counts_attempts_per_key_in_a_window(db):
    for _ in range(3):
        assert tokens.allow_attempt(db, "device:school-1", 3, now=1000.0)
    assert not tokens.allow_attempt(db, "device:school-1", 3, now=1001.0)
    assert tokens.allow_attempt(db, "device:school-2", 3, now=1001.0)
    assert tokens.allow_attempt(db, "device:school-1", 3, now=1000.0 + tokens.RATE_WINDOW_S)


def test_withdraw_makes_unused_tokens_unusable(db):
    issued = tokens.issue(db, "school-1", 3600, now=1000.0)
    assert tokens.withdraw(db, "school-1", now=1001.0) == 1
    with pytest.raises(tokens.TokenRefused, match="already used"):
        tokens.consume(db, issued.token, "school-1", "10.0.0.5", now=1002.0)


@pytest.mark.parametrize("text, seconds", [("24h", 86400), ("90m", 5400), ("7d", 604800),
                                           ("3600", 3600), ("30s", 30)])
def test_ttls(text, seconds):
    assert tokens.parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0h", "31d", "soon", "-1h"])
def test_bad_ttls(text):
    with pytest.raises(ValueError):
        tokens.parse_ttl(text)


def test_issue_refuses_a_bad_device_id(db):
    with pytest.raises(ValueError, match="device id"):
        tokens.issue(db, "School 1", 3600, now=1.0)
