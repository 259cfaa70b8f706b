"""ZIM archives through python-libzim: checking one before it is listed, and finding entries.

Both namespace layouts are handled: in an archive with the new scheme (`has_new_namespace_scheme`)
every served path is a `C/` entry and libzim looks it up without the namespace; in an old one the
URL path carries the namespace (`A/Ray_Charles`, `I/m/photo.jpg`, `-/s/style.css`), exactly as its
pages link to each other. Metadata (`M/`) and index (`X/`, old `Z/`) entries are never served.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from libzim.reader import Archive, Entry

# Namespaces of an old-layout archive that hold no content for readers.
HIDDEN_NAMESPACES = ("M/", "X/", "Z/")
SAMPLE_ENTRIES = 32
# Entries whose place in the archive file is remembered (about 100 bytes each).
STORED_ENTRIES = 65536


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
        self._texts: OrderedDict[tuple[str, str], tuple[str, str | None]] = OrderedDict()
        self._stored: dict[tuple[str, int], tuple[int, int] | None] = {}
        self._text_total = 0
        self._lock = threading.Lock()

    def stored(self, sha256: str, path: Path, index: int) -> tuple[int, int] | None:
        """`stored_range` of entry `index` of archive `sha256` at `path`, remembered (an
        archive's file never changes under its hash)."""
        key = (sha256, index)
        with self._lock:
            if key in self._stored:
                return self._stored[key]
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            found = stored_range(fd, index)
        finally:
            os.close(fd)
        with self._lock:
            if len(self._stored) >= STORED_ENTRIES:
                self._stored.clear()
            self._stored[key] = found
        return found

    def text(self, sha256: str, path: str,
             extract: Callable[[], tuple[str, str | None]]) -> tuple[str, str | None]:
        """The text of entry `path` of archive `sha256` and its folded copy (`search.fold`),
        from `extract()` the first time (two threads may both extract it once: harmless, and no
        lock is held while parsing). The budget counts the text's characters."""
        key = (sha256, path)
        with self._lock:
            found = self._texts.get(key)
            if found is not None:
                self._texts.move_to_end(key)
                return found
        pair = extract()
        size = len(pair[0])
        with self._lock:
            if key not in self._texts and size <= self.text_chars:
                self._texts[key] = pair
                self._text_total += size
                while self._text_total > self.text_chars:
                    _, old = self._texts.popitem(last=False)
                    self._text_total -= len(old[0])
        return pair

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


_HEADER = struct.Struct("<IHH16sIIQQQQIIQ")
_U64 = struct.Struct("<Q")
_DIRENT = struct.Struct("<HBcIII")
# Cluster compression codes that mean "stored as is" (0: the format's default, 1: none).
_UNCOMPRESSED = (0, 1)
_EXTENDED = 0x10


def stored_range(fd: int, index: int) -> tuple[int, int] | None:
    """(offset, size) of entry `index`'s bytes in the archive file open as `fd`, when the entry is
    stored in an uncompressed cluster (images, video, audio in practice), else None (compressed,
    a redirect, or anything that does not parse: the caller then reads through libzim).

    Read from the ZIM format's tables (openzim's spec: header, path pointer list, directory
    entry, cluster pointer list, the cluster's blob offsets), so the bytes can be sent from the
    file (sendfile, or a few hundred kB at a time for a Range) instead of libzim handing over the
    whole entry: a 200 MB video does not become 200 MB in memory per stream."""
    try:
        header = os.pread(fd, _HEADER.size, 0)
        if len(header) < _HEADER.size:
            return None
        magic, _major, _minor, _uuid, entries, clusters, path_ptr, _title_ptr, cluster_ptr, *_ = (
            _HEADER.unpack(header))
        if magic != 72173914 or not 0 <= index < entries:
            return None
        dirent_pos = _U64.unpack(os.pread(fd, 8, path_ptr + 8 * index))[0]
        mime, _param, _ns, _rev, cluster, blob = _DIRENT.unpack(os.pread(fd, _DIRENT.size, dirent_pos))
        if mime >= 0xFFFD or cluster >= clusters:
            return None
        start = _U64.unpack(os.pread(fd, 8, cluster_ptr + 8 * cluster))[0]
        info = os.pread(fd, 1, start)[0]
        if info & 0x0F not in _UNCOMPRESSED:
            return None
        width = 8 if info & _EXTENDED else 4
        offsets = os.pread(fd, 2 * width, start + 1 + blob * width)
        if len(offsets) < 2 * width:
            return None
        first, end = (int.from_bytes(offsets[i:i + width], "little") for i in (0, width))
        if end < first:
            return None
        return start + 1 + first, end - first
    except (OSError, struct.error, IndexError):
        return None
