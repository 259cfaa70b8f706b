"""Mirrored files in the library's content store, and the resumable fetch that puts them there.

The files live in `appliance.content.store.ContentStore` (SHA-256 addressed, on `[content] root`,
which may be a drive), held under the owner `moodle` (`OWNER`): the library's garbage collection
keeps every blob the mirror holds, and the mirror's own collection only releases blobs it held.

`fetch()` downloads one Moodle file into the store: If-None-Match when the stored SHA-1 is known
(304: nothing transferred), a partial file in the store's tmp folder kept between attempts and
resumed with Range. Moodle ignores If-Range, so a resumed file is accepted only when the SHA-1
of the assembled bytes equals the ETag; anything else is discarded, never stored. A finished
download leaves a record (its SHA-1 and SHA-256) beside the partial files until the course that
lists it is committed (`forget`): a sync killed between the download and the commit asks for the
file again with If-None-Match and that SHA-1, so the 304 reuses the blob the killed sync stored
instead of transferring it again. The transfer obeys the library's `Limits` (bandwidth cap, time
windows, stop), so a Moodle sync shares them with the library's downloads. The library's own
`download.fetch` is not used for the transfer itself: it sends If-Range, keeps the URL (here
with the token) beside the partial file and knows nothing of Moodle's JSON errors or of 304.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from appliance.content.download import Bucket, Limits, check
from appliance.content.store import ContentStore
from appliance.moodle.client import Client, MoodleError, file_path

OWNER = "moodle"
# Names in the store's tmp folder; `.dl` keeps them from the store's clean-up of stray files.
PARTIAL_PREFIX = "moodle-"


class DiskFull(MoodleError):
    """Less free space than the configured reserve: the sync stops, the old mirror stays."""

    def __init__(self, where: str, free: int, needed: int) -> None:
        super().__init__("diskfull", f"{free // 1_000_000} MB free, {needed // 1_000_000} MB "
                         "needed plus the reserve ([moodle] min_free_mb)", where)


@dataclass(frozen=True)
class Fetched:
    """The outcome of `fetch`: `not_modified` (304) or `stored` (blob in the store, held)."""

    status: Literal["not_modified", "stored"]
    sha1: str = ""
    sha256: str = ""
    size: int = 0
    wire: int = 0  # body bytes received for it in this attempt
    resumed: bool = False
    finished_before: bool = False  # stored by an earlier (killed) sync, confirmed by a 304


def check_space(store: ContentStore, needed: int, reserve: int) -> None:
    free = store.free_bytes()
    if free - needed < reserve:
        raise DiskFull(str(store.root), free, needed)


def _name(key: str) -> str:
    return PARTIAL_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:32]


def partial_paths(store: ContentStore, key: str) -> tuple[Path, Path]:
    """The partial file and its ETag record for `key` (same module file, same key)."""
    return store.tmp_dir / f"{_name(key)}.dl", store.tmp_dir / f"{_name(key)}.etag.dl"


def finished_path(store: ContentStore, key: str) -> Path:
    """The record of `key`'s finished download not yet committed (see the module doc)."""
    return store.tmp_dir / f"{_name(key)}.done.dl"


def forget(store: ContentStore, key: str) -> None:
    """Drop `key`'s finished-download record: call once a committed course lists the file."""
    finished_path(store, key).unlink(missing_ok=True)


def fetch(client: Client, store: ContentStore, url: str, *, key: str, etag: str | None = None,
          expected_size: int = 0, reserve: int = 0, limits: Limits | None = None) -> Fetched:
    """Download `url` into `store` (see the module doc). Raises MoodleError (`truncated`,
    `checksum`, `diskfull`, Moodle's codes) or download.Paused (window closed, stop asked: the
    partial file is kept); a truncated download of a file with an ETag stays resumable."""
    limits = limits or Limits()
    where = file_path(url)
    store.require()
    store.tmp_dir.mkdir(exist_ok=True)
    part, meta_path = partial_paths(store, key)
    check_space(store, expected_size, reserve)
    check(limits)
    meta = _read_meta(meta_path)
    offset = part.stat().st_size if part.exists() and meta.get("etag") else 0
    if offset == 0:
        _discard(part, meta_path)
    done_path = finished_path(store, key)
    # A finished download whose blob the store still has: its SHA-1 is the validator to ask
    # with (it is newer than the mirror's `etag`, which a killed sync never replaced).
    done = _read_finished(done_path) if offset == 0 else None
    if done is not None and not store.has(done.sha256):
        done = None
    response = client.open_file(url, etag=None if offset else (done.sha1 if done else etag),
                                offset=offset)
    if response.status == 304:
        if done is None:
            return Fetched("not_modified")
        store.hold(OWNER, done.sha256)
        return Fetched("stored", done.sha1, done.sha256, done.size, finished_before=True)
    done_path.unlink(missing_ok=True)  # another version than the one finished before
    new_etag = response.etag
    resumed = False
    if response.status == 206:
        start = _range_start(response.headers.get("content-range", ""))
        if start != offset or new_etag != meta.get("etag"):
            # Another version than the partial one (Moodle ignores If-Range): start over.
            if response.body is not None:
                response.body.close()
            _discard(part, meta_path)
            return fetch(client, store, url, key=key, etag=None, expected_size=expected_size,
                         reserve=reserve, limits=limits)
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
    bucket = Bucket(limits.bandwidth_bps)
    assert response.body is not None
    try:
        with part.open("ab") as out:
            try:
                for chunk in response.chunks():
                    out.write(chunk)
                    # To the OS at once: a sync killed (kill -9) keeps every byte received.
                    out.flush()
                    wire += len(chunk)
                    bucket.take(len(chunk))
                    check(limits)
            finally:
                out.flush()
                os.fsync(out.fileno())
    except (OSError, ValueError, http.client.HTTPException) as exc:
        if not resumable:
            _discard(part, meta_path)
        raise MoodleError("truncated", f"the download broke off after {offset + wire} bytes "
                          f"({type(exc).__name__})", where) from None
    except BaseException:
        if not resumable:  # Paused: only a resumable file is worth keeping
            _discard(part, meta_path)
        raise
    finally:
        response.body.close()
    length = response.length
    if length is not None and wire != length:
        if not resumable:
            _discard(part, meta_path)
        raise MoodleError("truncated", f"got {wire} of {length} bytes", where)
    sha1, sha256, size = _digests(part)
    if new_etag and len(new_etag) == 40 and sha1 != new_etag:
        _discard(part, meta_path)
        raise MoodleError("checksum", "the assembled file does not match its ETag (SHA-1)", where)
    # Held before the blob is listed anywhere, so the library's collection cannot take it
    # between this download and the course's commit.
    store.adopt(part, sha256, size)
    store.hold(OWNER, sha256)
    if new_etag == sha1:  # only an ETag that names the content can confirm it later
        done_path.write_text(json.dumps({"sha1": sha1, "sha256": sha256, "size": size}))
    _discard(part, meta_path)
    return Fetched("stored", sha1, sha256, size, wire, resumed)


def _range_start(value: str) -> int:
    # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


def _digests(path: Path) -> tuple[str, str, int]:
    sha1 = hashlib.sha1()  # noqa: S324 - Moodle's content hash, compared, not trusted for security
    sha256 = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 16):
            sha1.update(chunk)
            sha256.update(chunk)
            size += len(chunk)
    return sha1.hexdigest(), sha256.hexdigest(), size


def _read_finished(path: Path) -> Fetched | None:
    """The finished-download record at `path`, or None (absent, or torn by a kill)."""
    data = _read_meta(path)
    sha1, sha256, size = data.get("sha1"), data.get("sha256"), data.get("size")
    if not (isinstance(sha1, str) and isinstance(sha256, str) and isinstance(size, int)):
        return None
    return Fetched("stored", sha1, sha256, size)


def _read_meta(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _discard(part: Path, meta: Path) -> None:
    part.unlink(missing_ok=True)
    meta.unlink(missing_ok=True)
