"""SQLite state: one connection recipe (WAL, busy timeout) and ordered, recorded migrations.

Each capability owns its schema as a list of `Migration`s under its own component name, so a new
capability adds tables without touching anyone else's. `_migrations` records what ran; `migrate()`
applies the missing ones in order, each in its own transaction.
"""

from __future__ import annotations

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
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception.

    IMMEDIATE takes the write lock up front, so two writers wait (busy timeout) instead of
    failing half-way when one upgrades a read to a write.
    """
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def migrate(db: sqlite_utils.Database, component: str, migrations: Sequence[Migration]) -> list[int]:
    """Apply the migrations of `component` not yet recorded; return the versions applied."""
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)) or (versions and versions[0] < 1):
        raise MigrationError(f"{component}: migration versions must be unique, ascending, >= 1")
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations ("
        " component TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,"
        " applied_at REAL NOT NULL, PRIMARY KEY (component, version))"
    )
    done = {
        row[0]
        for row in db.execute(
            "SELECT version FROM _migrations WHERE component = ?", [component]
        ).fetchall()
    }
    if done and max(done) > (versions[-1] if versions else 0):
        raise MigrationError(
            f"{component}: database schema is at version {max(done)}, newer than this "
            f"software knows ({versions[-1] if versions else 0}); upgrade the software"
        )
    applied = []
    for m in migrations:
        if m.version in done:
            continue
        with transaction(db) as conn:
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
