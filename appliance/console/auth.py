"""Admin accounts and sign-in. Every console page except sign-in and /healthz needs a session."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import sqlite_utils
from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from appliance.console.db import get_db
from appliance.i18n import gettext as _

bp = Blueprint("auth", __name__)

MIN_PASSWORD_LENGTH = 12
# Failed sign-ins allowed per client address within the window before it must wait.
MAX_FAILURES = 5
FAILURE_WINDOW_S = 300.0
# Checked against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not-a-real-password")


class UserError(ValueError):
    pass


def set_password(db: sqlite_utils.Database, username: str, password: str) -> None:
    """Create the admin or replace their password."""
    if not username or len(username) > 64 or not username.isprintable():
        raise UserError("user name must be 1-64 printable characters")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    db.execute(
        "INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?) "
        "ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash",
        [username, generate_password_hash(password), time.time()],
    )


def verify(db: sqlite_utils.Database, username: str, password: str) -> bool:
    row = db.execute("SELECT password_hash FROM users WHERE username = ?", [username]).fetchone()
    ok = check_password_hash(row[0] if row else _DUMMY_HASH, password)
    return bool(row) and ok


def throttled(db: sqlite_utils.Database, client: str, now: float) -> bool:
    row = db.execute(
        "SELECT failures, window_start FROM login_failures WHERE client = ?", [client]
    ).fetchone()
    return bool(row) and row[0] >= MAX_FAILURES and now - row[1] < FAILURE_WINDOW_S


def record_failure(db: sqlite_utils.Database, client: str, now: float) -> None:
    db.execute(
        "INSERT INTO login_failures (client, failures, window_start) VALUES (?, 1, ?) "
        "ON CONFLICT(client) DO UPDATE SET "
        "failures = CASE WHEN ? - window_start >= ? THEN 1 ELSE failures + 1 END, "
        "window_start = CASE WHEN ? - window_start >= ? THEN ? ELSE window_start END",
        [client, now, now, FAILURE_WINDOW_S, now, FAILURE_WINDOW_S, now],
    )
    db.execute("DELETE FROM login_failures WHERE ? - window_start >= ?", [now, 24 * 3600])


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.get("user") is None:
            if request.accept_mimetypes.best == "application/json" or request.path.startswith("/api/"):
                return {"error": "sign in required"}, 401
            return redirect(url_for("auth.login", next=request.path))
        return view(*args, **kwargs)

    return wrapped


@bp.before_app_request
def load_user() -> None:
    g.user = session.get("user")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "POST":
        username = request.form.get("username", "")
        password = request.form.get("password", "")
        db, now = get_db(), time.time()
        client = request.remote_addr or "unknown"
        if throttled(db, client, now):
            flash(_("Too many failed sign-ins from this address. Wait a few minutes and try again."))
            return render_template("auth/login.html"), 429
        if verify(db, username, password):
            token = session.get("csrf_token")
            session.clear()  # a fresh session on sign-in: no fixation
            session["user"] = username
            if token:
                session["csrf_token"] = token
            session.permanent = True
            target = request.args.get("next", "")
            # Only local paths: never an open redirect off the console.
            if not target.startswith("/") or target.startswith("//"):
                target = url_for("fleet.index")
            return redirect(target)
        record_failure(db, client, now)
        flash(_("Wrong user name or password."))
        return render_template("auth/login.html"), 401
    return render_template("auth/login.html")


@bp.post("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("auth.login"))
