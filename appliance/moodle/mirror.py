"""The mirror: runs a sync against Moodle and keeps the result in the database and the store.

`Mirror.sync()` mirrors the courses the sync account is enrolled in: for each course it reads
Moodle's description, asks what changed since the last sync, plans (`planner`), fetches what the
plan says into the library's content store (`blobs`), sanitizes every piece of HTML (`sanitize`)
and then replaces the course's rows in one transaction. Until that commit the portal serves the
old version; a sync killed at any point leaves it whole, and the next one resumes (partial files
are kept; a file the killed sync finished is confirmed by a 304 and its blob reused, see
`blobs`). One course failing records its error and the sync goes on with the next; a refused
token or a full disk stops the whole sync, and so does the end of the library's time window
(`download.Paused`, raised to the caller: the job goes back to the queue).

Each commit also replaces the course's documents in the library's search box (source
`moodle`, item `moodle-<course id>`, paths the portal's routes): the course, its listed and
available pages, books' chapters, labels, and the names of resources' and folders' files.
Stealth and restricted modules are not indexed (a search would list them). A course the account
no longer sees leaves the search at once and the mirror after the grace period; a course Moodle
reports hidden leaves both at once.

Mirror URLs (`module_url`, `file_url`, `chapter_url`) are the portal's routes; they are built
here because the sanitizer writes them into the stored HTML.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from appliance.content import search
from appliance.content.download import Limits
from appliance.content.store import ContentStore, StoreError
from appliance.moodle import blobs
from appliance.moodle.blobs import OWNER, DiskFull
from appliance.moodle.client import AuthError, Client, MoodleError
from appliance.moodle.model import Course, Instances, course_from_json, course_to_json, parse_course
from appliance.moodle.planner import (
    Change,
    ChapterKey,
    FileKey,
    Stored,
    StoredChapter,
    StoredFile,
    Updates,
    plan,
)
from appliance.moodle.sanitize import LinkMap, plain_text, sanitize
from appliance.store import transaction

log = logging.getLogger(__name__)

PREFIX = "/moodle"
MOD_GETTERS = ("page", "resource", "book", "folder", "url", "label")


def course_url(cid: int) -> str:
    return f"{PREFIX}/course/{cid}"


def module_url(cid: int, cmid: int) -> str:
    return f"{PREFIX}/course/{cid}/m/{cmid}"


def file_url(cid: int, cmid: int, path: str) -> str:
    return f"{PREFIX}/course/{cid}/m/{cmid}/file{urllib.parse.quote(path)}"


def chapter_url(cid: int, cmid: int, chapter_id: int) -> str:
    return f"{PREFIX}/course/{cid}/m/{cmid}/chapter/{chapter_id}"


def blob_key(cid: int, cmid: int, path: str) -> str:
    """A module file's key for its partial download and finished-download record."""
    return f"{cid}:{cmid}:{path}"


def search_item(cid: int) -> str:
    """The course's item name in the library's search index."""
    return f"moodle-{cid}"


# Module types whose files are offered for download (and so found by their names).
FILE_MODULES = ("resource", "folder")
SEARCH_SOURCE = "moodle"


def site_path(url: str, site_url: str) -> str:
    """A Moodle URL relative to the site, so the stored rows hold no host name."""
    return url[len(site_url.rstrip("/")):] if url.startswith(site_url.rstrip("/")) else ""


Progress = Callable[[str], None]


@dataclass
class CourseResult:
    id: int
    name: str
    ok: bool = False
    error: str | None = None
    fetched: int = 0  # files whose body came over the wire
    not_modified: int = 0  # conditional requests answered 304
    reused: int = 0  # files kept without a request
    resumed: int = 0
    wire: int = 0  # file body bytes received
    changes: list[Change] = field(default_factory=list)


@dataclass
class SyncReport:
    courses: list[CourseResult] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.ok for c in self.courses)


class SyncBusy(Exception):
    """Another sync holds the mirror's lock."""


@dataclass
class Mirror:
    """The mirror of one Moodle site in `db` (appliance.db) and `store`."""

    db: sqlite_utils.Database
    store: ContentStore  # the library's: files held under blobs.OWNER
    work_dir: Path  # the lock
    site_url: str
    reserve: int = 0  # bytes that must stay free
    grace: float = 14 * 86400.0  # seconds a course the account lost stays mirrored
    clock: Callable[[], float] = time.time
    limits: Limits = field(default_factory=Limits)  # the library's bandwidth cap and windows

    # -- reading -------------------------------------------------------------------------------
    def stored(self, cid: int) -> Stored:
        row = self.db.execute("SELECT model FROM moodle_courses WHERE id = ?", [cid]).fetchone()
        if row is None:
            return Stored()
        files = {
            (r[0], r[1]): StoredFile(r[2], r[3], r[4], r[5])
            for r in self.db.execute(
                "SELECT f.module_id, f.path, f.size, f.timemodified, f.sha1, f.sha256 FROM moodle_files f"
                " JOIN moodle_modules m ON m.id = f.module_id WHERE m.course_id = ?", [cid])
        }
        chapters = {
            (r[0], r[1]): StoredChapter(r[2], r[3])
            for r in self.db.execute(
                "SELECT c.module_id, c.chapter_id, c.timemodified, c.raw_sha256 FROM moodle_chapters c"
                " JOIN moodle_modules m ON m.id = c.module_id WHERE m.course_id = ?", [cid])
        }
        return Stored(course_from_json(row[0]), files, chapters)

    # -- syncing -------------------------------------------------------------------------------
    def sync(self, client: Client, only: int | None = None, allowed: tuple[int, ...] = (),
             progress: Progress = lambda _: None) -> SyncReport:
        """Mirror the enrolled courses (or course `only`); see the module doc."""
        report = SyncReport()
        with self._lock():
            try:
                self.store.initialise()
            except StoreError as exc:
                report.error = f"the content store cannot be used: {exc}"
                return report
            try:
                info = client.site_info()
                userid = int(info["userid"])
                enrolled = client.user_courses(userid)
            except MoodleError as exc:
                report.error = str(exc)
                return report
            # A course hidden by its teacher is listed with visible = 0: not mirrored any more.
            hidden = {int(c["id"]) for c in enrolled if not _int(c.get("visible", 1))}
            enrolled = [c for c in enrolled if int(c["id"]) not in hidden]
            ids = [int(c["id"]) for c in enrolled]
            chosen = [c for c in enrolled
                      if (only is None or int(c["id"]) == only) and (not allowed or int(c["id"]) in allowed)]
            if only is not None and not chosen:
                report.error = (f"course {only}: the sync account is not enrolled in it "
                                "(or it is not in [moodle] courses)")
                return report
            try:
                lists = [client.by_courses(name, ids) for name in MOD_GETTERS] if ids else []
            except MoodleError as exc:
                report.error = str(exc)
                return report
            instances = Instances.from_lists(*lists)
            for entry in chosen:
                result = CourseResult(int(entry["id"]), str(entry.get("fullname", "")))
                report.courses.append(result)
                progress(f"course {result.id} ({result.name}): reading")
                try:
                    self._sync_course(client, entry, instances, result, progress)
                    result.ok = True
                except (AuthError, DiskFull) as exc:
                    result.error = str(exc)
                    report.error = str(exc)
                    self._record_error(result)
                    break
                except MoodleError as exc:
                    result.error = str(exc)
                    self._record_error(result)
                    progress(f"course {result.id}: {exc}")
            if only is None and report.error is None:
                report.removed = self._lost_courses(set(ids), hidden)
            self.collect_garbage()
        return report

    def _sync_course(self, client: Client, entry: dict[str, Any], instances: Instances,
                     result: CourseResult, progress: Progress) -> None:
        cid = result.id
        started = int(self.clock())
        contents = client.course_contents(cid)
        course = parse_course(entry, contents, instances, self.site_url)
        stored = self.stored(cid)
        # A file whose blob is not in the store (another drive, a mirror from before the
        # library's store) is fetched again as if new.
        stored = Stored(stored.course, {k: v for k, v in stored.files.items() if self.store.has(v.sha256)},
                        stored.chapters)
        since_row = self.db.execute("SELECT since FROM moodle_sync WHERE course_id = ?", [cid]).fetchone()
        since = since_row[0] if since_row and stored.course is not None else None
        updates = Updates(everything=True)
        if since is not None:
            try:
                answer = client.check_updates(cid, [m.cmid for m in course.modules], since)
                updates = Updates.from_answer(answer)
            except AuthError:
                raise
            except MoodleError as exc:
                log.warning("course %s: check_updates failed (%s); comparing everything", cid, exc)
        p = plan(stored, course, updates)
        result.changes = list(p.changes)
        files: dict[FileKey, StoredFile] = dict(p.reuse)
        result.reused = len(p.reuse)
        fresh_files = {(m.cmid, f.path): f for m in course.modules for f in m.files}
        for n, task in enumerate(p.fetch, 1):
            progress(f"course {cid}: file {n}/{len(p.fetch)} {task.path}")
            got = blobs.fetch(client, self.store, task.url, key=blob_key(cid, task.cmid, task.path),
                              etag=task.etag, expected_size=task.size, reserve=self.reserve,
                              limits=self.limits)
            key = (task.cmid, task.path)
            remote = fresh_files[key]
            if got.status == "not_modified":
                old = stored.files[key]
                files[key] = StoredFile(remote.size, remote.timemodified, old.sha1, old.sha256)
                result.not_modified += 1
            elif got.finished_before:  # downloaded by a sync killed before its commit
                files[key] = StoredFile(got.size, remote.timemodified, got.sha1, got.sha256)
                result.not_modified += 1
            else:
                files[key] = StoredFile(got.size, remote.timemodified, got.sha1, got.sha256)
                result.fetched += 1
                result.resumed += int(got.resumed)
                result.wire += got.wire
        chapters: dict[ChapterKey, tuple[StoredChapter, str | None]] = {
            k: (v, None) for k, v in p.reuse_chapters.items()}
        tm = {(m.cmid, c.id): c.timemodified for m in course.modules for c in m.chapters}
        for chapter in p.fetch_chapters:
            ckey = (chapter.cmid, chapter.chapter_id)
            raw, wire = self._fetch_text(client, chapter.url)
            result.wire += wire
            result.fetched += 1
            chapters[ckey] = (StoredChapter(tm[ckey], hashlib.sha256(raw.encode()).hexdigest()), raw)
        progress(f"course {cid}: storing")
        self._commit(course, files, chapters, started, client.bytes_received)
        for task in p.fetch:  # committed: the rows list these blobs now
            blobs.forget(self.store, blob_key(cid, task.cmid, task.path))

    def _fetch_text(self, client: Client, url: str) -> tuple[str, int]:
        """A generated page (no ETag, no ranges): the whole body, as text."""
        response = client.open_file(url)
        assert response.body is not None
        with response.body as body:
            data = b"".join(iter(lambda: body.read(1 << 16), b""))
        return data.decode("utf-8", errors="replace"), len(data)

    def _commit(self, course: Course, files: dict[FileKey, StoredFile],
                chapters: dict[ChapterKey, tuple[StoredChapter, str | None]], started: int,
                received: int) -> None:
        cid = course.id
        old_raw = {(r[0], r[1]): r[2] for r in self.db.execute(
            "SELECT item_id, sub_id, raw FROM moodle_raw WHERE course_id = ? AND kind = 'chapter'", [cid])}
        raws = {k: (raw if raw is not None else old_raw.get(k, "")) for k, (_, raw) in chapters.items()}
        rows = self._render(course, files, {k: v for k, (v, _) in chapters.items()}, raws)
        docs = search_documents(course, rows)
        with transaction(self.db) as conn:
            conn.execute("DELETE FROM moodle_courses WHERE id = ?", [cid])
            conn.execute("DELETE FROM moodle_raw WHERE course_id = ?", [cid])
            size = sum(f.size for f in files.values())
            conn.execute(
                "INSERT INTO moodle_courses (id, shortname, fullname, summary_html, timemodified, position,"
                " moodle_path, synced_at, size, model) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [cid, course.shortname, course.fullname, rows["summary"], course.timemodified, 0,
                 site_path(course.moodle_url, self.site_url), self.clock(), size, course_to_json(course)])
            conn.executemany("INSERT INTO moodle_sections VALUES (?,?,?,?,?,?)", rows["sections"])
            conn.executemany("INSERT INTO moodle_modules VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows["modules"])
            conn.executemany("INSERT INTO moodle_chapters VALUES (?,?,?,?,?,?,?,?)", rows["chapters"])
            conn.executemany("INSERT INTO moodle_files VALUES (?,?,?,?,?,?,?)", rows["files"])
            conn.executemany("INSERT INTO moodle_raw VALUES (?,?,?,?,?)",
                             [(cid, "chapter", k[0], k[1], raw) for k, raw in raws.items()])
            conn.execute(
                "INSERT INTO moodle_sync (course_id, fullname, last_attempt, last_success, since, error,"
                " bytes_received, missing_since) VALUES (?,?,?,?,?,NULL,?,NULL)"
                " ON CONFLICT (course_id) DO UPDATE SET fullname = excluded.fullname,"
                " last_attempt = excluded.last_attempt, last_success = excluded.last_success,"
                " since = excluded.since, error = NULL, bytes_received = excluded.bytes_received,"
                " missing_since = NULL",
                [cid, course.fullname, self.clock(), self.clock(), started, received])
            for f in files.values():
                self.store.hold(OWNER, f.sha256)
            search.remove_documents(self.db, SEARCH_SOURCE, search_item(cid))
            search.index_many(self.db, SEARCH_SOURCE, search_item(cid), docs)

    def _render(self, course: Course, files: dict[FileKey, StoredFile],
                chapters: dict[ChapterKey, StoredChapter], raws: dict[ChapterKey, str]) -> dict[str, Any]:
        """Rows for the tables, every piece of HTML sanitized with the course's link map."""
        cid = course.id
        file_map = {(m.contextid, f.path): file_url(cid, m.cmid, f.path)
                    for m in course.modules for f in m.files if (m.cmid, f.path) in files}
        mod_map = {m.cmid: module_url(cid, m.cmid) for m in course.modules if m.available and m.supported}
        links = LinkMap(self.site_url, file_map, mod_map)
        mime = {(m.cmid, f.path): f.mimetype for m in course.modules for f in m.files}
        out: dict[str, Any] = {"summary": sanitize(course.summary, links), "sections": [], "modules": [],
                               "chapters": [], "files": []}
        for s in course.sections:
            out["sections"].append((s.id, cid, s.number, s.name, sanitize(s.summary, links), s.position))
        for m in course.modules:
            page_links = LinkMap(self.site_url, file_map, mod_map, (m.contextid, "/"))
            out["modules"].append((
                m.cmid, cid, m.section_id, m.position, m.modname, m.name, int(m.listed), int(m.available),
                sanitize(m.availability, links), sanitize(m.description, page_links),
                sanitize(m.content, page_links), m.external_url, site_path(m.moodle_url, self.site_url)))
            for pos, ch in enumerate(m.chapters):
                stored = chapters.get((m.cmid, ch.id))
                if stored is None:
                    continue
                chapter_links = LinkMap(self.site_url, file_map, mod_map, (m.contextid, f"/{ch.id}/"))
                out["chapters"].append((m.cmid, ch.id, pos, ch.level, ch.title,
                                        sanitize(raws.get((m.cmid, ch.id), ""), chapter_links),
                                        stored.timemodified, stored.sha256))
        for (cmid, path), f in files.items():
            out["files"].append((cmid, path, mime.get((cmid, path), "application/octet-stream"),
                                 f.size, f.timemodified, f.sha1, f.sha256))
        return out

    def rerender(self) -> int:
        """Sanitize every course again from the kept raw HTML (after a sanitizer change);
        nothing is fetched. Returns the number of courses."""
        ids = [r[0] for r in self.db.execute("SELECT id FROM moodle_courses")]
        for cid in ids:
            stored = self.stored(cid)
            assert stored.course is not None
            raws = {(r[0], r[1]): r[2] for r in self.db.execute(
                "SELECT item_id, sub_id, raw FROM moodle_raw WHERE course_id = ? AND kind = 'chapter'",
                [cid])}
            chapters = {k: (v, raws.get(k, "")) for k, v in stored.chapters.items()}
            since = self.db.execute("SELECT since FROM moodle_sync WHERE course_id = ?", [cid]).fetchone()
            self._commit(stored.course, dict(stored.files), chapters, since[0] if since else 0, 0)
        return len(ids)

    def _record_error(self, result: CourseResult) -> None:
        with transaction(self.db) as conn:
            conn.execute(
                "INSERT INTO moodle_sync (course_id, fullname, last_attempt, error) VALUES (?,?,?,?)"
                " ON CONFLICT (course_id) DO UPDATE SET last_attempt = excluded.last_attempt,"
                " error = excluded.error", [result.id, result.name, self.clock(), result.error])

    def _lost_courses(self, enrolled: set[int], hidden: set[int]) -> list[int]:
        """Courses the account no longer sees: out of the search at once, marked, then removed
        after the grace period; courses Moodle reports hidden are removed at once."""
        now = self.clock()
        removed = []
        for cid, missing in self.db.execute(
                "SELECT c.id, s.missing_since FROM moodle_courses c LEFT JOIN moodle_sync s"
                " ON s.course_id = c.id").fetchall():
            if cid in enrolled:
                continue
            with transaction(self.db) as conn:
                search.remove_documents(self.db, SEARCH_SOURCE, search_item(cid))
                if cid in hidden or (missing is not None and now - missing >= self.grace):
                    conn.execute("DELETE FROM moodle_courses WHERE id = ?", [cid])
                    conn.execute("DELETE FROM moodle_raw WHERE course_id = ?", [cid])
                    conn.execute("DELETE FROM moodle_sync WHERE course_id = ?", [cid])
                    removed.append(cid)
                elif missing is None:
                    conn.execute("INSERT INTO moodle_sync (course_id, missing_since) VALUES (?, ?)"
                                 " ON CONFLICT (course_id) DO UPDATE"
                                 " SET missing_since = excluded.missing_since",
                                 [cid, now])
        return removed

    def collect_garbage(self) -> int:
        """Release the blobs no mirrored file refers to any more; returns how many left the
        store. Only blobs the mirror held are released, and one the library (or another
        owner) still refers to stays: a library file is never deleted here."""
        used = {r[0] for r in self.db.execute("SELECT sha256 FROM moodle_files")}
        return self.store.release(OWNER, keep=used)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with (self.work_dir / "sync.lock").open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SyncBusy(f"another sync is running ({self.work_dir / 'sync.lock'})") from None
            yield


def status(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Per course: name, last sync, last attempt, size in bytes, error, missing since."""
    rows = db.execute(
        "SELECT s.course_id, coalesce(c.fullname, s.fullname), s.last_success, s.last_attempt,"
        " coalesce(c.size, 0), s.error, s.missing_since, c.id IS NOT NULL"
        " FROM moodle_sync s LEFT JOIN moodle_courses c ON c.id = s.course_id"
        " ORDER BY s.course_id").fetchall()
    return [{"course": r[0], "name": r[1], "last_sync": r[2], "last_attempt": r[3], "size": r[4],
             "error": r[5], "missing_since": r[6], "mirrored": bool(r[7])} for r in rows]


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def search_documents(course: Course, rows: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(path, title, text) for the search index from a course's rendered rows; the course's own
    page first (its title names the item in the results)."""
    cid = course.id
    sections = " ".join(f"{name} {plain_text(summary)}" for _, _, _, name, summary, _ in rows["sections"])
    docs = [(course_url(cid), course.fullname, f"{plain_text(rows['summary'])} {sections}")]
    shown: dict[int, tuple[str, str]] = {}
    for (cmid, _c, _s, _p, modname, name, listed, available, _a, description, content, _e,
         _m) in rows["modules"]:
        if not (listed and available) or modname not in MOD_GETTERS:
            continue
        shown[cmid] = (modname, name)
        if modname == "label":
            docs.append((f"{course_url(cid)}#m-{cmid}", name, plain_text(description)))
        else:
            docs.append((module_url(cid, cmid), name, f"{plain_text(description)} {plain_text(content)}"))
    for cmid, chid, _pos, _level, title, html_text, _tm, _sha in rows["chapters"]:
        if cmid in shown:
            docs.append((chapter_url(cid, cmid, chid), title, f"{shown[cmid][1]} {plain_text(html_text)}"))
    for cmid, path, *_ in rows["files"]:
        if cmid in shown and shown[cmid][0] in FILE_MODULES:
            docs.append((file_url(cid, cmid, path), path.rsplit("/", 1)[-1], shown[cmid][1]))
    return docs
