"""The search page's hot path: `GET /search` answered in front of the portal's Flask app.

A student's search is the portal's costliest page (`bench/portal.py`): Flask's request and
response objects, its hooks and `render_template`'s context cost as much again as the search
and the page together. `FastSearch` answers the common case straight from the WSGI environ,
with the same code as the Flask view (`portal_views.search_hits` and `search_context`), the
same template and the same translations (`i18n.rendering`), the same language choice
(`i18n.choose_language`) and the same headers (`websecurity.HEADERS`, `i18n.VARY`).

It takes a GET of `/search` only when nothing else of the app would act on it, and hands every
other request to the Flask app, which answers it as before:
- a `lang` argument (the language switch sets a cookie: Flask's hook does that);
- a Host that is not the portal's own (`own_host`: the filter's block page answers those);
- a missing drive (the page says so, in Flask's view);
- a hit from another capability's pages (the Moodle mirror's: the pupil's session decides which
  course pages they may be shown; the search is then made again by the view);
- anything that raises.

`tests/integration/content/test_search_page.py` checks that both answer with the same bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import flask
from flask import Flask
from werkzeug.wrappers import Request

from appliance import i18n, websecurity
from appliance.content import portal_views as views
from appliance.content.snapshot import LibrarySnapshot
from appliance.content.store import ContentStore

PATH = "/search"
TEMPLATE = "library/search.html"
Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class FastSearch:
    def __init__(self, app: Flask, own_host: Callable[[str], bool]) -> None:
        self.app, self.next = app, app.wsgi_app
        self.own_host = own_host
        self._snapshot: LibrarySnapshot | None = None
        self._urls: dict[tuple[str, tuple[tuple[str, Any], ...]], str] = {}
        self._lock = threading.Lock()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if (environ.get("REQUEST_METHOD") != "GET" or environ.get("PATH_INFO") != PATH
                or environ.get("SCRIPT_NAME")):
            return self.next(environ, start_response)
        try:
            body = self._page(Request(environ))
        except Exception as exc:  # the Flask app answers it (and logs what it cannot)
            self.app.logger.warning("search page hot path: %r; the app answers", exc)
            body = None
        if body is None:
            return self.next(environ, start_response)
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                  ("Content-Length", str(len(body))), *websecurity.HEADERS,
                                  ("Vary", ", ".join(i18n.VARY))])
        return [body]

    def _page(self, request: Request) -> bytes | None:
        """The page's bytes, or None for a request the Flask app answers."""
        if i18n.COOKIE in request.args or not self.own_host(request.host):
            return None
        store, cache = views.library_state(self.app)
        listed = self._library(store).listed()
        if listed is None:
            return None
        query = views.clean_query(request.args.get("q", ""))
        hits = views.search_hits(store, cache, query, listed, True)
        if any(h.source not in ("zim", "pack") for h in hits):
            return None
        cfg = self.app.config["APPLIANCE_CONFIG"]
        catalogs: i18n.Catalogs = self.app.extensions["i18n"]
        lang = i18n.choose_language(None, request.cookies.get(i18n.COOKIE),
                                    request.accept_languages.values(), list(catalogs.languages))
        base = views.archive_base_for(request.host, request.scheme, cfg.content.archive_port)
        context = views.search_context(cfg, store, query, hits, listed, base, missing=False)
        template = self.app.jinja_env.get_template(TEMPLATE)
        with i18n.rendering(catalogs, lang):
            page = template.render(
                context, url_for=self._url_for, lang=lang,
                languages=i18n.links_for(catalogs, request.path, request.args.items(multi=True), lang))
        return page.encode()

    def _library(self, store: ContentStore) -> LibrarySnapshot:
        with self._lock:
            if self._snapshot is None:
                self._snapshot = LibrarySnapshot(store)
            return self._snapshot

    def _url_for(self, endpoint: str, **values: Any) -> str:
        """`url_for` as the template calls it: a path of this app, the same for every request
        (no `_external`: the portal links only to itself by path), built once."""
        key = (endpoint, tuple(sorted(values.items())))
        found = self._urls.get(key)
        if found is None:
            with self.app.test_request_context("/"):
                found = flask.url_for(endpoint, **values)
            self._urls[key] = found
        return found


def install(app: Flask, own_host: Callable[[str], bool]) -> None:
    """Put the hot path in front of the portal app (after its blueprints are registered)."""
    app.wsgi_app = FastSearch(app, own_host)  # type: ignore[method-assign]
