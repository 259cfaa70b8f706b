"""The portal's `/captive/` pages: the terms a student accepts, the "you are online" page, and
the RFC 8908 API.

Phone-first, no JavaScript needed, no cookie (captive-portal browsers keep none): the accept
form is a plain POST, answered with a full-page 302 so iOS re-probes and turns "Cancel" into
"Done". Cross-site POSTs are refused by a same-origin check: the form's `Origin` (or, when a
browser sends none, its `Referer`) must be this portal (its Host or `[network] portal_name`).
Browsers always send `Origin` on a cross-site POST and cannot forge it, and there is no
session cookie to ride on, so no token is needed. Its text goes through the portal's catalogs
(docs/i18n.md); a school's own terms may come per language (`terms.<lang>.txt`). The helper,
not this process, changes the firewall.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request
from werkzeug.wrappers.response import Response as BaseResponse

from appliance.config import Config
from appliance.i18n import N_, current_language, gettext
from appliance.network import leases
from appliance.network.client import HelperError, call

bp = Blueprint("captive", __name__, url_prefix="/captive")

# The built-in terms, for a school that configured none (translated like every other text).
DEFAULT_TERMS = N_("Use this network for school work.\n\nBe kind and respectful online.\n\n"
                   "Do not share your passwords.")


@bp.after_request
def _referrer_policy(response: BaseResponse) -> BaseResponse:
    # The app-wide `no-referrer` makes browsers send `Origin: null` with a form POST (Fetch:
    # the origin is serialised as null under that policy), and the accept form's same-origin
    # check would refuse every real browser. `same-origin` still leaks nothing to other sites.
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _cfg() -> Config:
    cfg: Config = current_app.config["APPLIANCE_CONFIG"]
    return cfg


def terms_text(terms_file: Path | None, *langs: str | None) -> str:
    """The terms: `<stem>.<lang><suffix>` beside `terms_file` for the first of `langs` that
    has one, else the file, else the built-in short terms."""
    if terms_file is None:
        return gettext(DEFAULT_TERMS)
    for lang in langs:
        if not lang:
            continue
        translated = terms_file.with_name(f"{terms_file.stem}.{lang}{terms_file.suffix}")
        if translated.is_file():
            return translated.read_text(encoding="utf-8")
    try:
        return terms_file.read_text(encoding="utf-8")
    except OSError:
        return gettext(DEFAULT_TERMS)


def same_origin(origin: str | None, referer: str | None, host: str, portal_name: str) -> bool:
    """Whether a POST comes from a page of this portal (pure)."""
    source = origin if origin and origin != "null" else referer
    if not source:
        return False
    netloc = urlsplit(source).netloc.lower()
    return netloc in {host.lower(), portal_name.lower()} and bool(netloc)


def client_ip() -> str:
    """The phone's address as the helper knows it: an IPv4 client of a dual-stack listener
    (`[portal] listen = "::"`) arrives as ::ffff:a.b.c.d."""
    raw = str(request.remote_addr)
    return leases.canonical_ip(raw) or raw


def _status(ip: str) -> dict[str, object] | None:
    try:
        result: dict[str, object] = call(_cfg().network.helper.socket, "session-status", {"ip": ip})
        return result
    except HelperError:
        return None


@bp.get("/")
def terms() -> str:
    net = _cfg().network
    # The page's language first; then the browser's own, for a school whose terms come in a
    # language the portal's pages are not translated into.
    browser = request.accept_languages.best
    paragraphs = [p.strip() for p in terms_text(net.terms_file, current_language(),
                                                browser[:2] if browser else None)
                  .split("\n\n") if p.strip()]
    return render_template("captive/terms.html", paragraphs=paragraphs,
                           open_mode=net.portal_mode == "open")


@bp.post("/accept")
def accept() -> BaseResponse:
    net = _cfg().network
    if not same_origin(request.headers.get("Origin"), request.headers.get("Referer"),
                       request.host, net.portal_name):
        abort(403)
    try:
        call(net.helper.socket, "session-accept", {"ip": client_ip()})
    except HelperError as exc:
        current_app.logger.warning("session-accept for %s failed: %s", client_ip(), exc)
        return Response(render_template("captive/online.html", failed=True),
                        status=503)
    return redirect("/captive/done", code=302)


@bp.get("/done")
def done() -> str:
    return render_template("captive/online.html", failed=False)


@bp.get("/api")
def api() -> Response:
    """RFC 8908: captive, user-portal-url, seconds-remaining, can-extend-session."""
    net = _cfg().network
    status = _status(client_ip()) or {"accepted": False, "seconds_remaining": 0}
    scheme = "https" if net.tls_cert is not None else "http"
    body: dict[str, object] = {"captive": not status.get("accepted"),
                               "user-portal-url": f"{scheme}://{net.portal_name}/captive/"}
    if status.get("accepted"):
        if status.get("seconds_remaining") is not None:
            body["seconds-remaining"] = status["seconds_remaining"]
        body["can-extend-session"] = False
    return Response(json.dumps(body), content_type="application/captive+json",
                    headers={"Cache-Control": "private"})
