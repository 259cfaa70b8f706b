"""The persistent job queue: downloads waiting, running, done or failed, in `content_jobs`.

A job survives restarts: `recover()` at start puts jobs left `running` by a crash or a reboot
back in the queue (their partial file is resumed). A failure is retried after a full-jitter
backoff (a uniform random wait in [0, min(6 h, 30 s x 2^attempt)]) until `[content] retries`
is spent; some failures (a full disk, a checksum that can never match) fail at once.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from appliance.store import transaction

BASE_DELAY_S = 30.0
MAX_DELAY_S = 6 * 3600.0


@dataclass(frozen=True)
class Job:
    id: int
    name: str
    kind: str  # zim | pack
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

    def claim(self) -> Job | None:
        """The next job that is due, marked running (one caller gets each job)."""
        now = self._now()
        with transaction(self.db):
            row = self.db.execute(f"SELECT {COLUMNS} FROM content_jobs WHERE state = 'queued' "  # noqa: S608
                                  "AND next_at <= ? ORDER BY next_at, id LIMIT 1", [now]).fetchone()
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
            self.db.execute("INSERT INTO content_state (key, value) VALUES ('last_sync', ?) "
                            "ON CONFLICT (key) DO UPDATE SET value = excluded.value", [self._now()])

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

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT state, count(*) FROM content_jobs GROUP BY state").fetchall())
