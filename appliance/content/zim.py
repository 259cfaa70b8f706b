"""ZIM archives through python-libzim: checking one before it is listed, and finding entries.

Both namespace layouts are handled: in an archive with the new scheme (`has_new_namespace_scheme`)
every served path is a `C/` entry and libzim looks it up without the namespace; in an old one the
URL path carries the namespace (`A/Ray_Charles`, `I/m/photo.jpg`, `-/s/style.css`), exactly as its
pages link to each other. Metadata (`M/`) and index (`X/`, old `Z/`) entries are never served.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from libzim.reader import Archive, Entry

# Namespaces of an old-layout archive that hold no content for readers.
HIDDEN_NAMESPACES = ("M/", "X/", "Z/")
SAMPLE_ENTRIES = 32


class ZimError(Exception):
    """The file is not a readable ZIM archive (the message says what is wrong)."""


@dataclass(frozen=True)
class ZimInfo:
    title: str
    description: str
    language: str
    name: str
    tags: str
    date: str
    articles: int
    new_scheme: bool
    fulltext: bool
    main_path: str


def _meta(archive: Archive, key: str) -> str:
    try:
        return bytes(archive.get_metadata(key)).decode("utf-8", "replace").strip()
    except (RuntimeError, KeyError):
        return ""


def open_archive(path: Path) -> Archive:
    try:
        return Archive(str(path))
    except RuntimeError as exc:
        raise ZimError(f"not a readable ZIM archive: {exc}") from None


def quick_check(path: Path) -> ZimInfo:
    """The cheap check at add time: the header and pointer tables open, the stored MD5 is where
    the header says (libzim reads it at open), and a sample of entries, the main page among
    them, can be read. The full checksum is `full_check` (slow: the whole file)."""
    archive = open_archive(path)
    try:
        count = archive.all_entry_count
        if count == 0:
            raise ZimError("the archive has no entries")
        step = max(1, count // SAMPLE_ENTRIES)
        for index in range(0, count, step):
            entry = archive._get_entry_by_id(index)
            if not entry.is_redirect:
                item = entry.get_item()
                _ = item.mimetype
                if item.size <= 1 << 20:
                    _ = bytes(item.content[:64])
        main = ""
        if archive.has_main_entry:
            entry = archive.main_entry
            main = _follow(entry).path
    except RuntimeError as exc:
        raise ZimError(f"damaged ZIM archive: {exc}") from None
    language = _meta(archive, "Language").split(",")[0]
    return ZimInfo(
        title=_meta(archive, "Title") or path.stem, description=_meta(archive, "Description"),
        language=language, name=_meta(archive, "Name"), tags=_meta(archive, "Tags"),
        date=_meta(archive, "Date"), articles=archive.article_count,
        new_scheme=archive.has_new_namespace_scheme, fulltext=archive.has_fulltext_index,
        main_path=main)


def full_check(path: Path) -> None:
    """The whole archive's checksum (libzim's `check`): minutes on a big archive."""
    archive = open_archive(path)
    try:
        ok = archive.check() if archive.has_checksum else True
    except RuntimeError as exc:
        raise ZimError(f"damaged ZIM archive: {exc}") from None
    if not ok:
        raise ZimError("the archive's checksum does not match its content")


def _follow(entry: Entry, limit: int = 16) -> Entry:
    for _ in range(limit):
        if not entry.is_redirect:
            return entry
        entry = entry.get_redirect_entry()
    raise ZimError("redirect loop")


def hidden(path: str) -> bool:
    return path.startswith(HIDDEN_NAMESPACES) or path in ("M", "X", "Z")


def find(archive: Archive, path: str) -> Entry | None:
    """The entry a reader may see at `path`, or None (missing, hidden or unreadable)."""
    if not path or (hidden(path) and not archive.has_new_namespace_scheme):
        return None
    try:
        if not archive.has_entry_by_path(path):
            return None
        return archive.get_entry_by_path(path)
    except (RuntimeError, KeyError, UnicodeError):
        return None


class ArchiveCache:
    """Open archives by blob hash, at most `size` at a time (opening costs; reading is
    thread-safe). A replaced archive has another hash, so it is a new key.

    It also keeps the plain text of recently searched articles (`text`), at most `text_chars`
    characters in all: a search's snippets are cut from the text of its hits, and parsing an
    article's HTML in Python costs more than the whole libzim search."""

    def __init__(self, size: int = 16, text_chars: int = 8_000_000) -> None:
        self.size = size
        self.text_chars = text_chars
        self._open: OrderedDict[str, Archive] = OrderedDict()
        self._texts: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._text_total = 0
        self._lock = threading.Lock()

    def text(self, sha256: str, path: str, extract: Callable[[], str]) -> str:
        """The text of entry `path` of archive `sha256`, from `extract()` the first time (two
        threads may both extract it once: harmless, and no lock is held while parsing)."""
        key = (sha256, path)
        with self._lock:
            found = self._texts.get(key)
            if found is not None:
                self._texts.move_to_end(key)
                return found
        text = extract()
        with self._lock:
            if key not in self._texts and len(text) <= self.text_chars:
                self._texts[key] = text
                self._text_total += len(text)
                while self._text_total > self.text_chars:
                    _, old = self._texts.popitem(last=False)
                    self._text_total -= len(old)
        return text

    def get(self, sha256: str, path: Path) -> Archive:
        with self._lock:
            archive = self._open.get(sha256)
            if archive is not None:
                self._open.move_to_end(sha256)
                return archive
        archive = open_archive(path)
        with self._lock:
            self._open[sha256] = archive
            while len(self._open) > self.size:
                self._open.popitem(last=False)
        return archive
