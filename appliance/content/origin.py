"""The archive origin: ZIM articles and pack files, on their own port under a sandboxing CSP.

Archives ship their own inline scripts and styles, and some load scripts from the site root, so
they cannot live under the portal's strict policy. They are served from `[content] archive_port`
(another origin: a script there cannot read the portal's pages, which send no CORS headers) and
every response carries `sandbox allow-scripts allow-forms allow-popups` *without*
`allow-same-origin`: the page runs in an opaque origin of its own, with no cookies, no storage
and no same-origin access even to the archive origin, so one archive's script cannot read another
archive's pages either. `frame-ancestors 'none'` keeps it out of frames.

URLs (kiwix-serve's, without its viewer):
- `/content/<item>/` -> 302 to the main page; `/content/<item>/<path>` an entry (the old layout's
  namespace is part of the path: `A/Ray_Charles`); redirect entries answer 302;
- `/random/<item>` -> 302 to a random article;
- `/pack/<item>/` -> 302 to the pack's index page; `/pack/<item>/<path>` a file of a pack;
- a root-level path (`/-/j/script.js`, how mwoffliner pages load some scripts) is looked up in
  the archive the `Referer` names, or, without one (Chromium sends none from a sandboxed page),
  in the first archive that has it.

ETags are the archive's SHA-256 (prefix) and the entry's index, or a pack file's SHA-256: an
archive replaced under the same name has another hash, so the old ETag never matches. `Range`
gives 206 (one range; a multi-range request gets the whole entry), a bad one 416. Every miss,
hidden entry (`M/`, `X/`), traversal or damaged archive is a 404, never a 500.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from flask import Flask, current_app, redirect, request
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.http import parse_range_header
from werkzeug.wrappers import Response

from appliance.config import Config
from appliance.content import library, zim
from appliance.content.snapshot import LibrarySnapshot
from appliance.content.store import ContentStore
from appliance.content.usage import UsageCounter
from appliance.store import migrate, open_db

CSP = ("sandbox allow-scripts allow-forms allow-popups allow-popups-to-escape-sandbox; "
       "default-src 'self' 'unsafe-inline' 'unsafe-eval' data: blob:; "
       "img-src 'self' data: blob:; media-src 'self' data: blob:; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'self'")
CHUNK = 256 * 1024
# Entries from this size on are sent from the archive file (memory stays one chunk per stream).
FILE_SLICE_MIN = 1 << 20
# Cache: articles may be re-validated cheaply (ETag); a replaced archive changes every ETag.
CACHE = "public, max-age=300"


# Archive content is public to the classroom and carries no credentials; module scripts in the
# sandbox's opaque origin need Access-Control-Allow-Origin.
HEADERS = (("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
           ("Referrer-Policy", "no-referrer-when-downgrade"), ("Access-Control-Allow-Origin", "*"))


def _headers(response: Response) -> Response:
    for key, value in HEADERS:
        response.headers[key] = value
    return response


def _send(body: Iterable[bytes], size: int, mimetype: str, etag: str) -> Response:
    response = Response(body, mimetype=None, content_type=mimetype, direct_passthrough=True)
    response.set_etag(etag)
    response.headers["Cache-Control"] = CACHE
    response.content_length = size
    return response.make_conditional(request.environ, accept_ranges=True, complete_length=size)


class Origin:
    """Per worker: the store (own database connection), the open archives, the usage counter."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.cache = zim.ArchiveCache()
        db = open_db(config.database_path)
        from appliance.content import schema

        migrate(db, schema.COMPONENT, schema.MIGRATIONS)
        self.store = ContentStore(config.content.root, db, require_mount=config.content.require_mount)
        self.usage = UsageCounter(lambda: self.store.db, config.content.usage_flush_seconds)

    def item(self, name: str, kind: str) -> library.Item:
        item = library.get(self.store.db, name)
        if item is None or item.kind != kind or item.state != "ok" or not self.store.present():
            raise NotFound()
        return item

    def archive(self, item: library.Item) -> Any:
        assert item.sha256
        try:
            return self.cache.get(item.sha256, self.store.path(item.sha256))
        except zim.ZimError:
            raise NotFound() from None


class FastEntries:
    """The archive origin's hot path, in front of its Flask app: a plain GET or HEAD of an
    archive entry (`/content/<item>/<path>`, no query, no validator) answered straight from
    libzim, or from the archive file for a large uncompressed entry (with gunicorn's
    `wsgi.file_wrapper`: sendfile), and a GET of one satisfiable byte range of such a large
    entry (206, sendfile from the range's place: a playing video costs no Python work per
    chunk and no buffer). Everything else (redirects, misses, 304, other ranges, 416, packs)
    goes to the Flask app, which answers the same request the same way; measured in
    `bench/portal.py` (Flask's request and response objects cost more than the libzim read).

    The item and the drive's presence come from a `LibrarySnapshot` (no query per request)."""

    def __init__(self, origin: Origin, app: Callable[..., Any]) -> None:
        self.origin, self.app = origin, app
        self.snapshot = LibrarySnapshot(origin.store)

    def _item(self, name: str) -> library.Item | None:
        found = self.snapshot.get(name)
        if found is None or found.kind != "zim" or found.state != "ok" or not found.sha256:
            return None
        return found

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ.get("REQUEST_METHOD")
        raw = environ.get("PATH_INFO", "")
        ranged = "HTTP_RANGE" in environ
        if (method not in ("GET", "HEAD") or not raw.startswith("/content/") or environ.get("QUERY_STRING")
                or "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MODIFIED_SINCE" in environ
                or (ranged and (method != "GET" or "HTTP_IF_RANGE" in environ
                                or "wsgi.file_wrapper" not in environ))):
            return self.app(environ, start_response)
        try:
            # WSGI carries the path's bytes as latin-1; Flask decodes them as UTF-8, so do we.
            name, _, path = raw[9:].encode("latin-1").decode("utf-8").partition("/")
            item = self._item(name) if path else None
            sha = item.sha256 if item is not None else None
            entry = None
            if item is not None and sha:
                entry = zim.find(self.origin.cache.get(sha, self.origin.store.path(sha)), path)
            if item is None or not sha or entry is None or entry.is_redirect:
                return self.app(environ, start_response)
            zitem = entry.get_item()
            mimetype = zitem.mimetype or "application/octet-stream"
            size = zitem.size
            body = _entry_body(self.origin, sha, entry, zitem) if method == "GET" else None
        except (UnicodeError, RuntimeError, zim.ZimError):
            return self.app(environ, start_response)
        status, length = "200 OK", size
        extra: tuple[tuple[str, str], ...] = ()
        if ranged:
            span = _one_range(environ["HTTP_RANGE"], size) if isinstance(body, _FileSlice) else None
            if span is None:
                if isinstance(body, _FileSlice):
                    body.close()
                return self.app(environ, start_response)
            assert isinstance(body, _FileSlice)
            body.seek(span[0])
            status, length = "206 Partial Content", span[1] - span[0]
            extra = (("Content-Range", f"bytes {span[0]}-{span[1] - 1}/{size}"),)
        if mimetype.startswith("text/") and "charset" not in mimetype:
            mimetype += "; charset=utf-8"
        if method == "GET" and mimetype.startswith("text/html") and not ranged:
            self.origin.usage.count(item.name)
        start_response(status, [
            ("Content-Type", mimetype), ("Content-Length", str(length)),
            ("ETag", f'"{sha[:20]}-{entry._index}"'), ("Cache-Control", CACHE),
            ("Accept-Ranges", "bytes"), *extra, *HEADERS])
        if body is None:
            return []
        if isinstance(body, _FileSlice) and "wsgi.file_wrapper" in environ:
            return environ["wsgi.file_wrapper"](body, CHUNK)
        if isinstance(body, _MemoryBody) and size <= FILE_SLICE_MIN:
            return [bytes(body.data)]
        return body


def _one_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, stop) of a `Range` header that asks for one satisfiable range of `size` bytes,
    else None (several ranges, a bad or unsatisfiable one: the Flask app answers those)."""
    parsed = parse_range_header(header)
    return parsed.range_for_length(size) if parsed is not None else None


def create_archive_app(config: Config) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config.update(APPLIANCE_CONFIG=config)
    origin = Origin(config)
    app.extensions["content_origin"] = origin
    app.after_request(_headers)
    app.wsgi_app = FastEntries(origin, app.wsgi_app)  # type: ignore[method-assign]

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        response = Response(f"{exc.code} {exc.name}\n", status=exc.code, mimetype="text/plain")
        if exc.code == 416 and isinstance(getattr(exc, "length", None), int):
            response.headers["Content-Range"] = f"bytes */{exc.length}"  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def _any_error(exc: Exception) -> Response:
        # A damaged archive or an entry libzim cannot read: the reader gets a 404, the log a line.
        current_app.logger.warning("archive origin: %s %s: %r", request.method, request.path, exc)
        return Response("404 Not Found\n", status=404, mimetype="text/plain")

    app.add_url_rule("/healthz", "healthz", lambda: {"ok": True})
    app.add_url_rule("/content/<name>/", "main", lambda name: _main(origin, name))
    app.add_url_rule("/content/<name>", "main_bare", lambda name: redirect(f"/content/{quote(name)}/"))
    app.add_url_rule("/content/<name>/<path:path>", "entry", lambda name, path: _entry(origin, name, path))
    app.add_url_rule("/random/<name>", "random", lambda name: _random(origin, name))
    app.add_url_rule("/pack/<name>/", "pack_index", lambda name: _pack_index(origin, name))
    app.add_url_rule("/pack/<name>/<path:path>", "pack_file",
                     lambda name, path: _pack_file(origin, name, path))
    app.add_url_rule("/<path:path>", "rooted", lambda path: _rooted(origin, path))
    return app


def _entry_url(name: str, path: str) -> str:
    return f"/content/{quote(name)}/{quote(path, safe='/')}"


def _main(origin: Origin, name: str) -> Response:
    item = origin.item(name, "zim")
    if not item.index_page:
        raise NotFound()
    return redirect(_entry_url(name, item.index_page))


def _random(origin: Origin, name: str) -> Response:
    item = origin.item(name, "zim")
    archive = origin.archive(item)
    for _ in range(16):
        entry = archive.get_random_entry()
        if not entry.is_redirect and entry.get_item().mimetype.startswith("text/html"):
            break
    response = redirect(_entry_url(name, entry.path))
    response.headers["Cache-Control"] = "no-store"
    return response


def _entry(origin: Origin, name: str, path: str) -> Response:
    item = origin.item(name, "zim")
    archive = origin.archive(item)
    entry = zim.find(archive, path)
    if entry is None and request.query_string:
        # Some scrapers stored "index.php?title=x" as one path: the browser split it.
        entry = zim.find(archive, f"{path}?{unquote(request.query_string.decode('latin-1'))}")
    if entry is None:
        raise NotFound()
    if entry.is_redirect:
        target = entry.get_redirect_entry()
        return redirect(_entry_url(name, target.path))
    zitem = entry.get_item()
    mimetype = zitem.mimetype or "application/octet-stream"
    if mimetype.startswith("text/") and "charset" not in mimetype:
        mimetype += "; charset=utf-8"
    if mimetype.startswith("text/html") and request.method == "GET" and not request.range:
        origin.usage.count(name)
    assert item.sha256
    etag = f"{item.sha256[:20]}-{entry._index}"
    return _send(_entry_body(origin, item.sha256, entry, zitem), zitem.size, mimetype, etag)


def _rooted(origin: Origin, path: str) -> Response:
    referer = urlsplit(request.headers.get("Referer", ""))
    parts = referer.path.split("/")
    if len(parts) >= 3 and parts[1] == "content":
        return _entry(origin, unquote(parts[2]), path)
    # A sandboxed page has an opaque origin and Chromium sends it no Referer: the first archive
    # (by name) that has the path serves it. These are the scraper's shared assets
    # (`-/j/js_modules/...`), and every archive on this origin is public to the classroom.
    if not zim.hidden(path) and origin.store.present():
        for item in library.items(origin.store.db, only_ok=True):
            if item.kind == "zim" and item.sha256 and zim.find(origin.archive(item), path) is not None:
                return _entry(origin, item.name, path)
    raise NotFound()


def _pack_index(origin: Origin, name: str) -> Response:
    item = origin.item(name, "pack")
    return redirect(f"/pack/{quote(name)}/{quote(item.index_page, safe='/')}")


def _pack_file(origin: Origin, name: str, path: str) -> Response:
    origin.item(name, "pack")
    row = origin.store.db.execute(
        "SELECT sha256, size, mimetype FROM content_files WHERE item = ? AND path = ?",
        [name, path]).fetchone()
    if row is None:
        raise NotFound()
    sha, size, mimetype = row
    blob = origin.store.path(sha)
    if not blob.is_file():
        raise NotFound()
    counted = mimetype.startswith(("text/html", "application/pdf"))
    if request.method == "GET" and not request.range and counted:
        origin.usage.count(name)
    response = Response(_FileSlice(blob.open("rb"), 0, size), content_type=mimetype, direct_passthrough=True)
    response.set_etag(sha[:32])
    response.headers["Cache-Control"] = CACHE
    response.content_length = size
    return response.make_conditional(request.environ, accept_ranges=True, complete_length=size)


class _FileSlice:
    """`size` bytes of an open file from `offset` (a pack file, or an uncompressed ZIM entry) as
    a WSGI body: werkzeug's Range handling seeks in it (`seekable`, `seek`, `tell`) instead of
    reading from the start, and gunicorn's `wsgi.file_wrapper` sends it with sendfile (the file's
    position is the slice's start; Content-Length bounds it). Memory: one chunk at a time."""

    def __init__(self, handle: Any, offset: int, size: int) -> None:
        self.handle, self.offset, self.size = handle, offset, size
        self.pos = 0
        handle.seek(offset)

    def fileno(self) -> int:
        return int(self.handle.fileno())

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int) -> None:
        self.pos = max(0, min(pos, self.size))
        self.handle.seek(self.offset + self.pos)

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = CHUNK) -> bytes:
        data: bytes = self.handle.read(max(0, min(n, self.size - self.pos)))
        self.pos += len(data)
        return data

    # werkzeug's Range wrapper seeks in what iter() returns: the body is its own iterator.
    def __iter__(self) -> _FileSlice:
        return self

    def __next__(self) -> bytes:
        chunk = self.read(CHUNK)
        if not chunk:
            raise StopIteration
        return chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()


class _MemoryBody:
    """An entry libzim decompressed, as a seekable WSGI body (a Range skips, never copies)."""

    def __init__(self, data: memoryview) -> None:
        self.data, self.pos = data, 0

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int) -> None:
        self.pos = max(0, min(pos, len(self.data)))

    def tell(self) -> int:
        return self.pos

    def __iter__(self) -> _MemoryBody:
        return self

    def __next__(self) -> bytes:
        if self.pos >= len(self.data):
            raise StopIteration
        chunk = bytes(self.data[self.pos:self.pos + CHUNK])
        self.pos += len(chunk)
        return chunk


def _entry_body(origin: Origin, sha256: str, entry: Any, zitem: Any) -> _FileSlice | _MemoryBody:
    """A large entry's bytes from the archive file when they are stored uncompressed, else from
    libzim (a small one in one piece costs less than opening the file)."""
    if zitem.size < FILE_SLICE_MIN:
        return _MemoryBody(zitem.content)
    path = origin.store.path(sha256)
    stored = origin.cache.stored(sha256, path, entry._index)
    if stored is not None and stored[1] == zitem.size:
        try:
            return _FileSlice(path.open("rb"), *stored)
        except OSError:
            pass
    return _MemoryBody(zitem.content)


class Dispatch:
    """One WSGI app for the portal process's two listeners: requests that arrived on the
    archive port (gunicorn's SERVER_PORT is the listening socket's, not the Host header's) go
    to the archive app, the others to the portal."""

    def __init__(self, portal: Callable[..., Any], archive: Callable[..., Any], archive_port: int) -> None:
        self.portal = portal
        self.archive = archive
        self.archive_port = str(archive_port)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        app = self.archive if environ.get("SERVER_PORT") == self.archive_port else self.portal
        return app(environ, start_response)
