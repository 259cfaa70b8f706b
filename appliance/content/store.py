"""The content store: files addressed by their SHA-256 on `[content] root`, indexed in SQLite.

A file is written to `<root>/tmp/`, fsynced, renamed to `<root>/blobs/<sha[:2]>/<sha>` and its
folder fsynced, then recorded in `content_blobs`: a crash leaves either no file or a whole one,
never half a file under a hash name. Writing the same content twice stores it once.

The root may be a USB drive or an SSD. It counts as present only while it holds the marker file
`.classroom-edge-library` (written by the first `content add` on an empty library) and, with
`[content] require_mount`, is a mount point. A missing root is reported as missing (`present()`
is false, `problem()` says why); nothing is ever written to it then, so an unmounted drive never
turns into an empty library that fills the SD card underneath.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import sqlite_utils

from appliance.store import transaction

MARKER = ".classroom-edge-library"
CHUNK = 1 << 20


class StoreError(Exception):
    """The store cannot do what was asked (root missing, full disk, checksum mismatch)."""


class RootMissing(StoreError):
    """The content root is not there (drive unplugged, not mounted, marker gone)."""


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int
    path: Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ContentStore:
    """Blobs on `root`, their index in `db` (the `content` component's tables must exist)."""

    def __init__(self, root: Path, db: sqlite_utils.Database, *, require_mount: bool = False) -> None:
        self.root = root
        self.db = db
        self.require_mount = require_mount

    # -- presence -------------------------------------------------------------------------
    def problem(self) -> str | None:
        """Why the root cannot be used, or None when it is present."""
        if not self.root.is_dir():
            return f"{self.root} does not exist (is the drive plugged in and mounted?)"
        if self.require_mount and not os.path.ismount(self.root):
            return f"{self.root} is not a mount point (require_mount is set: is the drive mounted?)"
        if not (self.root / MARKER).is_file():
            return f"{self.root} has no {MARKER} (not this library's drive, or not mounted)"
        return None

    def present(self) -> bool:
        return self.problem() is None

    def missing(self) -> bool:
        """The root is gone while the library lists items (or must be a mount and is not): what
        people are shown as "drive missing". A new, empty library is not missing, only empty."""
        if self.present():
            return False
        has_items = self.db.execute("SELECT 1 FROM content_items LIMIT 1").fetchone() is not None
        return has_items or (self.require_mount and not os.path.ismount(self.root))

    def initialise(self) -> None:
        """Make the root this library's, the first time: only while the library is empty, so
        a second, empty drive (or the bare mount point of an unplugged one) is never adopted
        by a library that already has content."""
        if self.present():
            return
        items = self.db.execute("SELECT count(*) FROM content_items").fetchone()[0]
        if items:
            raise RootMissing(self.problem() or "content root missing")
        if self.require_mount and not os.path.ismount(self.root):
            raise RootMissing(self.problem() or "not mounted")
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / MARKER
        tmp = self.root / f"{MARKER}.{secrets.token_hex(4)}"
        tmp.write_text(secrets.token_hex(16) + "\n")
        os.replace(tmp, marker)
        fsync_dir(self.root)

    def require(self) -> None:
        problem = self.problem()
        if problem:
            raise RootMissing(problem)

    # -- paths ----------------------------------------------------------------------------
    def path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def temp_path(self, suffix: str = ".part") -> Path:
        self.require()
        self.tmp_dir.mkdir(exist_ok=True)
        return self.tmp_dir / f"{secrets.token_hex(8)}{suffix}"

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def has(self, sha256: str) -> bool:
        found = self.db.execute("SELECT 1 FROM content_blobs WHERE sha256 = ?", [sha256]).fetchone()
        return found is not None

    # -- writing --------------------------------------------------------------------------
    def put_chunks(self, chunks: Iterable[bytes], *, expect_sha256: str | None = None) -> Blob:
        """Store the bytes `chunks` yields. With `expect_sha256`, a mismatch stores nothing."""
        tmp = self.temp_path()
        digest = hashlib.sha256()
        size = 0
        try:
            with tmp.open("wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            sha = digest.hexdigest()
            if expect_sha256 and sha != expect_sha256.lower():
                raise StoreError(f"checksum mismatch: expected {expect_sha256}, got {sha}")
            return self.adopt(tmp, sha, size)
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, source: Path, *, expect_sha256: str | None = None) -> Blob:
        with source.open("rb") as f:
            return self.put_chunks(iter(lambda: f.read(CHUNK), b""), expect_sha256=expect_sha256)

    def put_stream(self, stream: BinaryIO) -> Blob:
        return self.put_chunks(iter(lambda: stream.read(CHUNK), b""))

    def adopt(self, tmp: Path, sha256: str, size: int) -> Blob:
        """Move an already fsynced file of ours (in `tmp_dir`, content `sha256`) into place."""
        final = self.path(sha256)
        if not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            fsync_dir(final.parent)
        with transaction(self.db):
            self.db.execute("INSERT OR IGNORE INTO content_blobs (sha256, size, added_at) VALUES (?, ?, ?)",
                            [sha256, size, int(time.time() * 1000)])
        return Blob(sha256, size, final)

    # Blobs nothing refers to: no item, no pack file, no other capability's reference.
    _UNREFERENCED = ("sha256 NOT IN (SELECT sha256 FROM content_items WHERE sha256 IS NOT NULL) "
                     "AND sha256 NOT IN (SELECT sha256 FROM content_files) "
                     "AND sha256 NOT IN (SELECT sha256 FROM content_refs)")

    def collect_garbage(self) -> int:
        """Delete blobs no item, no pack file and no owner's reference (`hold`) refers to;
        returns how many."""
        rows = self.db.execute(f"SELECT sha256 FROM content_blobs WHERE {self._UNREFERENCED}").fetchall()  # noqa: S608
        return self._delete([sha for (sha,) in rows])

    def _delete(self, shas: list[str]) -> int:
        for sha in shas:
            with contextlib.suppress(FileNotFoundError):
                self.path(sha).unlink()
            self.db.execute("DELETE FROM content_blobs WHERE sha256 = ?", [sha])
        return len(shas)

    # -- references by other capabilities ---------------------------------------------------
    def hold(self, owner: str, sha256: str) -> None:
        """Record that `owner` uses blob `sha256` (already stored): the library's garbage
        collection keeps it until the owner releases it."""
        with transaction(self.db):
            self.db.execute("INSERT OR IGNORE INTO content_refs (owner, sha256) VALUES (?, ?)",
                            [owner, sha256])

    def held(self, owner: str) -> set[str]:
        """The blobs `owner` holds."""
        return {r[0] for r in self.db.execute("SELECT sha256 FROM content_refs WHERE owner = ?", [owner])}

    def release(self, owner: str, *, keep: set[str]) -> int:
        """Drop `owner`'s references to every blob not in `keep`, then delete those of the
        released blobs that nothing else (an item, a pack file, another owner) refers to.
        Never touches a blob `owner` did not hold. Returns how many blobs were deleted."""
        with transaction(self.db):
            gone = sorted(self.held(owner) - keep)
            for sha in gone:
                self.db.execute("DELETE FROM content_refs WHERE owner = ? AND sha256 = ?", [owner, sha])
            orphans = [sha for sha in gone if self.db.execute(
                f"SELECT 1 FROM content_blobs WHERE sha256 = ? AND {self._UNREFERENCED}",  # noqa: S608
                [sha]).fetchone()]
            return self._delete(orphans)

    def clean_tmp(self, older_than_s: float = 0) -> None:
        """Remove stray temporary files (a crash mid-write) older than the given age."""
        if not self.tmp_dir.is_dir():
            return
        cutoff = time.time() - older_than_s
        for entry in self.tmp_dir.iterdir():
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime <= cutoff and not entry.name.endswith(".dl"):
                    entry.unlink()

    def iter_bytes(self, sha256: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        with self.path(sha256).open("rb") as f:
            f.seek(start)
            left = length
            while left is None or left > 0:
                chunk = f.read(CHUNK if left is None else min(CHUNK, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk
