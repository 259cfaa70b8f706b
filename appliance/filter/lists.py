"""Category lists: parse hosts, plain-domain, adblock and UT1 files; compile them into one
memory-mapped matcher; swap it in atomically.

Compiled file (little-endian), one entry per distinct domain:

    b"CEFILT01" | u32 header length | JSON header (categories by bit, sources, built_at) |
    padding to 8 | u64 keys[n] sorted | u64 masks[n]

A key is the first 8 bytes of BLAKE2b of the lower-cased domain with its low 6 bits cleared (58
bits kept); the mask has bit i set for the header's category i (at most 64 categories). A lookup
walks the name and each parent (a listed domain covers its subdomains) and ORs the masks it
finds; an unlisted name matches a listed one's key with a chance of about n / 2**58.

The compiler reads lists line by line, buckets keys by their top byte and sorts one bucket at a
time, writing keys and masks to temporary files as it goes: its peak memory is 8 bytes per
entry plus one bucket, not a Python object per domain.

`update()` compiles to a temporary file, opens it to check it, then renames it over the working
file; `Lists.current()` re-maps when the file changed. Readers keep the old mapping until they
drop it, so a query never waits for a swap, and a list that cannot be fetched or is mostly not
domains raises `ListError` before anything is replaced.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import mmap
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAGIC = b"CEFILT01"
MAX_CATEGORIES = 64
_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
                     r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# Names hosts files map to themselves or to the loopback: never a block entry.
_HOSTS_SELF = {"localhost", "localhost.localdomain", "local", "broadcasthost", "ip6-localhost",
               "ip6-loopback", "ip6-localnet", "ip6-mcastprefix", "ip6-allnodes",
               "ip6-allrouters", "ip6-allhosts"}
_SINK = {"0.0.0.0", "127.0.0.1", "::", "::1", "::0"}  # noqa: S104 - hosts-file sink addresses
_BUCKETS = 256
# A list whose bad lines outnumber its good ones is not that kind of list (an HTML error page
# instead of a hosts file): refuse it rather than compile a fraction of it.
_MAX_BAD_SHARE = 0.5


class ListError(Exception):
    """A list could not be read or parsed; names the source. The working file is untouched."""


def key(name: str) -> int:
    """The 64-bit key of a (lower-case, no trailing dot) domain."""
    return int.from_bytes(hashlib.blake2b(name.encode("ascii", "replace"), digest_size=8).digest(),
                          "little")


def normalize(name: str) -> str | None:
    """The domain in canonical form (lower case, no trailing dot, IDNA for Unicode), or None."""
    name = name.strip().rstrip(".").lower()
    if name.startswith("*."):
        name = name[2:]
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return name if _DOMAIN.fullmatch(name) else None


def parse_line(line: str) -> str | bool | None:
    """One line of any supported format: the domain it lists, None for a line that lists nothing
    (blank, comment, adblock header), False for a line that is not valid.

    Formats: a plain domain; a hosts line (`0.0.0.0 a.example b.example`: each name after a sink
    address; only the first is returned, see `parse_lines`); adblock `||domain^` (rules with
    options, paths or exceptions are not domain rules: invalid here)."""
    line = line.strip()
    if not line or line[0] in "#!" or line.startswith("[Adblock"):
        return None
    if line.startswith("||"):
        body = line[2:]
        if body.endswith("^"):
            body = body[:-1]
        elif body.endswith("^|"):
            body = body[:-2]
        else:
            return False
        return normalize(body) or False
    if "#" in line:
        line = line.split("#", 1)[0].strip()
    parts = line.split()
    if len(parts) == 1:
        return normalize(parts[0]) or False
    return False


@dataclass
class SourceReport:
    """What one list held: domains taken, bad lines and the first few of them."""

    category: str
    location: str
    domains: int = 0
    bad: int = 0
    bad_examples: list[str] = field(default_factory=list)

    def bad_line(self, text: str) -> None:
        self.bad += 1
        if len(self.bad_examples) < 5:
            self.bad_examples.append(text[:120])


def iter_domains(lines: Iterable[str], report: SourceReport) -> Iterator[str]:
    """The domains of a list in any supported format, one line at a time (a 4.5-million-line
    list is never held in memory); bad lines are counted in `report`."""
    for raw in lines:
        text = raw.strip()
        parts = text.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] in _SINK:
            good = [n for n in map(normalize, parts[1:]) if n and n not in _HOSTS_SELF]
            if not good and not all(p in _HOSTS_SELF for p in parts[1:]):
                report.bad_line(text)
            report.domains += len(good)
            yield from good
            continue
        result = parse_line(text)
        if result is False:
            report.bad_line(text)
        elif isinstance(result, str):
            report.domains += 1
            yield result


def parse_lines(lines: Iterable[str]) -> tuple[list[str], int, list[str]]:
    """(domains, bad line count, the first few bad lines) of a list in any supported format."""
    report = SourceReport("", "")
    domains = list(iter_domains(lines, report))
    return domains, report.bad, report.bad_examples


@dataclass(frozen=True)
class Source:
    """One list: its category and where it comes from (a file path or an http(s) URL)."""

    category: str
    location: str


def ut1_sources(folder: Path, categories: Iterable[str] | None = None) -> list[Source]:
    """One Source per category folder of a UT1 tree (`<folder>/<category>/domains`), sorted; only
    `categories` if given."""
    wanted = set(categories) if categories is not None else None
    return [Source(p.parent.name, str(p)) for p in sorted(folder.glob("*/domains"))
            if wanted is None or p.parent.name in wanted]


def read_source(source: Source, timeout: float = 30.0) -> list[str]:
    """All the lines of a (small) source; ListError naming it if it cannot be read."""
    with tempfile.TemporaryDirectory() as tmp:
        return list(read_lines(fetch(source, Path(tmp), timeout), source))


def fetch(source: Source, folder: Path, timeout: float = 30.0) -> Path:
    """A local file holding the source: the file itself, or a URL downloaded into `folder` (in
    chunks). ListError naming the source if it cannot be read or fetched."""
    try:
        if source.location.startswith(("http://", "https://")):
            path = folder / f"download-{len(list(folder.iterdir()))}"
            with urllib.request.urlopen(source.location, timeout=timeout) as resp, \
                    path.open("wb") as out:  # noqa: S310 - the school's configured list URL
                shutil.copyfileobj(resp, out, 1 << 20)
            return path
        path = Path(source.location)
        with path.open("rb"):
            return path
    except (OSError, ValueError) as exc:
        raise ListError(f"{source.location} ({source.category}): cannot read: {exc}") from None


def read_lines(path: Path, source: Source) -> Iterator[str]:
    """The lines of a fetched source, read as they are used."""
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            yield from f
    except OSError as exc:
        raise ListError(f"{source.location} ({source.category}): cannot read: {exc}") from None


def compile_lists(parsed: Iterable[tuple[Source, Iterable[str]]], out: Path) -> dict[str, Any]:
    """Compile (source, lines) pairs into the matcher file `out` (written whole, then renamed);
    return its header (categories, per-source reports, entries, built_at). ListError if a source
    is mostly bad lines or there are more than 64 categories; `out` is then untouched.

    Memory: 8 bytes per listed domain (the keys, bucketed by their top byte) plus one bucket
    sorted at a time; keys and masks go to temporary files as each bucket is done."""
    buckets = [array("Q") for _ in range(_BUCKETS)]
    categories: list[str] = []
    reports: list[SourceReport] = []
    for source, lines in parsed:
        if source.category not in categories:
            if len(categories) == MAX_CATEGORIES:
                raise ListError(f"{source.location}: more than {MAX_CATEGORIES} categories")
            categories.append(source.category)
        bit = categories.index(source.category)
        report = SourceReport(source.category, source.location)
        for name in iter_domains(lines, report):
            k = key(name)
            # The low 6 bits carry the category while sorting; the key keeps 58 bits.
            buckets[k >> 56].append((k & ~0x3F) | bit)
        bad, total = report.bad, report.bad + report.domains
        if bad and bad > _MAX_BAD_SHARE * total:
            raise ListError(f"{source.location} ({source.category}): {bad} of {total} lines are "
                            f"not domains, e.g. {report.bad_examples[:1]}")
        reports.append(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    entries = 0
    try:
        with tempfile.TemporaryFile(dir=out.parent) as kf, \
                tempfile.TemporaryFile(dir=out.parent) as mf:
            for i, bucket in enumerate(buckets):
                keys, masks = array("Q"), array("Q")
                last = -1
                for value in sorted(bucket):
                    k = value & ~0x3F
                    if k == last:
                        masks[-1] |= 1 << (value & 0x3F)
                    else:
                        keys.append(k)
                        masks.append(1 << (value & 0x3F))
                        last = k
                buckets[i] = array("Q")  # free it before the next one
                if sys.byteorder != "little":  # pragma: no cover - every Pi and PC is
                    keys.byteswap()
                    masks.byteswap()
                keys.tofile(kf)
                masks.tofile(mf)
                entries += len(keys)
            header = {"categories": categories, "entries": entries, "built_at": time.time(),
                      "sources": [vars(r) for r in reports]}
            blob = json.dumps(header).encode()
            head = MAGIC + len(blob).to_bytes(4, "little") + blob
            head += b"\0" * (-len(head) % 8)
            with tmp.open("wb") as f:
                f.write(head)
                for part in (kf, mf):
                    part.seek(0)
                    shutil.copyfileobj(part, f, 1 << 20)
                f.flush()
                os.fsync(f.fileno())
        Matcher.open(tmp)  # readable before it replaces anything
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return header


def update(sources: Iterable[Source], out: Path, timeout: float = 30.0) -> dict[str, Any]:
    """Fetch every source (downloads first, so a failed one stops the update before anything
    is compiled), then compile them into `out`, streaming; ListError (and `out` untouched) if
    any one of them cannot be read or parsed."""
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        fetched = [(s, fetch(s, Path(tmp), timeout)) for s in sources]
        return compile_lists(((s, read_lines(p, s)) for s, p in fetched), out)


def _suffixes(name: str) -> Iterator[str]:
    yield name
    start = name.find(".")
    while start >= 0:
        yield name[start + 1:]
        start = name.find(".", start + 1)


class Matcher:
    """A compiled list file, memory-mapped read-only. Cheap to open; share it between threads."""

    def __init__(self, path: Path, mm: mmap.mmap | None, header: dict[str, Any],
                 keys: Any, masks: Any) -> None:
        self.path = path
        self._mm = mm
        self.header = header
        self.categories: tuple[str, ...] = tuple(header["categories"])
        self.bits = {c: 1 << i for i, c in enumerate(self.categories)}
        self._keys = keys
        self._masks = masks
        self._n = len(keys)

    @classmethod
    def empty(cls) -> Matcher:
        return cls(Path(), None, {"categories": [], "entries": 0, "built_at": None, "sources": []},
                   (), ())

    @classmethod
    def open(cls, path: Path) -> Matcher:
        """Map `path`; ListError if it is not a complete matcher file."""
        try:
            with path.open("rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise ListError(f"{path}: cannot map: {exc}") from None
        try:
            if mm[:8] != MAGIC:
                raise ListError(f"{path}: not a compiled list")
            size = int.from_bytes(mm[8:12], "little")
            header = json.loads(mm[12:12 + size])
            start = 12 + size + (-(12 + size) % 8)
            n = int(header["entries"])
            if len(mm) != start + 16 * n:
                raise ListError(f"{path}: {len(mm)} bytes, expected {start + 16 * n}")
        except (ValueError, KeyError, TypeError) as exc:
            raise ListError(f"{path}: corrupt header: {exc}") from None
        view = memoryview(mm)
        return cls(path, mm, header, view[start:start + 8 * n].cast("Q"),
                   view[start + 8 * n:start + 16 * n].cast("Q"))

    def _mask_of(self, name: str) -> int:
        k = key(name) & ~0x3F
        i = bisect.bisect_left(self._keys, k)
        return int(self._masks[i]) if i < self._n and self._keys[i] == k else 0

    def mask(self, name: str) -> int:
        """OR of the category masks of `name` (lower case) and each of its parents."""
        if not self._n:
            return 0
        m = 0
        for suffix in _suffixes(name):
            m |= self._mask_of(suffix)
        return m

    def matches(self, name: str) -> list[tuple[str, list[str]]]:
        """For explain: each listed suffix of `name` and its categories."""
        out = []
        for suffix in _suffixes(name):
            m = self._mask_of(suffix) if self._n else 0
            if m:
                out.append((suffix, self.names(m)))
        return out

    def names(self, mask: int) -> list[str]:
        return [c for i, c in enumerate(self.categories) if mask >> i & 1]

    def mask_of_categories(self, categories: Iterable[str]) -> int:
        m = 0
        for c in categories:
            m |= self.bits.get(c, 0)
        return m


class Lists:
    """The working matcher of one file: `current()` re-maps it when the file was replaced (checked
    at most once a second), so an update by another process takes effect without a restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._matcher = Matcher.empty()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self.refresh()

    def refresh(self) -> bool:
        """Map the file again if it changed; True if a new matcher is in use."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return False
        stamp = (st.st_ino, st.st_mtime_ns)
        if stamp == self._stamp:
            return False
        try:
            matcher = Matcher.open(self.path)
        except ListError:
            return False  # keep serving the previous one
        self._matcher, self._stamp = matcher, stamp
        return True

    def current(self, now: float | None = None) -> Matcher:
        now = time.monotonic() if now is None else now
        if now - self._checked >= 1.0:
            self._checked = now
            self.refresh()
        return self._matcher
