"""Resumable, verifying downloads for a poor uplink.

`fetch(url, part, ...)` brings `part` (a file in the store's tmp folder) to the complete, checked
file, however often the connection drops:

- resume with `Range: bytes=<have>-` and `If-Range: <validator>` (the ETag, else Last-Modified,
  kept in `<part>.json` beside it); we also compare the validator of every answer with the one
  we started with, so an upstream file that changed mid-download (or a server that ignores
  If-Range) restarts cleanly from byte 0 instead of splicing two versions;
- a bandwidth cap (`bandwidth_bps`, a token bucket over the whole transfer) and time windows
  (`HH:MM-HH:MM` local time): outside a window the download pauses (`Paused`), keeping its bytes;
- a free-space check before starting (size left + reserve) and a full disk (ENOSPC) both stop with
  `DownloadError(permanent=True)`; the library is not touched, the partial file is removed;
- metalink piece hashes: a piece that does not match is fetched again alone (a Range of that
  piece), never the whole file; then the whole file's SHA-256 must match.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from appliance.config import Config

CHUNK = 64 * 1024
RECONNECTS = 5
USER_AGENT = "classroom-edge-content/1"


class DownloadError(Exception):
    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Paused(Exception):
    """The time window closed or a stop was asked for; the partial file is kept."""


def in_window(windows: tuple[str, ...], now: dt.time) -> bool:
    """Whether `now` is inside one of the windows ("22:00-06:00" crosses midnight). None: always."""
    if not windows:
        return True
    minutes = now.hour * 60 + now.minute
    for window in windows:
        start_s, end_s = window.split("-")
        start = int(start_s[:2]) * 60 + int(start_s[3:])
        end = int(end_s[:2]) * 60 + int(end_s[3:])
        if (start <= end and start <= minutes < end) or (start > end and (minutes >= start or minutes < end)):
            return True
    return False


def check(limits: Limits) -> None:
    """Raise Paused when a stop was asked for or the time is outside the windows."""
    if limits.stop.is_set():
        raise Paused("stopped")
    if not in_window(limits.windows, limits.local_time()):
        raise Paused("outside the sync window")


@dataclass
class Limits:
    bandwidth_bps: int = 0
    windows: tuple[str, ...] = ()
    reserve_bytes: int = 0
    free_bytes: Callable[[Path], int] = field(
        default=lambda p: os.statvfs(p).f_bavail * os.statvfs(p).f_frsize)
    local_time: Callable[[], dt.time] = field(default=lambda: dt.datetime.now().time())
    stop: threading.Event = field(default_factory=threading.Event)
    timeout: float = 30.0


def limits_for(cfg: Config, *, windows: bool = True) -> Limits:
    """The library's limits from `[content]` (bandwidth cap, windows, reserve): every download
    of the library's queue, a Moodle sync's included, runs under them. `windows=False` for a
    run a person asked for now (the cap still applies)."""
    return Limits(bandwidth_bps=cfg.content.bandwidth_kbps * 125,
                  windows=cfg.content.windows if windows else (),
                  reserve_bytes=cfg.content.reserve_mb * 1_000_000)


class Bucket:
    """A token bucket over one transfer: `take(n)` sleeps so the average stays under `rate`
    bytes per second (0: no cap). Other capabilities' fetchers use it to share the cap."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.sent = 0

    def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        self.sent += n
        ahead = self.sent / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


def _sidecar(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _load_state(part: Path, url: str) -> dict[str, Any]:
    try:
        state = json.loads(_sidecar(part).read_text())
    except (OSError, ValueError):
        state = {}
    if state.get("url") != url or not part.exists():
        part.unlink(missing_ok=True)
        return {"url": url, "validator": None}
    return dict(state)


def _save_state(part: Path, state: dict[str, Any]) -> None:
    tmp = _sidecar(part).with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, _sidecar(part))


def _validator(headers: Any) -> str | None:
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return str(etag)
    last = headers.get("Last-Modified")
    return str(last) if last else None


def _open(url: str, start: int, end: int | None, validator: str | None, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310 - http(s) only, checked
    if start or end is not None:
        request.add_header("Range", f"bytes={start}-{'' if end is None else end}")
        if validator:
            request.add_header("If-Range", validator)
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310


def remove_partial(part: Path) -> None:
    part.unlink(missing_ok=True)
    _sidecar(part).unlink(missing_ok=True)


def fetch(url: str, part: Path, *, size: int | None, sha256: str | None,
          pieces: dict[str, Any] | None = None, limits: Limits | None = None,
          progress: Callable[[int], None] | None = None) -> None:
    """Bring `part` to the complete file at `url` (see the module docstring). Raises
    DownloadError (retry later unless `permanent`) or Paused."""
    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"{url}: only http and https URLs are fetched", permanent=True)
    limits = limits or Limits()
    state = _load_state(part, url)
    have = part.stat().st_size if part.exists() else 0
    if size is not None:
        need = max(0, size - have) + limits.reserve_bytes
        free = limits.free_bytes(part.parent)
        if free < need:
            remove_partial(part)
            raise DownloadError(f"not enough free space: {need} bytes needed (with the reserve), "
                                f"{free} free", permanent=True)
    bucket = Bucket(limits.bandwidth_bps)
    failures = 0
    while True:
        try:
            have = _transfer(url, part, state, size, limits, bucket, progress)
            break
        except (urllib.error.URLError, HTTPException, ConnectionError, TimeoutError) as exc:
            failures += 1
            if isinstance(exc, urllib.error.HTTPError) and exc.code in (403, 404, 410):
                raise DownloadError(f"{url}: HTTP {exc.code}") from None
            if failures > RECONNECTS:
                raise DownloadError(f"{url}: {exc}") from None
            time.sleep(min(2.0, 0.2 * failures))
    if size is not None and have != size:
        remove_partial(part)
        raise DownloadError(f"{url}: got {have} bytes, the catalog says {size}")
    if pieces:
        _repair_pieces(url, part, state, pieces, limits)
    if sha256 and _sha256(part) != sha256.lower():
        remove_partial(part)
        raise DownloadError(f"{url}: SHA-256 does not match the catalog's; will download again")
    _sidecar(part).unlink(missing_ok=True)


def _transfer(url: str, part: Path, state: dict[str, Any], size: int | None, limits: Limits,
              bucket: Bucket, progress: Callable[[int], None] | None) -> int:
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have == size:
        return have
    if size is not None and have > size:
        part.unlink()
        have = 0
    try:
        response = _open(url, have, None, state.get("validator"), limits.timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            part.unlink()  # our partial file is longer than upstream's: it changed; start over
            state["validator"] = None
            raise ConnectionError("upstream shorter than our partial file; restarting") from None
        raise
    with response:
        validator = _validator(response.headers)
        resumed = response.status == 206
        if resumed:
            first = response.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
            if first != str(have) or (state.get("validator") and validator != state["validator"]):
                part.unlink(missing_ok=True)  # another version of the file: start over
                state["validator"] = None
                raise ConnectionError("upstream changed; restarting")
        elif have:
            have = 0  # 200: the server sent the whole (possibly new) file
        state["validator"] = validator
        _save_state(part, state)
        expected = response.headers.get("Content-Length")
        started = have
        with part.open("ab" if resumed else "wb") as out:
            try:
                have = _copy(response, out, have, limits, bucket, progress)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    out.close()
                    remove_partial(part)
                    raise DownloadError("the disk is full; the download stopped and was removed",
                                        permanent=True) from None
                raise
        # http.client returns a short read, not an error, when the server closes early.
        if expected is not None and expected.isdigit() and have - started != int(expected):
            raise ConnectionError(f"connection closed after {have - started} of {expected} bytes")
    return have


def _copy(response: BinaryIO, out: BinaryIO, have: int, limits: Limits, bucket: Bucket,
          progress: Callable[[int], None] | None) -> int:
    while True:
        check(limits)
        chunk = response.read(CHUNK)
        if not chunk:
            out.flush()
            os.fsync(out.fileno())
            return have
        out.write(chunk)
        have += len(chunk)
        if progress:
            progress(len(chunk))
        bucket.take(len(chunk))


def _piece_hash(kind: str, data: bytes) -> str:
    if kind == "sha-256":
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def bad_pieces(part: Path, pieces: dict[str, Any]) -> list[int]:
    length, kind, hashes = int(pieces["length"]), str(pieces["type"]), list(pieces["hashes"])
    bad = []
    with part.open("rb") as f:
        for index, expected in enumerate(hashes):
            f.seek(index * length)
            if _piece_hash(kind, f.read(length)) != expected:
                bad.append(index)
    return bad


def _repair_pieces(url: str, part: Path, state: dict[str, Any], pieces: dict[str, Any],
                   limits: Limits) -> None:
    length = int(pieces["length"])
    for _ in range(3):
        bad = bad_pieces(part, pieces)
        if not bad:
            return
        for index in bad:
            start = index * length
            with _open(url, start, start + length - 1, state.get("validator"), limits.timeout) as response:
                if response.status != 206 or _validator(response.headers) != state.get("validator"):
                    remove_partial(part)
                    raise DownloadError(f"{url}: changed upstream while repairing a piece")
                data = response.read()
            with part.open("r+b") as f:
                f.seek(start)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    remove_partial(part)
    raise DownloadError(f"{url}: pieces still do not match their metalink hashes")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_bytes(url: str, *, limit: int = 16 << 20, timeout: float = 30.0) -> bytes:
    """A small document (a feed, a metalink, a manifest), at most `limit` bytes."""
    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"{url}: only http and https URLs are fetched", permanent=True)
    try:
        with _open(url, 0, None, None, timeout) as response:
            data: bytes = response.read(limit + 1)
    except (urllib.error.URLError, HTTPException, ConnectionError, TimeoutError) as exc:
        raise DownloadError(f"{url}: {exc}") from None
    if len(data) > limit:
        raise DownloadError(f"{url}: larger than {limit} bytes", permanent=True)
    return data
