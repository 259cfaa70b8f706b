"""The mirror on the student portal, under `/moodle`: courses, sections, modules, files.

Read-only and without JavaScript. Every piece of Moodle HTML was sanitized at sync time
(`sanitize`); everything else is escaped by the templates. Files are served from the library's
content store with the file's own name (`filename*`, so Cyrillic names show right) and only
types that cannot run script in the portal's origin are shown inline; the rest are downloads.

A course that needs sign-in (`access.requires_signin`) is served only over HTTPS to a session
that signed in for it: every route with a course id passes `_guard` first (plain HTTP and
strangers are sent to the sign-in form, on HTTPS), and search hits are filtered by `may_see`.
The sign-in itself (`signin`) asks Moodle for the password and the enrolment when it can be
reached, and the offline hash (`access.offline`) when not; the pupil's Moodle token is used for
those two calls and dropped.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)

from appliance import i18n
from appliance.config import Config
from appliance.content.store import ContentStore
from appliance.moodle import access, mirror
from appliance.moodle.client import AuthError, Client, Credentials, MoodleError
from appliance.store import open_db
from appliance.websecurity import csrf_token, verify_csrf

log = logging.getLogger(__name__)

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


# -- access ---------------------------------------------------------------------------------------
# Session keys: the signed-in account and the mirrored courses it is enrolled in.
USER_KEY = "moodle_user"
COURSES_KEY = "moodle_courses"
# How long the portal waits for Moodle at sign-in before it treats it as unreachable.
SIGNIN_TIMEOUT = 10.0
# A course's pages, files and anchors on its page (`/moodle/course/3#m-15`, a label's hit).
_COURSE_PATH = re.compile(r"/moodle/course/(\d+)(?!\d)")


def _session_courses() -> list[int]:
    # The cookie is Secure: it only ever arrives over HTTPS, but do not trust a stray one.
    if not request.is_secure:
        return []
    courses = session.get(COURSES_KEY, [])
    return [int(c) for c in courses] if isinstance(courses, list) else []


def may_see(path: str) -> bool:
    """Whether this request may be shown a link to the portal path `path` (search results):
    False for a page of a sign-in course its session is not enrolled in."""
    match = _COURSE_PATH.match(path)
    return match is None or access.may_read(_config().moodle, int(match.group(1)), _session_courses())


def https_url(path: str) -> str:
    """`path` on the portal's HTTPS origin (`portal_name`, which the certificate names)."""
    cfg = _config()
    port = cfg.portal.https_port
    return f"https://{cfg.network.portal_name}{'' if port == 443 else f':{port}'}{path}"


@bp.before_request
def _guard() -> Any:
    cid = (request.view_args or {}).get("cid")
    if cid is None or request.endpoint == "moodle.signin":
        return None
    if access.may_read(_config().moodle, cid, _session_courses()):
        return None
    if not _config().network.https:
        abort(403)  # not reachable: the config check refuses sign-in without HTTPS
    return redirect(https_url(url_for("moodle.signin", cid=cid, next=request.path)), code=303)


@bp.after_request
def _private(response: Any) -> Any:
    # A sign-in course's pages and files must not sit in a shared cache.
    cid = (request.view_args or {}).get("cid")
    if cid is not None and access.requires_signin(_config().moodle, cid):
        response.cache_control.public = False
        response.cache_control.private = True
    return response


def _target(cid: int) -> str:
    target = request.args.get("next", "")
    # Only the mirror's own paths: never an open redirect off the portal.
    if not target.startswith(mirror.PREFIX + "/") or target.startswith("//"):
        target = url_for("moodle.course", cid=cid)
    return target


def _online(cfg: Config, username: str, password: str) -> list[int]:
    """The courses Moodle says the account is enrolled in, after `login/token.php` accepted the
    password. AuthError: refused; another MoodleError: Moodle could not be asked."""
    m = cfg.moodle
    timeout = min(m.timeout, SIGNIN_TIMEOUT)
    token = Client(m.url, Credentials(), timeout=timeout).login(username, password)
    # The pupil's own token, for these two calls only: kept in no file, log or session.
    client = Client(m.url, Credentials(token_reader=lambda: token), timeout=timeout)
    userid = int(client.site_info()["userid"])
    return [int(c["id"]) for c in client.user_courses(userid)]


def _signin_page(cid: int, info: dict[str, Any], status: int, error: str = "", username: str = "") -> Any:
    action = url_for("moodle.signin", cid=cid, next=request.args.get("next", ""))
    return render_template("moodle/signin.html", course=info, error=error, username=username,
                           csrf=csrf_token(), days=_config().moodle.offline_signin_days,
                           action=action), status


@bp.route("/signin/<int:cid>", methods=["GET", "POST"])
def signin(cid: int) -> Any:
    """The sign-in form of a course (HTTPS only): GET shows it, POST checks it."""
    cfg = _config()
    info = _one("SELECT id, fullname FROM moodle_courses WHERE id = ?", [cid])
    if not access.requires_signin(cfg.moodle, cid):
        return redirect(url_for("moodle.course", cid=cid), code=303)
    if not request.is_secure:
        if request.method == "GET" and cfg.network.https:
            return redirect(https_url(request.full_path.rstrip("?")), code=303)
        # A password sent over plain HTTP is not read, and nothing is redirected with it.
        return render_template("moodle/https_only.html", course=info,
                               url=https_url(url_for("moodle.signin", cid=cid))), 403
    if request.method == "GET":
        if cid in _session_courses():
            return redirect(_target(cid), code=303)
        return _signin_page(cid, info, 200)
    verify_csrf()
    return _check_signin(cfg, cid, info)


def _check_signin(cfg: Config, cid: int, info: dict[str, Any]) -> Any:
    from appliance.moodle.service import open_database

    m = cfg.moodle
    username = access.normalize_username(request.form.get("username", ""))
    password = request.form.get("password", "")
    if not username or not password or len(username) > 100 or len(password) > 1000:
        return _signin_page(cid, info, 400, i18n.gettext("Enter your Moodle username and password."),
                            username)
    now = time.time()
    db = open_database(cfg)
    try:
        limits = access.limiter(db, m)
        account, device = access.account_key(username), access.device_key(request.remote_addr or "?")
        # Before Moodle is asked: guessing here must not lock the pupil out of Moodle.
        if limits.blocked(account, m.signin_account_failures, now) or \
                limits.blocked(device, m.signin_device_failures, now):
            log.info("moodle sign-in to course %s: refused, too many failures", cid)
            return _signin_page(cid, info, 429, i18n.gettext(
                "Too many failed sign-ins. Wait a few minutes and try again."), username)
        access.purge(db, now, m.offline_signin_days)
        limits.purge(now)
        courses: list[int] | None
        try:
            courses = _online(cfg, username, password)
            how = "online"
            if m.offline_signin_days:
                access.remember(db, username, password, courses, now)
        except AuthError:
            # A changed password also ends the old one's offline use.
            db.execute("DELETE FROM moodle_signins WHERE username = ?", [username])
            limits.fail(account, now)
            limits.fail(device, now)
            log.info("moodle sign-in to course %s: wrong username or password", cid)
            return _signin_page(cid, info, 401, i18n.gettext("Wrong username or password."), username)
        except (MoodleError, KeyError, ValueError, TypeError) as exc:
            log.warning("moodle sign-in: Moodle cannot be asked (%s); trying the offline hash",
                        getattr(exc, "errorcode", type(exc).__name__))
            courses = access.offline(db, username, password, now, m.offline_signin_days)
            how = "offline"
            if courses is None:
                limits.fail(account, now)
                limits.fail(device, now)
                log.info("moodle sign-in to course %s: offline, refused", cid)
                return _signin_page(cid, info, 401, i18n.ngettext(
                    "Moodle cannot be reached now. Only an account that signed in here in the last "
                    "%(num)d day can sign in until it is back, with the same password.",
                    "Moodle cannot be reached now. Only an account that signed in here in the last "
                    "%(num)d days can sign in until it is back, with the same password.",
                    m.offline_signin_days), username)
        limits.clear(account)
    finally:
        db.conn.close()
    keep = session.get("csrf_token")
    session.clear()  # a fresh session on sign-in: no fixation
    if keep:
        session["csrf_token"] = keep
    session[USER_KEY] = username
    session[COURSES_KEY] = sorted(courses)
    session.permanent = True
    if cid not in courses:
        log.info("moodle sign-in to course %s (%s): not enrolled", cid, how)
        return _signin_page(cid, info, 403, i18n.gettext(
            "You are signed in, but not enrolled in this course on Moodle."), username)
    log.info("moodle sign-in to course %s (%s): ok", cid, how)
    return redirect(_target(cid), code=303)


@bp.post("/signout")
def signout() -> Any:
    if request.is_secure:
        verify_csrf()
        session.clear()
    return redirect(url_for("moodle.courses"), code=303)


# -- pages ----------------------------------------------------------------------------------------
@bp.get("/")
def courses() -> Any:
    items = _rows("SELECT id, fullname, shortname, summary_html, synced_at FROM moodle_courses"
                  " ORDER BY fullname", [])
    section = _config().moodle
    mine = _session_courses()
    for c in items:
        c["locked"] = not access.may_read(section, c["id"], mine)
    signed_in = session.get(USER_KEY) if request.is_secure else None
    return render_template("moodle/index.html", courses=items, signed_in=signed_in,
                           csrf=csrf_token() if signed_in else "")


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
