"""Building the mirror's parts from the configuration: paths, the library's store, client, `Mirror`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from appliance.config import Config, ConfigError
from appliance.content import schema as content_schema
from appliance.content.download import Limits, Paused, check, limits_for
from appliance.content.jobs import Job, JobQueue
from appliance.content.store import ContentStore
from appliance.moodle import schema
from appliance.moodle.client import Client, Credentials
from appliance.moodle.mirror import Mirror, Progress, SyncBusy, SyncReport
from appliance.secretfiles import read_secret
from appliance.store import migrate, open_db


def mirror_dir(cfg: Config) -> Path:
    """The mirror's folder: the sync lock and the renewed token (mode 0600). Files are in the
    library's content store (`[content] root`)."""
    return cfg.appliance.state_dir / "moodle"


def open_database(cfg: Config) -> sqlite_utils.Database:
    db = open_db(cfg.database_path)
    # The mirror's files and search documents are in the library's tables.
    migrate(db, content_schema.COMPONENT, content_schema.MIGRATIONS)
    migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    return db


def build_client(cfg: Config) -> Client:
    """The client for `[moodle]`; ConfigError when there is no site or account configured."""
    m = cfg.moodle
    if not m.url:
        raise ConfigError(cfg.source, "moodle.url", "is not set: there is no Moodle to mirror")
    token_file, password_file = m.token_file, m.password_file
    credentials = Credentials(
        token_reader=(lambda: read_secret(token_file, "moodle.token_file")) if token_file else None,
        username=m.username,
        password_reader=(
            (lambda: read_secret(password_file, "moodle.password_file")) if password_file else None),
        token_cache=mirror_dir(cfg) / "token" if password_file else None,
    )
    return Client(m.url, credentials, timeout=m.timeout)


def content_store(cfg: Config, db: sqlite_utils.Database) -> ContentStore:
    return ContentStore(cfg.content.root, db, require_mount=cfg.content.require_mount)


def build_mirror(cfg: Config, db: sqlite_utils.Database, limits: Limits | None = None) -> Mirror:
    """The mirror on the library's store; `limits` (the library's bandwidth cap and windows)
    apply to its downloads."""
    return Mirror(db, content_store(cfg, db), mirror_dir(cfg) / "work", cfg.moodle.url,
                  reserve=cfg.moodle.min_free_mb * 1_000_000, grace=cfg.moodle.grace_days * 86400.0,
                  limits=limits or Limits())


JOB_KIND = "moodle"


@dataclass
class QueuedSync:
    """What `run_queued` did: the sync's report, or why it did not run (`paused`)."""

    job: Job
    report: SyncReport | None = None
    paused: str | None = None


def run_queued(cfg: Config, db: sqlite_utils.Database, client: Client, *, course: int | None = None,
               windows: bool = True, progress: Progress = lambda _: None,
               waiting: Callable[[], None] = lambda: None) -> QueuedSync:
    """Queue a sync of the mirror (one course or all) as a job of the library's queue, then run
    it under the library's limits once the queue is free (`waiting()` is called if another
    runner, e.g. a ZIM download, holds it): one transfer at a time, the one bandwidth cap, and
    outside `[content] windows` the job waits in the queue (`paused`) unless `windows=False`.
    A failed sync ends its job as failed (the next run queues it again); its errors are in the
    report and in `appliance moodle status`."""
    queue = JobQueue(db)
    name = JOB_KIND if course is None else f"{JOB_KIND}:course-{course}"
    job = queue.enqueue(name, JOB_KIND, cfg.moodle.url, meta={"course": course})
    limits = limits_for(cfg, windows=windows)
    with queue.running(waiting):
        queue.recover()
        claimed = queue.claim(kinds=(JOB_KIND,))
        while claimed is not None and claimed.id != job.id:
            # An older Moodle job (another course, a paused run): run it too, it is due.
            _run_job(cfg, db, queue, client, claimed, limits, progress)
            claimed = queue.claim(kinds=(JOB_KIND,))
        if claimed is None:
            return QueuedSync(queue.get(job.id), paused=queue.get(job.id).error or "not due yet")
        return _run_job(cfg, db, queue, client, claimed, limits, progress)


def _run_job(cfg: Config, db: sqlite_utils.Database, queue: JobQueue, client: Client, job: Job,
             limits: Limits, progress: Progress) -> QueuedSync:
    mirror = build_mirror(cfg, db, limits)
    try:
        check(limits)
        report = mirror.sync(client, only=job.meta.get("course"), allowed=cfg.moodle.courses,
                             progress=progress)
    except (Paused, SyncBusy) as exc:
        reason = str(exc) if isinstance(exc, SyncBusy) else (
            f"{exc} ([content] windows); it runs at the next sync in the window")
        queue.pause(job.id, reason)
        return QueuedSync(queue.get(job.id), paused=reason)
    queue.progress(job.id, sum(c.wire for c in report.courses))
    if report.ok:
        queue.done(job.id)
        queue.forget_done(job.name, keep=job.id)
    else:
        queue.fail(job.id, report.error or "; ".join(
            f"course {c.id}: {c.error}" for c in report.courses if c.error), retries=0, permanent=True)
    return QueuedSync(queue.get(job.id), report)
