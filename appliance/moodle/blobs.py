"""Where mirrored files live: a content store addressed by SHA-256, and the resumable fetch.

`BlobStore` is the small interface the mirror needs; `FileBlobStore` is a simple
implementation under the mirror's own folder. The content library's store (appliance/content)
offers the same operations, so switching is constructing that store instead (docs/moodle.md).

`fetch()` downloads one Moodle file into the store: If-None-Match when the stored SHA-1 is
known (304: nothing transferred), a partial file kept between attempts and resumed with
Range. Moodle ignores If-Range, so a resumed file is accepted only when the SHA-1 of the
assembled bytes equals the ETag; anything else is discarded, never stored.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from appliance.moodle.client import Client, MoodleError, file_path


class DiskFull(MoodleError):
    """Less free space than the configured reserve: the sync stops, the old mirror stays."""

    def __init__(self, where: str, free: int, needed: int) -> None:
        super().__init__("diskfull", f"{free // 1_000_000} MB free, {needed // 1_000_000} MB "
                         "needed plus the reserve ([moodle] min_free_mb)", where)


class BlobStore(Protocol):
    """Content addressed by SHA-256 (hex). `put` is atomic: a blob is whole or absent."""

    def put(self, chunks: Iterable[bytes]) -> tuple[str, int]: ...
    def open(self, sha256: str) -> BinaryIO: ...
    def has(self, sha256: str) -> bool: ...
    def size(self, sha256: str) -> int: ...
    def remove(self, sha256: str) -> None: ...
    def all(self) -> Iterator[str]: ...


class FileBlobStore:
    """Blobs as files `<root>/<aa>/<sha256>`, written to a temporary file, fsynced, renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / ".tmp"

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a SHA-256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        self.tmp.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd, name = tempfile.mkstemp(dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            target = self._path(sha)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(name, target)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return sha, size

    def open(self, sha256: str) -> BinaryIO:
        return self._path(sha256).open("rb")

    def has(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def size(self, sha256: str) -> int:
        return self._path(sha256).stat().st_size

    def remove(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def all(self) -> Iterator[str]:
        if not self.root.exists():
            return
        for folder in self.root.iterdir():
            if folder.is_dir() and len(folder.name) == 2:
                for item in folder.iterdir():
                    yield item.name


def read_chunks(handle: BinaryIO, size: int = 64 * 1024) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(size):
            yield chunk


@dataclass(frozen=True)
class Fetched:
    """The outcome of `fetch`: `not_modified` (304) or `stored` (blob in the store)."""

    status: Literal["not_modified", "stored"]
    sha1: str = ""
    sha256: str = ""
    size: int = 0
    wire: int = 0  # body bytes received for it in this attempt
    resumed: bool = False


def check_space(folder: Path, needed: int, reserve: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free - needed < reserve:
        raise DiskFull(str(folder), free, needed)


def fetch(client: Client, store: BlobStore, partial_dir: Path, url: str, *, key: str,
          etag: str | None = None, expected_size: int = 0, reserve: int = 0) -> Fetched:
    """Download `url` into `store` (see the module doc). `key` names the partial file between
    attempts (same module file, same key). Raises MoodleError (`truncated`, `checksum`,
    `diskfull`, Moodle's codes); a truncated download of a file with an ETag stays resumable."""
    where = file_path(url)
    name = hashlib.sha256(key.encode()).hexdigest()[:32]
    part, meta_path = partial_dir / f"{name}.part", partial_dir / f"{name}.json"
    check_space(partial_dir, expected_size, reserve)
    meta = _read_meta(meta_path)
    offset = part.stat().st_size if part.exists() and meta.get("etag") else 0
    if offset == 0:
        _discard(part, meta_path)
    response = client.open_file(url, etag=None if offset else etag, offset=offset)
    if response.status == 304:
        return Fetched("not_modified")
    new_etag = response.etag
    resumed = False
    if response.status == 206:
        start = _range_start(response.headers.get("content-range", ""))
        if start != offset or new_etag != meta.get("etag"):
            # Another version than the partial one (Moodle ignores If-Range): start over.
            if response.body is not None:
                response.body.close()
            _discard(part, meta_path)
            return fetch(client, store, partial_dir, url, key=key, etag=None,
                         expected_size=expected_size, reserve=reserve)
        resumed = True
    elif response.status == 200:
        offset = 0
        _discard(part, meta_path)
    else:
        if response.body is not None:
            response.body.close()
        raise MoodleError("http", f"HTTP {response.status}", where)
    resumable = bool(new_etag) and response.headers.get("accept-ranges", "").lower() == "bytes"
    if resumable:
        meta_path.write_text(json.dumps({"etag": new_etag, "path": where}))
    wire = 0
    assert response.body is not None
    try:
        with part.open("ab") as out:
            for chunk in response.chunks():
                out.write(chunk)
                wire += len(chunk)
            out.flush()
            os.fsync(out.fileno())
    except (OSError, ValueError, http.client.HTTPException) as exc:
        if not resumable:
            _discard(part, meta_path)
        raise MoodleError("truncated", f"the download broke off after {offset + wire} bytes "
                          f"({type(exc).__name__})", where) from None
    finally:
        response.body.close()
    length = response.length
    if length is not None and wire != length:
        if not resumable:
            _discard(part, meta_path)
        raise MoodleError("truncated", f"got {wire} of {length} bytes", where)
    sha1 = _sha1(part)
    if new_etag and len(new_etag) == 40 and sha1 != new_etag:
        _discard(part, meta_path)
        raise MoodleError("checksum", "the assembled file does not match its ETag (SHA-1)", where)
    sha256, size = store.put(read_chunks(part.open("rb")))
    _discard(part, meta_path)
    return Fetched("stored", sha1, sha256, size, wire, resumed)


def _range_start(value: str) -> int:
    # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()  # noqa: S324 - Moodle's content hash, compared, not trusted for security
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 16):
            digest.update(chunk)
    return digest.hexdigest()


def _read_meta(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _discard(part: Path, meta: Path) -> None:
    part.unlink(missing_ok=True)
    meta.unlink(missing_ok=True)
