"""The library: what is in it (archives and packs), adding, replacing, removing and checking items.

Each operation is one function of (ContentStore, ...) so the CLI, USB import, sync and (later)
the console's desired state all call the same code. An item is listed only after its bytes are
in the store and it passed its check; replacing an item stores and opens the new version first
and swaps the row in one transaction, so readers see the old version until the new one works.
"""

from __future__ import annotations

import contextlib
import functools
import html
import html.parser
import mimetypes
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils
from libzim.search import Query, Searcher
from libzim.suggestion import SuggestionSearcher

from appliance.content import catalog, search, zim
from appliance.content.store import ContentStore, StoreError, sha256_file
from appliance.store import transaction

MAX_INDEXED_ARTICLES = 20_000
SPLIT_SUFFIX = re.compile(r"\.zim[a-z]{2}$")
Progress = Callable[[int], None]


class LibraryError(Exception):
    """An item cannot be added or used; the message says what to do."""


@dataclass(frozen=True)
class Item:
    name: str
    kind: str
    title: str
    description: str
    language: str
    subject: str
    sha256: str | None
    size: int
    index_page: str
    state: str
    problem: str | None
    source: str
    version: str
    added_at: int
    verified_at: int | None


COLUMNS = ("name, kind, title, description, language, subject, sha256, size, index_page, state, "
           "problem, source, version, added_at, verified_at")


def items(db: sqlite_utils.Database, *, only_ok: bool = False) -> list[Item]:
    sql = f"SELECT {COLUMNS} FROM content_items"  # noqa: S608 - constant column list
    if only_ok:
        sql += " WHERE state = 'ok'"
    return [Item(*row) for row in db.execute(sql + " ORDER BY title COLLATE NOCASE, name").fetchall()]


def get(db: sqlite_utils.Database, name: str) -> Item | None:
    row = db.execute(f"SELECT {COLUMNS} FROM content_items WHERE name = ?",  # noqa: S608
                     [name]).fetchone()
    return Item(*row) if row else None


def item_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:128]
    if not name:
        raise LibraryError(f"cannot make an item name from {text!r}; pass --name")
    return name


def _now() -> int:
    return int(time.time() * 1000)


# -- archives ---------------------------------------------------------------------------------
def zim_parts(path: Path) -> list[Path]:
    """The files of an archive: `x.zim` alone, or `x.zimaa`, `x.zimab`, ... (given any of them
    or `x.zim` when only the parts exist)."""
    if path.is_file() and not SPLIT_SUFFIX.search(path.name):
        return [path]
    base = path.name[:-2] if SPLIT_SUFFIX.search(path.name) else path.name
    parts = sorted(p for p in path.parent.glob(base + "??") if SPLIT_SUFFIX.search(p.name))
    if not parts:
        raise LibraryError(f"{path}: no such archive (nor its parts {base}aa, {base}ab, ...)")
    return parts


def _copy_joined(store: ContentStore, parts: list[Path], progress: Progress | None) -> tuple[Path, str, int]:
    import hashlib

    tmp = store.temp_path(".zim")
    digest = hashlib.sha256()
    size = 0
    need = sum(p.stat().st_size for p in parts)
    if store.free_bytes() < need:
        raise LibraryError(f"not enough free space on {store.root}: {need} bytes needed")
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                        if progress:
                            progress(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        # On a drive that failed, removing the part may fail too: `clean_tmp` takes it later.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise LibraryError(f"cannot copy into {store.root}: {exc.strerror}") from None
    return tmp, digest.hexdigest(), size


def add_zim(store: ContentStore, source: Path, *, name: str | None = None, language: str = "",
            subject: str = "", expect_sha256: str | None = None, origin: str = "",
            progress: Progress | None = None, move: bool = False) -> Item:
    """Check an archive (split parts are joined), store it and list it (replacing an item of the
    same name only once the new archive opened). `move` takes a file already in the store's
    tmp folder (a finished download) instead of copying."""
    store.initialise()
    if move:
        tmp, sha, size = source, sha256_file(source), source.stat().st_size
    else:
        tmp, sha, size = _copy_joined(store, zim_parts(source), progress)
    try:
        if expect_sha256 and sha != expect_sha256.lower():
            raise LibraryError(f"{source}: checksum mismatch (expected {expect_sha256}, got {sha})")
        try:
            info = zim.quick_check(tmp)
        except zim.ZimError as exc:
            raise LibraryError(f"{source}: refused: {exc}") from None
        blob = store.adopt(tmp, sha, size)
    finally:
        tmp.unlink(missing_ok=True)
    stem = SPLIT_SUFFIX.sub("", source.name).removesuffix(".zim")
    name = name or item_name(info.name or stem)
    db = store.db
    with transaction(db):
        old = get(db, name)
        db.execute("DELETE FROM content_items WHERE name = ?", [name])
        db.execute(
            "INSERT INTO content_items (name, kind, title, description, language, subject, sha256, size, "
            "index_page, state, source, version, added_at, verified_at) "
            "VALUES (?, 'zim', ?, ?, ?, ?, ?, ?, ?, 'ok', ?, ?, ?, ?)",
            [name, info.title, info.description, language or catalog.language_code(info.language),
             subject or _subject(info.tags), blob.sha256, blob.size, info.main_path,
             origin or str(source), info.date, _now(), _now()])
        search.remove_documents(db, "zim", name)
    if not info.fulltext:
        _index_zim(store, name, blob.path)
    if old and old.sha256 != blob.sha256:
        store.collect_garbage()
    item = get(db, name)
    assert item is not None
    return item


def _subject(tags: str) -> str:
    for tag in tags.split(";"):
        if tag.startswith("_category:"):
            return tag.removeprefix("_category:")
    return ""


class _Text(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "noscript", "template"):
            self._skip += 1
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "noscript", "template") and self._skip:
            self._skip -= 1
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def html_text(data: bytes) -> tuple[str, str]:
    """(title, text) of an HTML page, scripts and styles left out, both `search.spaced` (every
    run of white space one space: snippets are cut from the text as it is)."""
    parser = _Text()
    parser.feed(data.decode("utf-8", "replace"))
    return " ".join(parser.title.split()), " ".join(" ".join(parser.parts).split())


def _zim_articles(archive_path: Path) -> Iterator[tuple[str, str, str]]:
    archive = zim.open_archive(archive_path)
    for index in range(min(archive.all_entry_count, 10 * MAX_INDEXED_ARTICLES)):
        entry = archive._get_entry_by_id(index)
        if entry.is_redirect or (zim.hidden(entry.path) and not archive.has_new_namespace_scheme):
            continue
        item = entry.get_item()
        if not item.mimetype.startswith("text/html") or item.size > 4 << 20:
            continue
        title, text = html_text(bytes(item.content))
        yield entry.path, entry.title or title, text


def _index_zim(store: ContentStore, name: str, archive_path: Path) -> None:
    """Archives without a full-text index of their own go into ours (titles and text)."""
    docs = _zim_articles(archive_path)
    search.index_many(store.db, "zim", name,
                      (doc for _, doc in zip(range(MAX_INDEXED_ARTICLES), docs, strict=False)))


# -- packs ------------------------------------------------------------------------------------
def build_manifest(folder: Path, name: str) -> catalog.PackManifest:
    """A manifest for a folder that has none (hashing every file)."""
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == "manifest.json" or any(part.startswith(".") for part in rel.split("/")):
            continue
        files.append(catalog.PackFile(rel, sha256_file(path), path.stat().st_size))
    if not files:
        raise LibraryError(f"{folder}: the folder has no files")
    paths = {f.path for f in files}
    index = next((p for p in ("index.html", "index.htm") if p in paths), files[0].path)
    return catalog.PackManifest(name=name, title=folder.name.replace("_", " ").replace("-", " "),
                                files=tuple(files), index=index)


def read_pack_manifest(folder: Path) -> catalog.PackManifest | None:
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        return catalog.parse_pack_manifest(path.read_bytes())
    except catalog.CatalogError as exc:
        raise LibraryError(f"{path}: {exc}") from None


def add_pack(store: ContentStore, folder: Path, *, name: str | None = None, language: str = "",
             subject: str = "", title: str = "", origin: str = "") -> Item:
    """Store a pack (a folder with `manifest.json`, whose checksums must all match, or a plain
    folder, for which one is made) and list it."""
    store.initialise()
    if not folder.is_dir():
        raise LibraryError(f"{folder}: no such folder")
    manifest = read_pack_manifest(folder) or build_manifest(folder, name or item_name(folder.name))
    return store_pack(store, manifest, lambda f: folder / f.path, name=name, language=language,
                      subject=subject, title=title, origin=origin or str(folder))


def store_pack(store: ContentStore, manifest: catalog.PackManifest,
               local: Callable[[catalog.PackFile], Path], *, name: str | None = None,
               language: str = "", subject: str = "", title: str = "", origin: str = "") -> Item:
    need = sum(f.size for f in manifest.files if not store.has(f.sha256))
    if store.free_bytes() < need:
        raise LibraryError(f"not enough free space on {store.root}: {need} bytes needed")
    stored = []
    for f in manifest.files:
        if not store.has(f.sha256):
            path = local(f)
            try:
                store.put_file(path, expect_sha256=f.sha256)
            except FileNotFoundError:
                raise LibraryError(f"{path}: listed in the manifest but missing") from None
            except StoreError as exc:
                raise LibraryError(f"{f.path}: {exc}") from None
        stored.append(f)
    name = name or manifest.name
    db = store.db
    with transaction(db):
        db.execute("DELETE FROM content_items WHERE name = ?", [name])
        db.execute(
            "INSERT INTO content_items (name, kind, title, description, language, subject, sha256, size, "
            "index_page, state, source, version, added_at, verified_at) "
            "VALUES (?, 'pack', ?, ?, ?, ?, NULL, ?, ?, 'ok', ?, ?, ?, ?)",
            [name, title or manifest.title, manifest.description, language or manifest.language,
             subject or manifest.subject, sum(f.size for f in stored), manifest.index, origin,
             manifest.version, _now(), _now()])
        db.conn.executemany("INSERT INTO content_files (item, path, sha256, size, mimetype) "
                            "VALUES (?, ?, ?, ?, ?)",
                            [(name, f.path, f.sha256, f.size, mimetype(f.path)) for f in stored])
        search.remove_documents(db, "pack", name)
        docs = []
        for f in stored:
            kind = mimetype(f.path)
            if kind.startswith("text/html") and f.size < 4 << 20:
                page_title, text = html_text(store.path(f.sha256).read_bytes())
                docs.append((f.path, page_title or f.path, text))
            elif kind.startswith(("application/pdf", "audio/", "video/")):
                docs.append((f.path, Path(f.path).stem.replace("_", " "), ""))
        search.index_many(db, "pack", name, docs)
    store.collect_garbage()
    item = get(db, name)
    assert item is not None
    return item


def mimetype(path: str) -> str:
    guessed = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if guessed.startswith("text/") or guessed in ("application/javascript", "image/svg+xml"):
        guessed += "; charset=utf-8"
    return guessed


def pack_files(db: sqlite_utils.Database, name: str) -> list[tuple[str, str, int, str]]:
    return [(str(p), str(s), int(n), str(m)) for p, s, n, m in db.execute(
        "SELECT path, sha256, size, mimetype FROM content_files WHERE item = ? ORDER BY path", [name])]


# -- removing and checking ----------------------------------------------------------------------
def remove(store: ContentStore, name: str) -> bool:
    db = store.db
    with transaction(db):
        found = db.execute("DELETE FROM content_items WHERE name = ?", [name]).rowcount > 0
        search.remove_documents(db, "zim", name)
        search.remove_documents(db, "pack", name)
    if found and store.present():
        store.collect_garbage()
    return found


def mark(db: sqlite_utils.Database, name: str, problem: str | None) -> None:
    with transaction(db):
        db.execute("UPDATE content_items SET state = ?, problem = ?, verified_at = ? WHERE name = ?",
                   ["bad" if problem else "ok", problem, _now(), name])


def verify(store: ContentStore, name: str, *, full: bool = True) -> str | None:
    """Check an item's bytes against its hash (and, for an archive, libzim's own checksum);
    a bad item is taken out of the library (state `bad`, never served). Returns the problem."""
    item = get(store.db, name)
    if item is None:
        raise LibraryError(f"no item {name!r}")
    store.require()
    problem = None
    if item.kind == "zim" and item.sha256:
        path = store.path(item.sha256)
        if not path.is_file():
            problem = "archive file missing from the content root"
        elif full and sha256_file(path) != item.sha256:
            problem = "archive bytes changed on disk (checksum mismatch)"
        else:
            try:
                zim.full_check(path) if full else zim.quick_check(path)
            except zim.ZimError as exc:
                problem = str(exc)
    else:
        for path_in_pack, sha, _, _ in pack_files(store.db, name):
            blob = store.path(sha)
            if not blob.is_file() or (full and sha256_file(blob) != sha):
                problem = f"{path_in_pack}: missing or changed on disk"
                break
    mark(store.db, name, problem)
    return problem


def verify_next(store: ContentStore) -> tuple[str, str | None] | None:
    """The background integrity check: fully verify (`verify`) the listed item that comes after
    the one checked last time, in name order, wrapping around, and remember it; one item per
    call, so a nightly run reads one archive, not the whole drive. Returns (name, problem), or
    None when the library is empty or its drive is missing (nothing is marked then). Items
    already `bad` are checked too: one put right on disk comes back."""
    if not store.present():
        return None
    names = [row[0] for row in store.db.execute("SELECT name FROM content_items ORDER BY name").fetchall()]
    if not names:
        return None
    row = store.db.execute("SELECT value FROM content_state WHERE key = 'verify_last'").fetchone()
    last = str(row[0]) if row else ""
    name = next((n for n in names if n > last), names[0])
    problem = verify(store, name, full=True)
    with transaction(store.db):
        store.db.execute("INSERT INTO content_state (key, value) VALUES ('verify_last', ?) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", [name])
    return name, problem


def usage_bytes(store: ContentStore) -> int:
    return int(store.db.execute("SELECT coalesce(sum(size), 0) FROM content_blobs").fetchone()[0])


# -- search across everything -----------------------------------------------------------------
def _entry_text(entry: Any) -> tuple[str, str | None]:
    text = html_text(bytes(entry.get_item().content))[1]
    return text, search.fold(text)


def search_all(store: ContentStore, cache: zim.ArchiveCache, query: str, *,
               limit: int = 20, listed: Sequence[Item] | None = None,
               present: bool | None = None) -> list[search.Hit]:
    """Our FTS index plus every archive's own full-text index, merged (see `search.merge`).
    `listed`: `items(store.db)` when the caller has it already (those not `ok` are skipped);
    `present`: `store.present()`, likewise."""
    lists = [search.search(store.db, query, limit=limit)]
    if not (store.present() if present is None else present):
        return search.merge(lists, limit)
    for item in items(store.db, only_ok=True) if listed is None else listed:
        if item.kind != "zim" or not item.sha256 or item.state != "ok":
            continue
        try:
            archive = cache.get(item.sha256, store.path(item.sha256))
            if not archive.has_fulltext_index:
                continue
            results = Searcher(archive).search(Query().set_query(query))
            hits = []
            for path in results.getResults(0, min(limit, 10)):
                entry = archive.get_entry_by_path(path)
                text, folded = ("", "") if entry.is_redirect else cache.text(
                    item.sha256, path, functools.partial(_entry_text, entry))
                hits.append(search.Hit("zim", item.name, path, entry.title,
                                       search.snippet(text, query, is_spaced=True, folded=folded)))
            lists.append(hits)
        except (RuntimeError, zim.ZimError):
            continue
    return search.merge(lists, limit)


def suggest_all(store: ContentStore, cache: zim.ArchiveCache, query: str, *,
                limit: int = 8) -> list[search.Hit]:
    lists = [search.suggest(store.db, query, limit=limit)]
    for item in items(store.db, only_ok=True):
        if item.kind != "zim" or not item.sha256 or not store.present():
            continue
        try:
            archive = cache.get(item.sha256, store.path(item.sha256))
            if not archive.has_title_index:
                continue
            searcher = SuggestionSearcher(archive)
            paths = list(searcher.suggest(query).getResults(0, limit))
            typed = search.words(query)
            if not paths and typed and search.stem(typed[-1]) != typed[-1]:
                # libzim matches title words by prefix, so an inflected word ("вода" for the
                # title "Круговорот воды") finds nothing; its stem ("вод") is a prefix of every form.
                stemmed = " ".join([*typed[:-1], search.stem(typed[-1])])
                paths = list(searcher.suggest(stemmed).getResults(0, limit))
            hits = []
            for path in paths:
                entry = archive.get_entry_by_path(path)
                hits.append(search.Hit("zim", item.name, path, entry.title))
            lists.append(hits)
        except (RuntimeError, zim.ZimError):
            continue
    return search.merge(lists, limit)
