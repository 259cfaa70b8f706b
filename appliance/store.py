"""SQLite state: one connection recipe (WAL, busy timeout) and ordered, recorded migrations.

Each capability owns its schema as a list of `Migration`s under its own component name, so a new
capability adds tables without touching anyone else's. `_migrations` records what ran; `migrate()`
applies the missing ones in order, each in its own transaction; `pending()` says which those are
without writing anything. `transaction()` nests (savepoints inside an open transaction).
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

# Writers (agent, ingest) and readers (web workers) share one file; readers must never see
# "database is locked" during a short write burst.
BUSY_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class Migration:
    """One schema step. `apply` is SQL (run as a script) or a function taking the database."""

    version: int
    name: str
    apply: str | Callable[[sqlite_utils.Database], None]


class MigrationError(Exception):
    """The database is newer than this code, or a migration list is malformed."""


def open_db(path: Path | str, *, readonly: bool = False) -> sqlite_utils.Database:
    """Open (creating parent folders) a database in WAL mode with sane pragmas."""
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL is durable across application crashes and costs far fewer fsyncs on SD cards.
        conn.execute("PRAGMA synchronous = NORMAL")
    return sqlite_utils.Database(conn)


@contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite3.Connection]:
    """Run the block atomically: all of it is kept, or none of it on any exception.

    The outermost `transaction()` on a connection is BEGIN IMMEDIATE ... COMMIT. IMMEDIATE
    takes the write lock up front, so two writers wait (busy timeout) instead of failing
    half-way when one upgrades a read to a write.

    Inside an open transaction (an outer `transaction()`, `db.atomic()` or a migration) it is a
    SAVEPOINT instead: on an exception only the inner block is undone (ROLLBACK TO) and the
    exception propagates; if the caller catches it, the outer transaction goes on and commits
    the rest. So a helper can use `transaction()` whether or not its caller already has one,
    e.g. inside a migration function.
    """
    conn = db.conn
    if conn.in_transaction:
        name = f"appliance_{next(_savepoints)}"
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield conn
        except BaseException:
            # An error such as SQLITE_FULL can end the whole transaction, savepoints included;
            # cleaning up then would hide the real error behind "no such savepoint".
            if conn.in_transaction:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
            raise
        conn.execute(f"RELEASE {name}")
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# Savepoint names only need to differ from the enclosing ones; a process-wide counter does that.
_savepoints = itertools.count(1)


def migrate(db: sqlite_utils.Database, component: str, migrations: Sequence[Migration]) -> list[int]:
    """Apply the migrations of `component` not yet recorded; return the versions applied.

    Each runs in its own transaction, together with its `_migrations` row. A function migration
    may use `transaction()` itself (it nests as a savepoint). Raises MigrationError when the
    list is malformed or the database is newer than the list.
    """
    _validate(component, migrations)
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations ("
        " component TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,"
        " applied_at REAL NOT NULL, PRIMARY KEY (component, version))"
    )
    applied = []
    for m in pending(db, component, migrations):
        with transaction(db) as conn:
            # Another process (a console worker beside the ingest worker) may have applied it
            # between pending() and this write lock: look again now that the lock is ours.
            if conn.execute(
                "SELECT 1 FROM _migrations WHERE component = ? AND version = ?",
                [component, m.version],
            ).fetchone():
                continue
            if isinstance(m.apply, str):
                for statement in _split_sql(m.apply):
                    conn.execute(statement)
            else:
                m.apply(db)
            conn.execute(
                "INSERT INTO _migrations (component, version, name, applied_at) VALUES (?,?,?,?)",
                [component, m.version, m.name, time.time()],
            )
        applied.append(m.version)
    return applied


def pending(
    db: sqlite_utils.Database, component: str, migrations: Sequence[Migration]
) -> list[Migration]:
    """The migrations of `component` that `migrate()` would apply now, in order.

    Writes nothing, not even the `_migrations` table (a database without it has every
    migration pending), so it works on a read-only connection (`open_db(path, readonly=True)`)
    and leaves the file unchanged: use it to report or check a schema without upgrading it.
    Raises MigrationError in the same cases as `migrate()`.
    """
    _validate(component, migrations)
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'"
    ).fetchone()
    done: set[int] = set()
    if exists:
        done = {
            row[0]
            for row in db.execute(
                "SELECT version FROM _migrations WHERE component = ?", [component]
            ).fetchall()
        }
    known = migrations[-1].version if migrations else 0
    if done and max(done) > known:
        raise MigrationError(
            f"{component}: database schema is at version {max(done)}, newer than this "
            f"software knows ({known}); upgrade the software"
        )
    return [m for m in migrations if m.version not in done]


def _validate(component: str, migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)) or (versions and versions[0] < 1):
        raise MigrationError(f"{component}: migration versions must be unique, ascending, >= 1")


def _split_sql(script: str) -> list[str]:
    # executescript() would COMMIT our transaction; split on complete statements instead.
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip():
        raise MigrationError(f"incomplete SQL statement in migration: {buf.strip()[:60]!r}")
    return statements
