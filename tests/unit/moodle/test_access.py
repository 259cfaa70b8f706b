"""The access decision, the sign-in rate limits, the offline hashes and the config rules."""

from __future__ import annotations

import pytest

from appliance.config import ConfigError, MoodleSection, from_dict
from appliance.moodle import access, schema
from appliance.store import migrate, open_db

DAY = 86400.0


@pytest.fixture
def db(tmp_path):
    database = open_db(tmp_path / "a.db")
    migrate(database, schema.COMPONENT, schema.MIGRATIONS)
    yield database
    database.conn.close()


def test_the_access_decision_follows_default_and_overrides():
    section = MoodleSection(default_access="open", signin_courses=(2,))
    assert access.requires_signin(section, 2) and not access.requires_signin(section, 3)
    strict = MoodleSection(default_access="signin", open_courses=(3,))
    assert access.requires_signin(strict, 2) and not access.requires_signin(strict, 3)
    assert access.may_read(strict, 3, [])
    assert not access.may_read(strict, 2, [5]) and access.may_read(strict, 2, [5, 2])


def test_a_hash_checks_its_password_only_and_is_salted():
    first, second = access.hash_password("Pupil#Pass1"), access.hash_password("Pupil#Pass1")
    assert first != second and "Pupil#Pass1" not in first
    assert access.check_password(first, "Pupil#Pass1") and access.check_password(second, "Pupil#Pass1")
    assert not access.check_password(first, "pupil#pass1")
    assert not access.check_password(None, "Pupil#Pass1")
    assert not access.check_password("scrypt$garbage", "Pupil#Pass1")
    assert not access.check_password("md5$1$2$3$4$5", "Pupil#Pass1")


def test_the_limiter_counts_failures_in_a_window_per_key(db):
    limits = access.Limiter(db, window=900.0)
    key = access.account_key("  Pupil7 ")
    assert key == "account:pupil7"
    for i in range(4):
        limits.fail(key, 1000.0 + i)
    assert not limits.blocked(key, 5, 1010.0)
    limits.fail(key, 1011.0)
    assert limits.blocked(key, 5, 1012.0)
    assert not limits.blocked(access.device_key("10.42.0.5"), 5, 1012.0)  # another key
    assert not limits.blocked(key, 5, 1000.0 + 900.0)  # the window is over
    limits.fail(key, 2000.0)  # a new window starts at one
    assert not limits.blocked(key, 2, 2001.0)
    limits.clear(key)
    limits.fail(key, 3000.0)
    limits.purge(3000.0 + 900.0)
    assert db.execute("SELECT count(*) FROM moodle_signin_failures").fetchone()[0] == 0


def test_offline_hashes_hold_the_courses_and_expire(db):
    access.remember(db, "Pupil7", "Pupil#Pass1", [3, 2, 2], now=10 * DAY)
    assert access.offline(db, "pupil7", "Pupil#Pass1", 10 * DAY + 1, days=14) == [2, 3]
    assert access.offline(db, "pupil7", "wrong", 10 * DAY + 1, days=14) is None
    assert access.offline(db, "nobody", "Pupil#Pass1", 10 * DAY + 1, days=14) is None
    assert access.offline(db, "pupil7", "Pupil#Pass1", 24 * DAY, days=14) is None  # 14 days on
    assert access.offline(db, "pupil7", "Pupil#Pass1", 10 * DAY + 1, days=0) is None
    stored = db.execute("SELECT * FROM moodle_signins").fetchall()
    assert "Pupil#Pass1" not in repr(stored)
    assert access.purge(db, 23 * DAY, days=14) == 0
    assert access.purge(db, 24 * DAY, days=14) == 1


def config(**sections):
    return from_dict({"appliance": {"id": "t"}, **sections})


def test_signin_without_a_certificate_and_key_is_a_config_error():
    moodle = {"url": "https://moodle.example", "token_file": "/t"}
    with pytest.raises(ConfigError, match=r"moodle\.signin_courses: sign-in needs HTTPS"):
        config(moodle={**moodle, "signin_courses": [2]})
    with pytest.raises(ConfigError, match=r"moodle\.default_access: sign-in needs HTTPS.*tls_key"):
        config(moodle={**moodle, "default_access": "signin"}, network={"tls_cert": "/c.pem"})
    ok = config(moodle={**moodle, "signin_courses": [2]},
                network={"tls_cert": "/c.pem", "tls_key": "/k.pem"})
    assert ok.network.https and ok.moodle.signin_used
    with pytest.raises(ConfigError, match=r"network\.tls_cert: is required when tls_key"):
        config(network={"tls_key": "/k.pem"})
    with pytest.raises(ConfigError, match=r"portal\.https_port: must differ"):
        config(network={"tls_cert": "/c.pem", "tls_key": "/k.pem"}, portal={"https_port": 80})
    with pytest.raises(ConfigError, match=r"moodle\.signin_courses\[0\]: course 2 is also in open_courses"):
        config(moodle={"signin_courses": [2], "open_courses": [2]})
    with pytest.raises(ConfigError, match=r"moodle\.url: is required for sign-in"):
        config(moodle={"signin_courses": [2]}, network={"tls_cert": "/c.pem", "tls_key": "/k.pem"})
    with pytest.raises(ConfigError, match=r"moodle\.offline_signin_days"):
        config(moodle={"offline_signin_days": 400})
