"""A sync, then a resync, against a replay of the recorded Moodle (state 1, then state 2)."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance.config import dump_toml, from_dict
from appliance.moodle.blobs import OWNER
from appliance.moodle.client import Client, Credentials, MoodleError
from appliance.moodle.mirror import Mirror
from appliance.moodle.replay import ReplayMoodle
from appliance.moodle.service import open_database
from appliance.portal.app import create_app
from tests.conftest import SHARED

DATA = SHARED / "data" / "moodle"
T1, T2 = 1795529925, 1795529970  # the recordings' `since` values (state*/meta.json)


@pytest.fixture
def replay():
    with ReplayMoodle(DATA / "state1") as server:
        yield server


@pytest.fixture
def cfg(tmp_path, replay):
    (tmp_path / "pw").write_text("Sync#Bot2024\n")
    (tmp_path / "pw").chmod(0o600)
    return from_dict(
        {
            "appliance": {"id": "t", "state_dir": str(tmp_path / "state")},
            "content": {"root": str(tmp_path / "library")},
            "moodle": {
                "url": replay.url,
                "username": "syncbot",
                "password_file": str(tmp_path / "pw"),
                "min_free_mb": 0,
            },
        }
    )


class Rig:
    def __init__(self, cfg, replay):
        self.cfg, self.replay, self.now = cfg, replay, T1
        self.db = open_database(cfg)
        root = cfg.appliance.state_dir / "moodle"
        from appliance.moodle.service import content_store  # the library's store, as the CLI builds it

        self.store = content_store(cfg, self.db)
        self.mirror = Mirror(self.db, self.store, root / "work", replay.url, clock=lambda: self.now)
        self.client = self.new_client()

    def new_client(self, timeout=10.0):
        return Client(
            self.replay.url,
            Credentials(
                username="syncbot",
                password_reader=lambda: "Sync#Bot2024",
                token_cache=self.cfg.appliance.state_dir / "moodle" / "token",
            ),
            timeout=timeout,
        )

    def sync(self, **kw):
        return self.mirror.sync(self.client, **kw)

    def files_sent(self):
        return {p: n for p, n in self.replay.sent.items() if p.startswith("/webservice/pluginfile.php/")}

    def every_stored_byte(self) -> bytes:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        served_tables = b""
        for table in (
            "moodle_courses",
            "moodle_sections",
            "moodle_modules",
            "moodle_chapters",
            "moodle_files",
        ):
            cols = [r[1] for r in self.db.execute(f"PRAGMA table_info({table})") if r[1] != "model"]
            for row in self.db.execute(f"SELECT {', '.join(cols)} FROM {table}"):
                served_tables += repr(row).encode()
        blobs = b"".join(self.store.path(s).read_bytes() for s in self.store.held(OWNER))
        partial = b"".join(p.read_bytes() for p in self.store.tmp_dir.iterdir())
        return served_tables + blobs + partial


@pytest.fixture
def rig(cfg, replay):
    return Rig(cfg, replay)


def modules(db, cid):
    return {
        r[0]: r[1:]
        for r in db.execute(
            "SELECT id, modname, listed, available, content_html FROM moodle_modules WHERE course_id = ?",
            [cid],
        )
    }


def sync_config(tmp_path: Path, cfg, url: str) -> Path:
    """An appliance.toml for a real `appliance moodle sync` process on this test's mirror."""
    path = tmp_path / "appliance.toml"
    path.write_text(dump_toml({
        "appliance": {"id": "t", "state_dir": cfg.appliance.state_dir},
        "content": {"root": cfg.content.root},
        "moodle": {"url": url, "username": "syncbot", "password_file": cfg.moodle.password_file,
                   "min_free_mb": 0},
    }))
    return path


def test_state1_mirrors_exactly_what_the_sync_account_may_see(rig):
    report = rig.sync()
    assert report.ok, report
    mods = modules(rig.db, 2)
    assert 10 not in mods and 14 not in mods  # hidden module; module of a hidden section
    assert [
        r[0]
        for r in rig.db.execute("SELECT number FROM moodle_sections WHERE course_id = 2 ORDER BY position")
    ] == [0, 1, 2, 3]
    assert mods[11][2] == 0 and mods[11][3] == ""  # restricted: its note only
    assert (
        rig.db.execute("SELECT availability_html FROM moodle_modules WHERE id = 11")
        .fetchone()[0]
        .startswith("Available from")
    )
    assert mods[12][1] == 0 and mods[12][2] == 1 and "экосистемы" in mods[12][3]  # stealth
    assert (
        rig.db.execute("SELECT count(*) FROM moodle_files WHERE module_id IN (10, 11, 14)").fetchone()[0] == 0
    )
    assert {r[0] for r in rig.db.execute("SELECT chapter_id FROM moodle_chapters WHERE module_id = 7")} == {
        1,
        2,
        3,
    }
    stored = rig.every_stored_byte()
    for leak in (b"TOKEN", b"pluginfile.php", b"moodle.example", rig.replay.url.encode(), b"<script"):
        assert leak not in stored


def test_state2_transfers_only_what_changed_and_mirrors_what_updates_do_not_report(rig):
    assert rig.sync().ok
    rig.replay.sent.clear()
    rig.replay.load(DATA / "state2")
    rig.now = T2
    report = rig.sync()
    assert report.ok, report
    assert rig.files_sent() == {
        "/webservice/pluginfile.php/21/mod_resource/content/1/worksheet_cell_v2.pdf": 774,
        "/webservice/pluginfile.php/42/mod_page/content/0/genetics.png": 1567,
        "/webservice/pluginfile.php/24/mod_book/chapter/4/index.html": 218,
    }
    mods = modules(rig.db, 2)
    assert 5 not in mods and 6 not in mods  # deleted and hidden, although not reported
    assert 25 in mods and "/moodle/course/2/m/25/file/genetics.png" in mods[25][3]
    assert "Древний Рим и Карфаген" in [
        r[0] for r in rig.db.execute("SELECT name FROM moodle_sections WHERE course_id = 3")
    ]
    assert rig.db.execute("SELECT count(*) FROM moodle_files WHERE module_id = 5").fetchone()[0] == 0
    assert {r[0] for r in rig.db.execute("SELECT chapter_id FROM moodle_chapters WHERE module_id = 7")} == {
        1,
        2,
        3,
        4,
    }
    assert rig.db.execute("SELECT path FROM moodle_files WHERE module_id = 4").fetchall() == [
        ("/worksheet_cell_v2.pdf",)
    ]
    # the replaced PDF's and the deleted image's blobs are collected
    assert (
        rig.store.held(OWNER)
        == {r[0] for r in rig.db.execute("SELECT sha256 FROM moodle_files")}
    )
    rig.replay.sent.clear()
    assert rig.sync().ok  # nothing changed since: no file is transferred (the recording has no later state)
    assert rig.files_sent() == {}


def test_an_expired_token_is_renewed_and_never_logged(rig, caplog):
    caplog.set_level(logging.DEBUG)
    assert rig.sync().ok
    rig.replay.invalidate_token()
    new_client = rig.new_client()  # reads the cached, now refused token
    rig.client = new_client
    rig.replay.load(DATA / "state2")
    rig.now = T2
    assert rig.sync().ok
    for token in {*rig.replay.seen_tokens, rig.replay.token}:
        assert token not in caplog.text
    assert (rig.cfg.appliance.state_dir / "moodle" / "token").stat().st_mode & 0o077 == 0


def test_a_refused_token_without_password_is_a_clear_error(rig):
    rig.client = Client(rig.replay.url, Credentials(token_reader=lambda: "0123456789abcdef0123456789abcdef"))
    report = rig.sync()
    assert not report.ok and "invalidtoken" in report.error and "renew it" in report.error
    assert "0123456789abcdef" not in report.error


def test_a_download_cut_off_keeps_the_old_course_and_resumes_with_range(rig):
    assert rig.sync().ok
    rig.replay.load(DATA / "state2")
    rig.now = T2
    path = "/webservice/pluginfile.php/21/mod_resource/content/1/worksheet_cell_v2.pdf"
    rig.replay.cut[path] = 300
    report = rig.sync()
    bio = next(c for c in report.courses if c.id == 2)
    assert not bio.ok and "truncated" in bio.error
    # the old version of the course is whole and served
    assert rig.db.execute("SELECT path FROM moodle_files WHERE module_id = 4").fetchall() == [
        ("/worksheet_cell.pdf",)
    ]
    assert 5 in modules(rig.db, 2)
    del rig.replay.cut[path]
    rig.replay.sent.clear()
    report = rig.sync()
    assert report.ok
    assert rig.replay.sent[path] == 774 - 300  # only the rest came over the wire
    assert next(c for c in report.courses if c.id == 2).resumed == 1


def test_moodle_errors_are_mapped(rig):
    rig.replay.load(DATA / "state2")
    rig.client.token()
    with pytest.raises(MoodleError) as exc:
        rig.client.call("core_course_get_contents", courseid=4)
    assert exc.value.errorcode == "errorcoursecontextnotvalid" and "not enrolled" in str(exc.value)
    with pytest.raises(MoodleError) as exc:
        rig.client.open_file(
            rig.replay.url + "/webservice/pluginfile.php/34/mod_resource/content/0/no-such-file.pdf"
        )
    assert exc.value.errorcode == "filenotfound" and "TOKEN" not in str(exc.value)
    report = rig.sync(only=4)
    assert not report.ok and "not enrolled" in report.error


def test_a_slow_server_times_out_with_a_clear_error(rig):
    rig.replay.delay = 1.0
    rig.client = rig.new_client(timeout=0.3)
    report = rig.sync()
    assert not report.ok and "timed out" in report.error


def test_the_portal_serves_the_mirror_escaped_and_offline(rig, cfg):
    assert rig.sync().ok
    rig.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    app = create_app(cfg)
    client = app.test_client()
    pages = [
        "/moodle/",
        "/moodle/course/2",
        "/moodle/course/3",
        "/moodle/course/2/m/3",
        "/moodle/course/2/m/7",
        "/moodle/course/2/m/7/chapter/2",
        "/moodle/course/2/m/8",
        "/moodle/course/2/m/12",
        "/moodle/course/2/m/11",
        "/moodle/course/2/m/24",
        "/moodle/course/3/m/17",
    ]
    for url in pages:
        r = client.get(url, headers={"Accept-Language": "ru"})
        assert r.status_code == 200, url
        body = r.data
        for leak in (
            b"pluginfile.php",
            b"moodle.example",
            rig.replay.url.encode(),
            b"TOKEN",
            b"<script",
            b"onclick",
        ):
            assert leak not in body, (url, leak)
    # a teacher's name with markup is escaped, not interpreted
    rig.db.execute("UPDATE moodle_modules SET name = '<b onclick=x>Bold</b>' WHERE id = 3")
    course = client.get("/moodle/course/2").data.decode()
    assert "&lt;b onclick=x&gt;Bold&lt;/b&gt;" in course
    assert "/moodle/course/2/m/12" not in course  # stealth: not listed
    assert "Open in Moodle when online" in course  # forum, assign, quiz
    f = client.get("/moodle/course/3/m/17/file/Карта Египта.pdf")
    assert f.status_code == 200 and f.data.startswith(b"%PDF")
    assert "filename*=UTF-8''%D0%9A%D0%B0%D1%80%D1%82%D0%B0" in f.headers["Content-Disposition"]
    assert client.get("/moodle/course/2/m/11/file/x").status_code == 404
    go = client.get("/moodle/course/2/go/2")
    assert go.status_code == 303 and go.headers["Location"].endswith("/mod/forum/view.php?id=2")


def test_the_killed_commit_leaves_the_old_course(rig, monkeypatch):
    assert rig.sync().ok
    rig.replay.load(DATA / "state2")
    rig.now = T2
    original = rig.mirror._render

    def crash(*args, **kwargs):
        rows = original(*args, **kwargs)
        rows["files"].append(rows["files"][0])  # a duplicate key: the INSERT fails mid-transaction
        return rows

    monkeypatch.setattr(rig.mirror, "_render", crash)
    with pytest.raises(sqlite3.IntegrityError):
        rig.sync()
    assert 5 in modules(rig.db, 2) and 25 not in modules(rig.db, 2)


def test_files_live_in_the_library_store_and_neither_collection_takes_the_others(rig, tmp_path):
    from appliance.content import library

    assert rig.sync().ok
    pdf = rig.db.execute("SELECT sha256 FROM moodle_files WHERE module_id = 4").fetchone()[0]
    png = rig.db.execute(
        "SELECT sha256 FROM moodle_files WHERE module_id = 3 AND path = '/cell.png'").fetchone()[0]
    assert rig.store.path(pdf).is_file() and rig.store.has(pdf)  # in the library's store, indexed
    # A library pack that shares the worksheet and the cell picture with the mirror, plus its own file.
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "worksheet.pdf").write_bytes(rig.store.path(pdf).read_bytes())
    (pack / "cell.png").write_bytes(rig.store.path(png).read_bytes())
    (pack / "index.html").write_text("<title>Cells</title><p>About cells</p>")
    library.add_pack(rig.store, pack, name="cells")  # runs the library's collection
    held = rig.store.held(OWNER)
    assert held == {r[0] for r in rig.db.execute("SELECT sha256 FROM moodle_files")}
    assert all(rig.store.path(s).is_file() for s in held)  # the library kept every Moodle file
    # State 2 replaces the worksheet: the mirror releases it, the pack still has it.
    rig.replay.load(DATA / "state2")
    rig.now = T2
    assert rig.sync().ok
    assert pdf not in rig.store.held(OWNER) and rig.store.path(pdf).is_file()
    own = {s for (s,) in rig.db.execute("SELECT sha256 FROM content_files WHERE item = 'cells'")}
    # the mirror's collection took nothing of the library's
    assert all(rig.store.path(s).is_file() for s in own)
    # Removing the pack deletes what only it used, never what the mirror holds.
    library.remove(rig.store, "cells")
    assert not rig.store.path(pdf).exists()
    assert png in rig.store.held(OWNER) and rig.store.path(png).is_file()
    served = create_app(rig.cfg).test_client().get("/moodle/course/2/m/3/file/cell.png")
    assert served.status_code == 200 and served.data == rig.store.path(png).read_bytes()


def test_the_library_search_finds_mirrored_pages_chapters_labels_and_files(rig, cfg):
    from appliance.content import search

    assert rig.sync().ok

    def paths(query):
        return {h.path for h in search.search(rig.db, query, limit=50) if h.source == "moodle"}

    assert "/moodle/course/2/m/7/chapter/2" in paths("хлоропласт")  # a book chapter
    assert "/moodle/course/2/m/8/file/%D0%9F%D1%80%D0%B0%D0%B2%D0%B8%D0%BB%D0%B0%20%D0%A2%D0%91.pdf" in paths(
        "Правила")  # a folder's file by its name
    assert "/moodle/course/3/m/16" in paths("пирамиды")  # a page
    assert "/moodle/course/2" in paths("Экосистемы")  # the course by its section's name
    assert "/moodle/course/3#m-15" in paths("консультации")  # a label, on its course page
    everything = {p for (p,) in rig.db.execute("SELECT path FROM content_docs WHERE source = 'moodle'")}
    for never in ("/m/10", "/m/11", "/m/12", "/m/14"):  # hidden, restricted, stealth, hidden section
        assert not any(p.endswith(never) for p in everything), never
    page = create_app(cfg).test_client().get("/search?q=хлоропласт").data.decode()
    assert 'href="/moodle/course/2/m/7/chapter/2"' in page and "Biology 7" in page

    # A course Moodle reports hidden leaves the mirror and the search at once.
    calls = rig.replay.recording.calls
    key = next(k for k in calls if ("wsfunction", "core_enrol_get_users_courses") in k[1])
    rec = rig.replay.recording.calls[key]
    courses = json.loads(rec.body)
    for c in courses:
        if c["id"] == 3:
            c["visible"] = 0
    rig.replay.recording.calls[key] = dataclasses.replace(rec, body=json.dumps(courses).encode())
    report = rig.sync()
    assert report.ok and report.removed == [3]
    assert not any(p.startswith("/moodle/course/3") for p in paths("пирамиды Египет Рим"))
    assert rig.db.execute("SELECT count(*) FROM moodle_courses WHERE id = 3").fetchone()[0] == 0
    # One the account lost leaves the search at once, the mirror after the grace period.
    del courses[[c["id"] for c in courses].index(2)]
    rig.replay.recording.calls[key] = dataclasses.replace(rec, body=json.dumps(courses).encode())
    assert rig.sync().ok
    assert paths("хлоропласт") == set()
    assert rig.db.execute("SELECT count(*) FROM moodle_courses WHERE id = 2").fetchone()[0] == 1


def queued_cfg(cfg, **content):
    return from_dict({"appliance": {"id": "t", "state_dir": str(cfg.appliance.state_dir)},
                      "content": {"root": str(cfg.content.root), **content},
                      "moodle": {"url": cfg.moodle.url, "username": "syncbot",
                                 "password_file": str(cfg.moodle.password_file), "min_free_mb": 0}})


def test_a_sync_is_a_job_of_the_library_queue_and_waits_outside_its_windows(rig, cfg):
    from appliance.content.jobs import JobQueue
    from appliance.moodle.service import run_queued

    now = datetime.datetime.now()
    later = [(now + datetime.timedelta(hours=h)).strftime("%H:%M") for h in (2, 3)]
    closed = queued_cfg(cfg, windows=[f"{later[0]}-{later[1]}"])
    waited = run_queued(closed, rig.db, rig.client)
    assert waited.report is None and "outside the sync window" in waited.paused
    assert waited.job.kind == "moodle" and waited.job.state == "queued"
    assert rig.files_sent() == {} and rig.db.execute("SELECT count(*) FROM moodle_courses").fetchone()[0] == 0
    # Asked for now, it runs (same job), ends done and leaves one finished job in the queue.
    ran = run_queued(closed, rig.db, rig.client, windows=False)
    assert ran.report is not None and ran.report.ok and ran.job.id == waited.job.id
    assert ran.job.state == "done" and ran.job.done_bytes == sum(c.wire for c in ran.report.courses) > 0
    again = run_queued(queued_cfg(cfg), rig.db, rig.client)
    assert again.report.ok and again.job.id != ran.job.id
    assert [(j.name, j.state) for j in JobQueue(rig.db).list()] == [("moodle", "done")]


def test_a_sync_waits_for_the_library_queue_and_obeys_its_bandwidth_cap(rig, cfg):
    from appliance.content.jobs import JobQueue
    from appliance.moodle.service import run_queued

    assert rig.sync().ok
    rig.replay.sent.clear()
    rig.replay.load(DATA / "state2")
    rig.now = T2
    holding, release = threading.Event(), threading.Event()

    def library_download():
        with JobQueue(rig.db).running():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=library_download)
    holder.start()
    assert holding.wait(5)
    waits = []
    capped = queued_cfg(cfg, bandwidth_kbps=8)  # 1,000 bytes a second

    def waiting():
        waits.append(time.monotonic())
        release.set()

    started = time.monotonic()
    done = run_queued(capped, rig.db, rig.client, waiting=waiting)
    elapsed = time.monotonic() - started
    holder.join()
    assert len(waits) == 1 and done.report.ok
    # 774 + 1,567 file bytes at 1,000 bytes a second (the generated chapter is no file download)
    assert sum(rig.files_sent().values()) == 774 + 1567 + 218
    assert elapsed >= 2.2, elapsed


def test_a_sync_killed_during_a_transfer_keeps_the_old_course_served_and_resumes(rig, cfg, tmp_path):
    from appliance.content.jobs import JobQueue
    from appliance.moodle.blobs import partial_paths
    from appliance.moodle.service import run_queued

    assert rig.sync().ok
    old_sha = rig.db.execute("SELECT sha256 FROM moodle_files WHERE module_id = 4").fetchone()[0]
    old_pdf = rig.store.path(old_sha)
    rig.replay.load(DATA / "state2")
    path = "/webservice/pluginfile.php/21/mod_resource/content/1/worksheet_cell_v2.pdf"
    rig.replay.stall[path] = 300
    config = sync_config(tmp_path, cfg, rig.replay.url)
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config), "moodle", "sync",
                             "--now", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert rig.replay.stalled.wait(30), "the sync never reached the PDF"
        part, _ = partial_paths(rig.store, "2:4:/worksheet_cell_v2.pdf")
        deadline = time.monotonic() + 10
        while not (part.exists() and part.stat().st_size == 300) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # mid-transfer: 300 of 774 bytes on disk
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert part.stat().st_size == 300
    # The old course is whole and served.
    assert rig.db.execute("SELECT path FROM moodle_files WHERE module_id = 4").fetchall() == [
        ("/worksheet_cell.pdf",)
    ]
    served = create_app(rig.cfg).test_client().get("/moodle/course/2/m/4/file/worksheet_cell.pdf")
    assert served.status_code == 200 and served.data == old_pdf.read_bytes()
    assert [j.state for j in JobQueue(rig.db).list()] == ["running"]  # what the kill left
    # The next sync takes the job up again and fetches only the rest of the file.
    rig.replay.unstall.set()
    del rig.replay.stall[path]
    rig.replay.sent.clear()
    done = run_queued(queued_cfg(cfg), rig.db, rig.client, windows=False)
    assert done.report.ok and done.job.state == "done"
    assert rig.replay.sent[path] == 774 - 300
    assert next(c for c in done.report.courses if c.id == 2).resumed == 1
    assert rig.db.execute("SELECT path FROM moodle_files WHERE module_id = 4").fetchall() == [
        ("/worksheet_cell_v2.pdf",)
    ]
    assert not part.exists()


# What a clean incremental sync (state 1 -> state 2) sends: the file bytes on the wire.
INCREMENTAL = {
    "/webservice/pluginfile.php/21/mod_resource/content/1/worksheet_cell_v2.pdf": 774,
    "/webservice/pluginfile.php/42/mod_page/content/0/genetics.png": 1567,
    "/webservice/pluginfile.php/24/mod_book/chapter/4/index.html": 218,
}

# Loaded by the killed `appliance moodle sync` only (PYTHONPATH): every connection of the
# process is one whose statements it watches; the commit of course 2's new version is the
# transaction that inserts its `moodle_courses` row. KILL_AT=swap: SIGKILL once the old rows
# are deleted and the new course, sections, modules, chapters and files are written inside the
# transaction. KILL_AT=commit: the COMMIT itself, through killwal.so (LD_PRELOAD), dies at its
# third write to the log: frames of the transaction written, its commit frame not.
SITECUSTOMIZE = '''
import ctypes
import os
import signal
import sqlite3
from pathlib import Path

_mode = os.environ["KILL_AT"]
_marker = Path(os.environ["KILL_MARKER"])
_connect = sqlite3.connect


class _Watched(sqlite3.Connection):
    course_two = False

    def execute(self, sql, *args):
        if sql.startswith("INSERT INTO moodle_courses") and args and args[0][0] == 2:
            self.course_two = True
        if _mode == "commit" and sql == "COMMIT" and self.course_two:
            _marker.write_text("commit")
            ctypes.CDLL(None).killwal_arm(3)
            result = super().execute(sql, *args)
            os._exit(3)  # the commit finished before the kill: the test fails
        return super().execute(sql, *args)

    def executemany(self, sql, *args):
        result = super().executemany(sql, *args)
        if _mode == "swap" and sql.startswith("INSERT INTO moodle_files") and self.course_two:
            _marker.write_text("swap")
            os.kill(os.getpid(), signal.SIGKILL)
        return result


def _watched_connect(*args, **kwargs):
    kwargs.setdefault("factory", _Watched)
    return _connect(*args, **kwargs)


sqlite3.connect = _watched_connect
'''

COURSE_TWO_URLS = [
    "/moodle/course/2",
    "/moodle/course/2/m/3",
    "/moodle/course/2/m/4",
    "/moodle/course/2/m/5",
    "/moodle/course/2/m/7",
    "/moodle/course/2/m/7/chapter/2",
    "/moodle/course/2/m/3/file/cell.png",
    "/moodle/course/2/m/4/file/worksheet_cell.pdf",
]


def course_two_rows(db) -> list:
    """Every row that makes up course 2 in the mirror and the search, in a stable order."""
    queries = [
        "SELECT * FROM moodle_courses WHERE id = 2",
        "SELECT * FROM moodle_sections WHERE course_id = 2 ORDER BY id",
        "SELECT * FROM moodle_modules WHERE course_id = 2 ORDER BY id",
        "SELECT c.* FROM moodle_chapters c JOIN moodle_modules m ON m.id = c.module_id"
        " WHERE m.course_id = 2 ORDER BY c.module_id, c.chapter_id",
        "SELECT f.* FROM moodle_files f JOIN moodle_modules m ON m.id = f.module_id"
        " WHERE m.course_id = 2 ORDER BY f.module_id, f.path",
        "SELECT * FROM moodle_raw WHERE course_id = 2 ORDER BY kind, item_id, sub_id",
        "SELECT * FROM moodle_sync WHERE course_id = 2",
        "SELECT path, title, body FROM content_docs WHERE source = 'moodle' AND item = 'moodle-2'"
        " ORDER BY path",
    ]
    return [db.execute(q).fetchall() for q in queries]


def served(cfg) -> dict[str, tuple[int, bytes]]:
    client = create_app(cfg).test_client()
    return {url: (r.status_code, r.data) for url in COURSE_TWO_URLS if (r := client.get(url))}


def uncommitted_frames(wal: Path) -> int:
    """Frames of the current log generation after its last commit frame: what a transaction
    killed in the middle of its COMMIT left (SQLite ignores them when it reads the log)."""
    data = wal.read_bytes()
    page = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    frames, offset = 0, 32
    while offset + 24 + page <= len(data) and data[offset + 8:offset + 16] == salts:
        truncate = struct.unpack(">I", data[offset + 4:offset + 8])[0]
        frames = 0 if truncate else frames + 1
        offset += 24 + page
    return frames


def kill_sync_at(rig, cfg, tmp_path, moment: str) -> None:
    """Run `appliance moodle sync` (state 1 mirrored, state 2 served) in a subprocess that
    SIGKILLs itself at `moment` of course 2's commit; asserts it died there."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": str(hook), "KILL_AT": moment,
           "KILL_MARKER": str(tmp_path / "killed-at")}
    if moment == "commit":
        shim = tmp_path / "killwal.so"
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(shim),
                        str(Path(__file__).with_name("killwal.c")), "-ldl"], check=True)
        env["LD_PRELOAD"] = str(shim)
    config = sync_config(tmp_path, cfg, rig.replay.url)
    proc = subprocess.run([sys.executable, "-m", "appliance", "--config", str(config), "moodle", "sync",
                           "--now", "--quiet"], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)
    assert (tmp_path / "killed-at").read_text() == moment
    wal = cfg.database_path.with_name(cfg.database_path.name + "-wal")
    # The commit died half-written: some of its frames are in the log, its commit frame is not.
    assert (uncommitted_frames(wal) > 0) == (moment == "commit")


@pytest.mark.parametrize("moment", ["swap", "commit"])
def test_a_sync_killed_during_the_swap_or_the_commit_keeps_the_old_course_and_resumes(
        rig, cfg, tmp_path, moment):
    from appliance.content.jobs import JobQueue
    from appliance.moodle.blobs import finished_path
    from appliance.moodle.service import run_queued

    assert rig.sync().ok
    before_rows = course_two_rows(rig.db)
    before_pages = served(cfg)
    assert all(status == 200 for status, _ in before_pages.values())
    before_blobs = rig.store.held(OWNER)
    rig.replay.load(DATA / "state2")
    rig.replay.sent.clear()
    kill_sync_at(rig, cfg, tmp_path, moment)
    # Everything the new version needs came over the wire before the kill.
    assert rig.files_sent() == INCREMENTAL
    # A fresh connection, as after a power cut: the database is whole and holds the old course.
    fresh = open_database(cfg)
    assert fresh.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert fresh.execute("PRAGMA foreign_key_check").fetchall() == []
    assert course_two_rows(fresh) == before_rows
    assert served(cfg) == before_pages  # pages and files, byte for byte
    # Nothing half-done is visible: no partial download left, only the records of the two
    # finished ones; every blob the old course lists is in place, and what the killed sync
    # stored is only held (no row lists it).
    records = {finished_path(rig.store, k) for k in ("2:4:/worksheet_cell_v2.pdf", "2:25:/genetics.png")}
    assert {p for p in rig.store.tmp_dir.iterdir() if p.name.startswith("moodle-")} == records
    listed = {s for (s,) in fresh.execute("SELECT sha256 FROM moodle_files")}
    assert listed == before_blobs and all(rig.store.path(s).is_file() for s in listed)
    assert [j.state for j in JobQueue(fresh).list()] == ["running"]  # what the kill left
    # The next sync takes the job up again and commits the new version. Of a clean incremental
    # sync's transfers it repeats only the generated chapter page (no ETag to ask with): the two
    # files the killed sync finished are confirmed by a 304 and their blobs reused.
    rig.replay.sent.clear()
    done = run_queued(queued_cfg(cfg), rig.db, rig.client, windows=False)
    assert done.report.ok and done.job.state == "done"
    chapter = "/webservice/pluginfile.php/24/mod_book/chapter/4/index.html"
    assert {p: n for p, n in rig.files_sent().items() if n} == {chapter: INCREMENTAL[chapter]}
    bio = next(c for c in done.report.courses if c.id == 2)
    assert (bio.fetched, bio.wire) == (1, INCREMENTAL[chapter])  # a clean one: 3, 2,559
    assert not any(p.name.startswith("moodle-") for p in rig.store.tmp_dir.iterdir())
    assert 25 in modules(rig.db, 2) and 5 not in modules(rig.db, 2)
    assert rig.db.execute("SELECT path FROM moodle_files WHERE module_id = 4").fetchall() == [
        ("/worksheet_cell_v2.pdf",)]
    assert rig.db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert rig.store.held(OWNER) == {r[0] for r in rig.db.execute("SELECT sha256 FROM moodle_files")}
    new_pdf = rig.db.execute("SELECT sha256 FROM moodle_files WHERE module_id = 4").fetchone()[0]
    got = create_app(cfg).test_client().get("/moodle/course/2/m/4/file/worksheet_cell_v2.pdf")
    assert got.status_code == 200 and got.data == rig.store.path(new_pdf).read_bytes()


def test_a_finished_download_record_is_trusted_only_as_far_as_moodle_confirms_it(rig):
    from appliance.moodle.blobs import finished_path

    assert rig.sync().ok
    some_blob = rig.db.execute("SELECT sha1, sha256, size FROM moodle_files WHERE module_id = 3").fetchone()
    rig.replay.load(DATA / "state2")
    rig.now = T2
    # The PDF's record names another file (a version Moodle no longer has): Moodle answers 200
    # and the file is fetched whole; the picture's record is torn (a kill while writing it).
    pdf = finished_path(rig.store, "2:4:/worksheet_cell_v2.pdf")
    pdf.write_text(json.dumps({"sha1": some_blob[0], "sha256": some_blob[1], "size": some_blob[2]}))
    png = finished_path(rig.store, "2:25:/genetics.png")
    png.write_text('{"sha1": "')
    rig.replay.sent.clear()
    assert rig.sync().ok
    assert rig.files_sent() == INCREMENTAL
    sha1, sha256 = rig.db.execute("SELECT sha1, sha256 FROM moodle_files WHERE module_id = 4").fetchone()
    content = rig.store.path(sha256).read_bytes()
    assert sha256 != some_blob[1] and sha1 == hashlib.sha1(content).hexdigest()  # noqa: S324 - Moodle's ETag
    assert not pdf.exists() and not png.exists()
