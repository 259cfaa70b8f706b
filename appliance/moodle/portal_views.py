"""The mirror on the student portal, under `/moodle`: courses, sections, modules, files.

Read-only and without JavaScript. Every piece of Moodle HTML was sanitized at sync time
(`sanitize`); everything else is escaped by the templates. Files are served from the library's
content store with the file's own name (`filename*`, so Cyrillic names show right) and only
types that cannot run script in the portal's origin are shown inline; the rest are downloads.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, g, redirect, render_template, send_file

from appliance import i18n
from appliance.config import Config
from appliance.content.store import ContentStore
from appliance.moodle import mirror
from appliance.store import open_db

bp = Blueprint("moodle", __name__, url_prefix=mirror.PREFIX)

# Shown in the browser; anything else (HTML, SVG, unknown) is sent as a download.
INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf",
                "text/plain", "text/csv", "audio/mpeg", "audio/ogg", "video/mp4", "video/webm")
# The module types the mirror copies; the rest are "open in Moodle when online".
MIRRORED = ("page", "resource", "book", "folder", "url", "label")


def _config() -> Config:
    config: Config = current_app.config["APPLIANCE_CONFIG"]
    return config


def _db() -> Any:
    if "moodle_db" not in g:
        path = _config().database_path
        db = open_db(path, readonly=True) if path.exists() else None
        if db is not None and not db["moodle_courses"].exists():
            db.conn.close()
            db = None
        g.moodle_db = db
    return g.moodle_db


@bp.teardown_app_request
def _close(exc: BaseException | None) -> None:
    db = g.pop("moodle_db", None)
    if db is not None:
        db.conn.close()


def _rows(sql: str, params: list[Any]) -> list[dict[str, Any]]:
    db = _db()
    if db is None:
        return []
    cursor = db.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _one(sql: str, params: list[Any]) -> dict[str, Any]:
    rows = _rows(sql, params)
    if not rows:
        abort(404)
    return rows[0]


@bp.app_template_filter("moodle_when")
def _when(ts: float | None) -> str:
    return i18n.format_when(ts, i18n.formatting_locale())


@bp.get("/")
def courses() -> Any:
    items = _rows("SELECT id, fullname, shortname, summary_html, synced_at FROM moodle_courses"
                  " ORDER BY fullname", [])
    return render_template("moodle/index.html", courses=items)


@bp.get("/course/<int:cid>")
def course(cid: int) -> Any:
    info = _one("SELECT id, fullname, shortname, summary_html, synced_at FROM moodle_courses"
                " WHERE id = ?", [cid])
    sections = _rows("SELECT id, number, name, summary_html FROM moodle_sections WHERE course_id = ?"
                     " ORDER BY position", [cid])
    modules = _rows("SELECT id, section_id, modname, name, available, availability_html, description_html,"
                    " external_url FROM moodle_modules WHERE course_id = ? AND listed = 1 ORDER BY position",
                    [cid])
    for s in sections:
        s["modules"] = [m for m in modules if m["section_id"] == s["id"]]
    return render_template("moodle/course.html", course=info, sections=sections, mirrored=MIRRORED)


@bp.get("/course/<int:cid>/m/<int:cmid>")
def module(cid: int, cmid: int) -> Any:
    info = _one("SELECT id, fullname FROM moodle_courses WHERE id = ?", [cid])
    mod = _one("SELECT * FROM moodle_modules WHERE course_id = ? AND id = ?", [cid, cmid])
    files = _rows("SELECT path, mimetype, size FROM moodle_files WHERE module_id = ? ORDER BY path", [cmid])
    for f in files:
        f["url"] = mirror.file_url(cid, cmid, f["path"])
        f["name"] = f["path"].rsplit("/", 1)[-1]
        f["depth"] = f["path"].count("/") - 1
        f["folder"] = f["path"].rsplit("/", 1)[0]
    chapters = _rows("SELECT chapter_id, level, title FROM moodle_chapters WHERE module_id = ?"
                     " ORDER BY position", [cmid])
    if mod["modname"] == "book":
        files = []  # chapter images belong to their chapters
    return render_template("moodle/module.html", course=info, module=mod, files=files,
                           folders=_folder_rows(files), chapters=chapters, mirrored=MIRRORED)


def _folder_rows(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Files with a heading row before each sub-folder, indented by depth (a folder's tree)."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for f in sorted(files, key=lambda f: (f["folder"], f["name"])):
        parts = [p for p in f["folder"].split("/") if p]
        for depth in range(len(parts)):
            key = "/".join(parts[:depth + 1])
            if key not in seen:
                seen.add(key)
                rows.append({"folder": parts[depth], "depth": depth})
        rows.append({**f, "depth": len(parts)})
    return rows


@bp.get("/course/<int:cid>/m/<int:cmid>/chapter/<int:chid>")
def chapter(cid: int, cmid: int, chid: int) -> Any:
    info = _one("SELECT id, fullname FROM moodle_courses WHERE id = ?", [cid])
    mod = _one("SELECT id, name FROM moodle_modules WHERE course_id = ? AND id = ? AND modname = 'book'"
               " AND available = 1", [cid, cmid])
    chapters = _rows("SELECT chapter_id, level, title, html FROM moodle_chapters WHERE module_id = ?"
                     " ORDER BY position", [cmid])
    index = next((i for i, c in enumerate(chapters) if c["chapter_id"] == chid), None)
    if index is None:
        abort(404)
    return render_template(
        "moodle/chapter.html", course=info, module=mod, chapter=chapters[index], chapters=chapters,
        previous=chapters[index - 1] if index > 0 else None,
        next=chapters[index + 1] if index + 1 < len(chapters) else None)


@bp.get("/course/<int:cid>/m/<int:cmid>/file/<path:path>")
def file(cid: int, cmid: int, path: str) -> Any:
    row = _one("SELECT f.sha256, f.mimetype, f.path FROM moodle_files f JOIN moodle_modules m"
               " ON m.id = f.module_id WHERE m.course_id = ? AND f.module_id = ? AND f.path = ?"
               " AND m.available = 1", [cid, cmid, "/" + path])
    # Only the path is needed: the portal's connection to the database is read-only.
    blob = ContentStore(_config().content.root, _db()).path(row["sha256"])
    if not blob.is_file():
        abort(404)
    inline = row["mimetype"] in INLINE_TYPES
    response = send_file(
        blob.open("rb"), mimetype=row["mimetype"] if inline else "application/octet-stream",
        as_attachment=not inline, download_name=row["path"].rsplit("/", 1)[-1],
        etag=row["sha256"], conditional=True, max_age=3600)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/course/<int:cid>/go/<int:cmid>")
def go(cid: int, cmid: int) -> Any:
    """To the module on the school's Moodle (works only when the internet does)."""
    mod = _one("SELECT moodle_path FROM moodle_modules WHERE course_id = ? AND id = ?", [cid, cmid])
    site = _config().moodle.url.rstrip("/")
    if not site or not mod["moodle_path"].startswith("/"):
        abort(404)
    return redirect(site + mod["moodle_path"], code=303)
