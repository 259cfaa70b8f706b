"""Sync: turn catalog entries into queued jobs, and run the queue (one job at a time).

Each function is one operation the CLI (and later the console's desired state) calls. A finished
download goes through the same `library.add_zim` / `library.store_pack` as a local add: checked,
stored, swapped in atomically; the old version stays until the new one opened.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin

from appliance.config import Config
from appliance.content import catalog, library
from appliance.content.download import (
    DownloadError,
    Limits,
    Paused,
    fetch,
    fetch_bytes,
    limits_for,
    remove_partial,
)
from appliance.content.jobs import Job, JobQueue
from appliance.content.store import ContentStore

Progress = Callable[[Job, int], None]

# A temporary file untouched this long is no one's (see `ContentStore.clean_tmp`).
STALE_TMP_SECONDS = 3600


def read_catalog(source: str) -> list[catalog.Book]:
    """An OPDS feed or a bundle manifest, from a URL or a local file."""
    data = fetch_bytes(source) if source.startswith(("http://", "https://")) else Path(source).read_bytes()
    base = source if source.startswith(("http://", "https://")) else ""
    if data.lstrip()[:1] == b"{":
        return catalog.parse_bundle(data, base)
    return catalog.parse_opds(data, base)


def enqueue_book(queue: JobQueue, book: catalog.Book) -> Job:
    """Queue one book. A `.meta4` URL is read now (size, SHA-256, pieces, the archive's URL); a
    plain archive URL without a hash gets its `.sha256` beside it."""
    url, sha, size, pieces = book.url, book.sha256, book.size, None
    if book.kind == "zim" and url.endswith(".meta4"):
        link = catalog.parse_metalink(fetch_bytes(url))
        url = link.urls[0] if link.urls else url.removesuffix(".meta4")
        sha, size = link.sha256, link.size
        if link.pieces:
            pieces = {"length": link.piece_length, "type": link.piece_type, "hashes": list(link.pieces)}
    elif book.kind == "zim" and not sha:
        sha = catalog.parse_sha256_file(fetch_bytes(url + ".sha256").decode("utf-8", "replace"),
                                        url.rsplit("/", 1)[-1])
    return queue.enqueue(book.name, book.kind, url, sha256=sha, size=size, pieces=pieces,
                         meta={"language": book.language, "subject": book.subject, "title": book.title})


def run(cfg: Config, store: ContentStore, queue: JobQueue, *, limits: Limits | None = None,
        progress: Progress | None = None) -> dict[str, int]:
    """Run every due archive and pack job until the queue is empty, the window closes or a stop
    is asked (waiting first while another runner, e.g. a Moodle sync, holds the queue).
    Returns how many jobs ended done, failed, were retried later or paused."""
    with queue.running():
        return _run(cfg, store, queue, limits or limits_for(cfg), progress)


def _run(cfg: Config, store: ContentStore, queue: JobQueue, limits: Limits,
         progress: Progress | None) -> dict[str, int]:
    queue.recover()
    outcome = {"done": 0, "failed": 0, "retry": 0, "paused": 0}
    if store.problem() and queue.db.execute("SELECT count(*) FROM content_items").fetchone()[0]:
        return outcome  # the drive is missing: wait rather than fill the SD card
    store.initialise()
    # Parts left by a crash or a drive that failed mid-write (never a resumable `.dl`, nor a
    # file still being written: its time moves while it is).
    store.clean_tmp(older_than_s=STALE_TMP_SECONDS)
    while not limits.stop.is_set():
        job = queue.claim(kinds=("zim", "pack"))
        if job is None:
            break
        try:
            run_job(store, queue, job, limits,
                    (lambda n, j=job: progress(j, n)) if progress else None)  # type: ignore[misc]
            queue.done(job.id)
            outcome["done"] += 1
        except Paused as exc:
            queue.pause(job.id, str(exc))
            outcome["paused"] += 1
            break
        except (DownloadError, library.LibraryError, catalog.CatalogError, OSError) as exc:
            permanent = getattr(exc, "permanent", False) or isinstance(exc, catalog.CatalogError)
            ended = queue.fail(job.id, str(exc), retries=cfg.content.retries, permanent=permanent)
            outcome["failed" if ended.state == "failed" else "retry"] += 1
    return outcome


def _part(store: ContentStore, job: Job, suffix: str = "") -> Path:
    store.tmp_dir.mkdir(exist_ok=True)
    return store.tmp_dir / f"job-{job.id}{suffix}.dl"


def run_job(store: ContentStore, queue: JobQueue, job: Job, limits: Limits,
            progress: Callable[[int], None] | None = None) -> None:
    meta = job.meta
    if job.kind == "zim":
        part = _part(store, job)
        fetch(job.url, part, size=job.size, sha256=job.sha256, pieces=job.pieces, limits=limits,
              progress=progress)
        try:
            library.add_zim(store, part, name=job.name, language=meta.get("language", ""),
                            subject=meta.get("subject", ""), expect_sha256=job.sha256, origin=job.url,
                            move=True)
        except library.LibraryError as exc:
            raise DownloadError(str(exc), permanent=True) from None
        finally:
            remove_partial(part)
        return
    manifest = catalog.parse_pack_manifest(fetch_bytes(job.url))
    parts: dict[str, Path] = {}
    try:
        for i, f in enumerate(manifest.files):
            if store.has(f.sha256):
                continue
            part = _part(store, job, f"-{i}")
            fetch(urljoin(job.url, f.path), part, size=f.size, sha256=f.sha256, limits=limits,
                  progress=progress)
            parts[f.path] = part
        library.store_pack(store, manifest, lambda f: parts[f.path], name=job.name,
                           language=meta.get("language", ""), subject=meta.get("subject", ""),
                           origin=job.url)
    finally:
        for part in parts.values():
            with contextlib.suppress(OSError):
                remove_partial(part)
