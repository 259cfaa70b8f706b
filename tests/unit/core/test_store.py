import contextlib
import sqlite3

import pytest

from appliance.store import Migration, MigrationError, migrate, open_db, pending, transaction


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


def test_inner_transaction_failure_undoes_only_the_inner_part(tmp_path):
    db = open_db(tmp_path / "x.db")
    db.execute("CREATE TABLE t (a TEXT)")
    with transaction(db) as conn:
        conn.execute("INSERT INTO t VALUES ('outer-before')")
        with pytest.raises(ZeroDivisionError), transaction(db) as inner:
            inner.execute("INSERT INTO t VALUES ('inner')")
            1 / 0  # noqa: B018 - the failure under test
        with transaction(db) as inner:
            inner.execute("INSERT INTO t VALUES ('inner-ok')")
        conn.execute("INSERT INTO t VALUES ('outer-after')")
    assert not db.conn.in_transaction
    assert [r[0] for r in db.execute("SELECT a FROM t ORDER BY rowid")] == [
        "outer-before", "inner-ok", "outer-after"]


def test_uncaught_inner_failure_rolls_back_the_outer_transaction(tmp_path):
    db = open_db(tmp_path / "x.db")
    db.execute("CREATE TABLE t (a TEXT)")
    with pytest.raises(KeyError), transaction(db) as conn:
        conn.execute("INSERT INTO t VALUES ('outer')")
        with transaction(db) as inner:
            inner.execute("INSERT INTO t VALUES ('inner')")
            raise KeyError("boom")
    assert not db.conn.in_transaction
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_outermost_transaction_takes_the_write_lock_at_once(tmp_path):
    db = open_db(tmp_path / "x.db")
    other = open_db(tmp_path / "x.db")
    other.execute("PRAGMA busy_timeout = 0")
    with transaction(db), transaction(db), pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")
    other.execute("ROLLBACK")


def test_migration_function_may_use_a_helper_with_its_own_transaction(tmp_path):
    db = open_db(tmp_path / "x.db")

    def add_row(value: str) -> None:
        with transaction(db) as conn:
            conn.execute("INSERT INTO t VALUES (?)", [value])

    def seed(db_: object) -> None:
        add_row("seed")
        with contextlib.suppress(sqlite3.IntegrityError):
            add_row("seed")  # the UNIQUE failure undoes only this helper's savepoint

    steps = [Migration(1, "t", "CREATE TABLE t (a TEXT UNIQUE);"), Migration(2, "seed", seed)]
    assert migrate(db, "demo", steps) == [1, 2]
    assert [r[0] for r in db.execute("SELECT a FROM t")] == ["seed"]


def test_failed_function_migration_leaves_no_trace(tmp_path):
    db = open_db(tmp_path / "x.db")

    def half(db_: object) -> None:
        with transaction(db) as conn:
            conn.execute("CREATE TABLE t (a)")
        raise RuntimeError("second step failed")

    with pytest.raises(RuntimeError):
        migrate(db, "demo", [Migration(1, "half", half)])
    assert "t" not in db.table_names()
    assert pending(db, "demo", [Migration(1, "half", half)])[0].version == 1


STEPS = [
    Migration(1, "a", "CREATE TABLE a (x);"),
    Migration(2, "b", "CREATE TABLE b (x);"),
    Migration(3, "c", "CREATE TABLE c (x);"),
]


def test_pending_lists_what_migrate_would_run(tmp_path):
    db = open_db(tmp_path / "x.db")
    assert pending(db, "demo", STEPS) == STEPS
    migrate(db, "demo", STEPS[:2])
    assert pending(db, "demo", STEPS) == [STEPS[2]]
    assert pending(db, "other", STEPS) == STEPS
    assert migrate(db, "demo", STEPS) == [3]
    assert pending(db, "demo", STEPS) == []


def test_pending_on_a_database_without_migrations_table_creates_nothing(tmp_path):
    db = open_db(tmp_path / "x.db")
    assert pending(db, "demo", STEPS) == STEPS
    assert db.table_names() == []


def test_pending_reads_only_and_leaves_the_file_byte_identical(tmp_path):
    path = tmp_path / "x.db"
    db = open_db(path)
    migrate(db, "demo", STEPS[:1])
    db.close()
    assert [p.name for p in tmp_path.iterdir()] == ["x.db"]  # the last close checkpointed the WAL
    before = path.read_bytes()

    for readonly in (True, False):
        conn = open_db(path, readonly=readonly)
        assert pending(conn, "demo", STEPS) == STEPS[1:]
        assert pending(conn, "new-component", STEPS) == STEPS
        conn.close()
        # SQLite may leave its -wal/-shm side files after a read-only open; the database is untouched.
        assert path.read_bytes() == before

    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        open_db(path, readonly=True).execute("CREATE TABLE nope (x)")


def test_pending_refuses_a_newer_database_like_migrate(tmp_path):
    db = open_db(tmp_path / "x.db")
    migrate(db, "demo", STEPS)
    with pytest.raises(MigrationError, match="newer than this software"):
        pending(db, "demo", STEPS[:1])
    with pytest.raises(MigrationError, match="unique, ascending"):
        pending(db, "demo", [STEPS[1], STEPS[0]])


def test_two_processes_migrating_at_once_apply_each_migration_once(tmp_path):
    """The console web and the ingest worker start together and both migrate console.db."""
    import subprocess
    import sys

    script = (
        "import sys; from appliance.store import open_db, migrate, Migration;"
        "db = open_db(sys.argv[1]);"
        "ms = [Migration(i, f'm{i}', f'CREATE TABLE t{i} (x INTEGER);') for i in range(1, 40)];"
        "migrate(db, 'race', ms)"
    )
    path = tmp_path / "race.db"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path)], stderr=subprocess.PIPE)
             for _ in range(4)]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    db = open_db(path)
    assert db.execute("SELECT count(*) FROM _migrations WHERE component = 'race'").fetchone()[0] == 39
