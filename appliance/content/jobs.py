"""The persistent job queue: downloads waiting, running, done or failed, in `content_jobs`.

A job survives restarts: `recover()` at start puts jobs left `running` by a crash or a reboot
back in the queue (their partial file is resumed). A failure is retried after a full-jitter
backoff (a uniform random wait in [0, min(6 h, 30 s x 2^attempt)]) until `[content] retries`
is spent; some failures (a full disk, a checksum that can never match) fail at once.

The queue holds other capabilities' jobs too (kind `moodle`: a sync of the Moodle mirror). Each
runner claims only the kinds it knows (`claim(kinds=...)`), and every runner works inside
`running()`, a lock beside the database: one job of the whole queue transfers at a time, so
they all share the one bandwidth cap (`[content] bandwidth_kbps`) and the time windows.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from appliance.store import transaction

BASE_DELAY_S = 30.0
MAX_DELAY_S = 6 * 3600.0


@dataclass(frozen=True)
class Job:
    id: int
    name: str
    kind: str  # zim | pack | moodle
    url: str
    sha256: str | None
    size: int | None
    pieces: dict[str, Any] | None
    meta: dict[str, Any]
    state: str
    attempts: int
    next_at: int
    done_bytes: int
    error: str | None
    created_at: int
    updated_at: int


COLUMNS = ("id, name, kind, url, sha256, size, pieces, meta, state, attempts, next_at, done_bytes, "
           "error, created_at, updated_at")


def _job(row: tuple[Any, ...]) -> Job:
    values = list(row)
    values[6] = json.loads(values[6]) if values[6] else None
    values[7] = json.loads(values[7] or "{}")
    return Job(*values)


def backoff_ms(attempt: int, rng: random.Random | None = None) -> int:
    cap = min(MAX_DELAY_S, BASE_DELAY_S * 2 ** min(attempt, 30))
    return int((rng or random).uniform(0, cap) * 1000)


class JobQueue:
    def __init__(self, db: sqlite_utils.Database, *, clock: Any = time.time) -> None:
        self.db = db
        self.clock = clock

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def enqueue(self, name: str, kind: str, url: str, *, sha256: str | None = None,
                size: int | None = None, pieces: dict[str, Any] | None = None,
                meta: dict[str, Any] | None = None) -> Job:
        """Queue a download of item `name`; an unfinished job for the same item is replaced
        only if it fetched something else (another URL or hash), so re-running a sync is idempotent."""
        now = self._now()
        with transaction(self.db):
            old = self.db.execute(f"SELECT {COLUMNS} FROM content_jobs WHERE name = ? AND state IN "  # noqa: S608
                                  "('queued', 'running', 'failed')", [name]).fetchone()
            if old is not None:
                job = _job(old)
                if job.url == url and job.sha256 == sha256:
                    if job.state == "failed":
                        self.db.execute("UPDATE content_jobs SET state = 'queued', attempts = 0, "
                                        "next_at = 0, error = NULL, updated_at = ? WHERE id = ?",
                                        [now, job.id])
                    return self.get(job.id)
                self.db.execute("DELETE FROM content_jobs WHERE id = ?", [job.id])
            cur = self.db.execute(
                "INSERT INTO content_jobs (name, kind, url, sha256, size, pieces, meta, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [name, kind, url, sha256, size, json.dumps(pieces) if pieces else None,
                 json.dumps(meta or {}), now, now])
        assert cur.lastrowid is not None
        return self.get(cur.lastrowid)

    def get(self, job_id: int) -> Job:
        return _job(self.db.execute(f"SELECT {COLUMNS} FROM content_jobs WHERE id = ?",  # noqa: S608
                                    [job_id]).fetchone())

    def list(self, *, states: tuple[str, ...] = ("queued", "running", "failed", "done")) -> list[Job]:
        marks = ",".join("?" * len(states))
        return [_job(r) for r in self.db.execute(
            f"SELECT {COLUMNS} FROM content_jobs WHERE state IN ({marks}) ORDER BY id", list(states))]  # noqa: S608

    def recover(self) -> int:
        """Jobs a crash or reboot left running go back to the queue."""
        with transaction(self.db):
            return self.db.execute("UPDATE content_jobs SET state = 'queued', updated_at = ? "
                                   "WHERE state = 'running'", [self._now()]).rowcount

    def claim(self, kinds: tuple[str, ...] | None = None) -> Job | None:
        """The next job that is due (of one of `kinds`, when given), marked running (one caller
        gets each job)."""
        now = self._now()
        only = f" AND kind IN ({','.join('?' * len(kinds))})" if kinds else ""
        with transaction(self.db):
            row = self.db.execute(f"SELECT {COLUMNS} FROM content_jobs WHERE state = 'queued' "  # noqa: S608
                                  f"AND next_at <= ?{only} ORDER BY next_at, id LIMIT 1",
                                  [now, *(kinds or ())]).fetchone()
            if row is None:
                return None
            self.db.execute("UPDATE content_jobs SET state = 'running', updated_at = ? WHERE id = ?",
                            [now, row[0]])
        return self.get(row[0])

    def progress(self, job_id: int, done_bytes: int) -> None:
        with transaction(self.db):
            self.db.execute("UPDATE content_jobs SET done_bytes = ?, updated_at = ? WHERE id = ?",
                            [done_bytes, self._now(), job_id])

    def done(self, job_id: int) -> None:
        with transaction(self.db):
            self.db.execute("UPDATE content_jobs SET state = 'done', error = NULL, updated_at = ? "
                            "WHERE id = ?", [self._now(), job_id])
            if self.get(job_id).kind in ("zim", "pack"):  # the library's own last sync
                self.db.execute("INSERT INTO content_state (key, value) VALUES ('last_sync', ?) "
                                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                                [self._now()])

    def pause(self, job_id: int, reason: str) -> None:
        """Back to the queue without counting an attempt (the window closed, we were stopped)."""
        with transaction(self.db):
            self.db.execute("UPDATE content_jobs SET state = 'queued', error = ?, updated_at = ? "
                            "WHERE id = ?", [reason, self._now(), job_id])

    def fail(self, job_id: int, error: str, *, retries: int, permanent: bool = False,
             rng: random.Random | None = None) -> Job:
        job = self.get(job_id)
        attempts = job.attempts + 1
        final = permanent or attempts > retries
        with transaction(self.db):
            self.db.execute(
                "UPDATE content_jobs SET state = ?, attempts = ?, next_at = ?, error = ?, updated_at = ? "
                "WHERE id = ?",
                ["failed" if final else "queued", attempts,
                 self._now() + (0 if final else backoff_ms(attempts, rng)), error, self._now(), job_id])
        return self.get(job_id)

    def forget_done(self, name: str, keep: int) -> None:
        """Delete finished jobs of `name` but the one `keep` (a nightly job would pile up)."""
        with transaction(self.db):
            self.db.execute("DELETE FROM content_jobs WHERE name = ? AND state = 'done' AND id != ?",
                            [name, keep])

    def lock_path(self) -> Path | None:
        """The runners' lock, beside the database file (None for a database in memory)."""
        row = self.db.execute("PRAGMA database_list").fetchone()
        return Path(row[2]).with_name(Path(row[2]).name + ".queue.lock") if row and row[2] else None

    @contextlib.contextmanager
    def running(self, waiting: Callable[[], None] = lambda: None) -> Iterator[None]:
        """Run jobs inside this: one runner at a time, whatever kinds it runs. When another
        runner holds the queue, `waiting()` is called once and this waits for it."""
        path = self.lock_path()
        if path is None:
            yield
            return
        with path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                waiting()
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT state, count(*) FROM content_jobs GROUP BY state").fetchall())
