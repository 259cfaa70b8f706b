"""What every web app of ours shares: security headers and CSRF protection."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, abort, current_app, request, session

from appliance.i18n import gettext as _

View = TypeVar("View", bound=Callable[..., Any])

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def csrf_token() -> str:
    """The session's CSRF token (created on first use); templates put it in every form."""
    token = session.get(CSRF_FIELD)
    if not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def csrf_exempt(view: View) -> View:
    """Mark a view as exempt from the session CSRF check. Only for machine-to-machine endpoints
    that never act on the session cookie and authenticate every request by something a forged
    cross-site request cannot carry (e.g. a secret in its body)."""
    setattr(view, "csrf_exempt", True)  # noqa: B010 - an attribute on a function
    return view


def _check_csrf() -> None:
    if request.method not in UNSAFE_METHODS:
        return
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "csrf_exempt", False):
        return
    verify_csrf()


def verify_csrf() -> None:
    """Abort with 400 unless the request carries the session's CSRF token (form field or
    header). For an app without the global check (`install_security(csrf=False)`), per view."""
    expected = session.get(CSRF_FIELD)
    given = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if not expected or not hmac.compare_digest(expected, given):
        abort(400, description=_("The form expired or did not come from this site. Reload and try again."))


# Every page of ours unless a view set its own (a WSGI hot path in front of an app sends these).
HEADERS = (
    ("Content-Security-Policy",
     "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
     "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)


def _headers(response: Response) -> Response:
    for key, value in HEADERS:
        response.headers.setdefault(key, value)
    return response


def install_security(app: Flask, *, csrf: bool) -> None:
    app.after_request(_headers)
    if csrf:
        app.before_request(_check_csrf)
        app.jinja_env.globals["csrf_token"] = csrf_token
