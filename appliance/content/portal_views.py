"""The library's pages on the portal: the front page, search and suggestions.

Phone-first and complete without JavaScript: browsing by language and subject are links, search
is a GET form, and `library.js` only fills a `<datalist>` with suggestions as a student types.
Archive and pack content opens on the archive origin (`[content] archive_port`), never here, so
these pages keep the portal's strict Content-Security-Policy.
"""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import quote

from flask import Blueprint, current_app, g, render_template, request

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
    state = current_app.extensions.get("content_library")
    if state is None:
        cfg = _config()
        db = open_db(cfg.database_path)
        from appliance.content import schema

        migrate(db, schema.COMPONENT, schema.MIGRATIONS)
        state = (ContentStore(cfg.content.root, db, require_mount=cfg.content.require_mount),
                 zim.ArchiveCache())
        current_app.extensions["content_library"] = state
    store: ContentStore = state[0]
    return store


def _cache() -> zim.ArchiveCache:
    _store()
    cache: zim.ArchiveCache = current_app.extensions["content_library"][1]
    return cache


def archive_base() -> str:
    """The archive origin as this browser reaches the portal: same host, the archive port."""
    match = HOST.match(request.host)
    host = match.group(1) if match else "localhost"
    return f"{request.scheme}://{host}:{_config().content.archive_port}"


def item_url(item: library.Item) -> str:
    if item.kind == "zim":
        return f"{archive_base()}/content/{quote(item.name)}/"
    return f"{archive_base()}/pack/{quote(item.name)}/{quote(item.index_page, safe='/')}"


def hit_url(hit: search.Hit, base: str | None = None) -> str:
    """Where a hit opens; `base`: `archive_base()` when the caller has it already."""
    if hit.source not in ("zim", "pack"):
        return hit.path  # another capability's page on this portal (the Moodle mirror's)
    prefix = "content" if hit.source == "zim" else "pack"
    return f"{base or archive_base()}/{prefix}/{quote(hit.item)}/{quote(hit.path, safe='/')}"


def _may_see(hit: search.Hit) -> bool:
    # A page of a Moodle course that needs sign-in is not even named to a stranger.
    return hit.source != "moodle" or moodle_views.may_see(hit.path)


def _query() -> str:
    return " ".join(request.args.get("q", "").split())[:MAX_QUERY]


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
    cfg = _config()
    query = _query()
    store = _store()
    listed = library.items(store.db)
    present = store.present()
    hits = library.search_all(store, _cache(), query, listed=listed) if query and present else []
    hits = [h for h in hits if _may_see(h)]
    titles = {i.name: i.title for i in listed}
    for source in {h.source for h in hits} - {"zim", "pack"}:
        titles.update(search.item_titles(store.db, source, [h.item for h in hits if h.source == source]))
    return render_template(
        "library/search.html", title=cfg.portal.title, building=cfg.appliance.name or cfg.appliance.id,
        query=query, hits=hits, hit_url=functools.partial(hit_url, base=archive_base()), titles=titles,
        marked=search.highlight_html, missing=not present and store.missing())


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
