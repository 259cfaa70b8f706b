"""The library's pages on the portal: the front page, search and suggestions.

Phone-first and complete without JavaScript: browsing by language and subject are links, search
is a GET form, and `library.js` only fills a `<datalist>` with suggestions as a student types.
Archive and pack content opens on the archive origin (`[content] archive_port`), never here, so
these pages keep the portal's strict Content-Security-Policy.
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple
from urllib.parse import quote

from flask import Blueprint, Flask, current_app, g, render_template, request
from markupsafe import Markup

from appliance.config import Config
from appliance.content import library, search, zim
from appliance.content.store import ContentStore
from appliance.i18n import N_, language_name
from appliance.moodle import portal_views as moodle_views
from appliance.store import migrate, open_db

bp = Blueprint("library", __name__)
HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(:\d+)?$")
MAX_QUERY = 200
# Kinds of pack files listed on a pack's page, in the words a student knows.
MEDIA = {"application/pdf": N_("PDF"), "audio/": N_("audio"), "video/": N_("video")}


def _config() -> Config:
    cfg: Config = current_app.config["APPLIANCE_CONFIG"]
    return cfg


def _store() -> ContentStore:
    return library_state(current_app)[0]


def _cache() -> zim.ArchiveCache:
    return library_state(current_app)[1]


def library_state(app: Flask) -> tuple[ContentStore, zim.ArchiveCache]:
    """The app's store (its own database connection, the library's schema migrated) and open
    archives, made on first use."""
    state: tuple[ContentStore, zim.ArchiveCache] | None = app.extensions.get("content_library")
    if state is None:
        cfg: Config = app.config["APPLIANCE_CONFIG"]
        db = open_db(cfg.database_path)
        from appliance.content import schema

        migrate(db, schema.COMPONENT, schema.MIGRATIONS)
        state = (ContentStore(cfg.content.root, db, require_mount=cfg.content.require_mount),
                 zim.ArchiveCache())
        app.extensions["content_library"] = state
    return state


def archive_base() -> str:
    """The archive origin as this browser reaches the portal: same host, the archive port."""
    return archive_base_for(request.host, request.scheme, _config().content.archive_port)


def archive_base_for(host: str, scheme: str, port: int) -> str:
    match = HOST.match(host)
    return f"{scheme}://{match.group(1) if match else 'localhost'}:{port}"


def item_url(item: library.Item) -> str:
    if item.kind == "zim":
        return f"{archive_base()}/content/{quote(item.name)}/"
    return f"{archive_base()}/pack/{quote(item.name)}/{quote(item.index_page, safe='/')}"


def hit_url(hit: search.Hit, base: str | None = None) -> str:
    """Where a hit opens; `base`: `archive_base()` when the caller has it already."""
    if hit.source not in ("zim", "pack"):
        return hit.path  # another capability's page on this portal (the Moodle mirror's)
    prefix = "content" if hit.source == "zim" else "pack"
    return f"{base or archive_base()}/{prefix}/{_quoted(hit.item)}/{quote(hit.path, safe='/')}"


@functools.lru_cache(maxsize=256)
def _quoted(name: str) -> str:
    return quote(name)  # an item's name, in every hit of the item


def _may_see(hit: search.Hit) -> bool:
    # A page of a Moodle course that needs sign-in is not even named to a stranger.
    return hit.source != "moodle" or moodle_views.may_see(hit.path)


def _query() -> str:
    return clean_query(request.args.get("q", ""))


def clean_query(raw: str) -> str:
    """What is searched for: the box's words, white space made single, at most `MAX_QUERY`."""
    return " ".join(raw.split())[:MAX_QUERY]


class ShownHit(NamedTuple):
    """A result as the search page shows it: where it opens, its title, the title of the item
    it is in, and its snippet as HTML with the query's words marked."""

    url: str
    title: str
    source: str
    snippet: Markup


def search_hits(store: ContentStore, cache: zim.ArchiveCache, query: str, listed: list[library.Item],
                present: bool) -> list[search.Hit]:
    """The hits of `query` (before `_may_see`); none for an empty query or a missing drive."""
    if not query or not present:
        return []
    return library.search_all(store, cache, query, listed=listed, present=present)


def search_context(cfg: Config, store: ContentStore, query: str, hits: list[search.Hit],
                   listed: list[library.Item], base: str, *, missing: bool) -> dict[str, Any]:
    """What `library/search.html` is rendered with (besides the app's own: `lang`, `_`, ...);
    `base`: the archive origin (`archive_base`)."""
    titles = {i.name: i.title for i in listed}
    for source in {h.source for h in hits} - {"zim", "pack"}:
        titles.update(search.item_titles(store.db, source, [h.item for h in hits if h.source == source]))
    shown = [ShownHit(hit_url(h, base), h.title, titles.get(h.item, h.item),
                      search.highlight_html(h.snippet, query) if h.snippet else Markup(""))
             for h in hits]
    return {"title": cfg.portal.title, "building": cfg.appliance.name or cfg.appliance.id,
            "query": query, "hits": shown, "missing": missing}


@bp.get("/")
def index() -> Any:
    cfg = _config()
    store = _store()
    everything = library.items(store.db, only_ok=True) if store.present() else []
    language = request.args.get("language", "")
    subject = request.args.get("subject", "")
    shown = [i for i in everything if (not language or i.language == language)
             and (not subject or i.subject == subject)]
    return render_template(
        "library/index.html", title=cfg.portal.title,
        building=cfg.appliance.name or cfg.appliance.id, items=shown, item_url=item_url,
        missing=store.missing(), languages_found=sorted({i.language for i in everything if i.language}),
        subjects=sorted({i.subject for i in everything if i.subject}), language=language,
        subject=subject, query="", random_url=lambda i: f"{archive_base()}/random/{quote(i.name)}",
        filtered=bool(language or subject), language_name=language_name)


@bp.get("/search")
def search_page() -> Any:
    """The search page; `search_page.FastSearch` answers most searches with the same bytes."""
    store = _store()
    listed = library.items(store.db)
    present = store.present()
    query = _query()
    hits = [h for h in search_hits(store, _cache(), query, listed, present) if _may_see(h)]
    return render_template("library/search.html", **search_context(
        _config(), store, query, hits, listed, archive_base(), missing=not present and store.missing()))


@bp.get("/suggest")
def suggest() -> Any:
    query = _query()
    store = _store()
    hits = library.suggest_all(store, _cache(), query) if len(query) >= 2 and store.present() else []
    hits = [h for h in hits if _may_see(h)]
    response = current_app.json.response(
        {"q": query, "suggestions": [{"title": h.title, "url": hit_url(h)} for h in hits]})
    response.headers["Cache-Control"] = "public, max-age=60"
    return response


@bp.get("/library/<name>")
def pack(name: str) -> Any:
    cfg = _config()
    store = _store()
    item = library.get(store.db, name) if store.present() else None
    if item is None or item.state != "ok":
        return render_template("library/missing.html", title=cfg.portal.title,
                               building=cfg.appliance.name or cfg.appliance.id), 404
    files = []
    if item.kind == "pack":
        for path, _sha, size, mimetype in library.pack_files(store.db, name):
            kind = next((label for prefix, label in MEDIA.items() if mimetype.startswith(prefix)), None)
            if kind:
                files.append({"path": path, "size": size, "kind": kind,
                              "url": f"{archive_base()}/pack/{quote(name)}/{quote(path, safe='/')}"})
    g.item = item
    return render_template("library/item.html", title=cfg.portal.title,
                           building=cfg.appliance.name or cfg.appliance.id, item=item,
                           url=item_url(item), files=files)
