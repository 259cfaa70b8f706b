import pytest

from appliance.store import Migration, MigrationError, migrate, open_db


def test_open_db_uses_wal(tmp_path):
    db = open_db(tmp_path / "a" / "x.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migrations_apply_once_in_order(tmp_path):
    db = open_db(tmp_path / "x.db")
    steps = [
        Migration(1, "t", "CREATE TABLE t (a INTEGER);"),
        Migration(2, "t.b", "ALTER TABLE t ADD COLUMN b TEXT;\nCREATE INDEX t_b ON t (b);"),
    ]
    assert migrate(db, "demo", steps) == [1, 2]
    assert migrate(db, "demo", steps) == []
    assert db["t"].columns_dict == {"a": int, "b": str}
    recorded = [r["version"] for r in db.query("SELECT version FROM _migrations WHERE component='demo'")]
    assert recorded == [1, 2]


def test_components_are_independent(tmp_path):
    db = open_db(tmp_path / "x.db")
    migrate(db, "one", [Migration(1, "a", "CREATE TABLE a (x);")])
    assert migrate(db, "two", [Migration(1, "b", "CREATE TABLE b (x);")]) == [1]


def test_failed_migration_rolls_back_entirely(tmp_path):
    db = open_db(tmp_path / "x.db")
    bad = [Migration(1, "half", "CREATE TABLE ok (x);\nCREATE TABLE broken (;")]
    with pytest.raises(Exception, match="syntax"):
        migrate(db, "demo", bad)
    assert "ok" not in db.table_names()
    assert migrate(db, "demo", [Migration(1, "fixed", "CREATE TABLE ok (x);")]) == [1]


def test_newer_database_than_code_is_refused(tmp_path):
    db = open_db(tmp_path / "x.db")
    migrate(db, "demo", [Migration(1, "a", "CREATE TABLE a (x);"), Migration(2, "b", "CREATE TABLE b (x);")])
    with pytest.raises(MigrationError, match="newer than this software"):
        migrate(db, "demo", [Migration(1, "a", "CREATE TABLE a (x);")])


def test_unordered_migrations_are_a_bug(tmp_path):
    db = open_db(tmp_path / "x.db")
    with pytest.raises(MigrationError):
        migrate(db, "demo", [Migration(2, "b", ""), Migration(1, "a", "")])
