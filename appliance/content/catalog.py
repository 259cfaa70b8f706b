"""Catalogs, parsed: the Kiwix OPDS feed, metalinks, `.sha256` files, our pack and bundle manifests.

Pure: bytes in, typed records out, `CatalogError` naming what is wrong. Nothing here fetches.

Shapes (see docs/content.md for the full description and where each comes from):
- OPDS: the Atom acquisition feed the Kiwix catalog publishes at `/catalog/v2/entries`
  (libkiwix's `catalog_v2_entries.xml` template): one `<entry>` per book with `<name>`,
  `<title>`, `<summary>`, `<language>` (ISO 639-3, comma separated), `<category>`, `<tags>`,
  `<flavour>`, `<articleCount>`, and an acquisition link
  `rel="http://opds-spec.org/acquisition/open-access" type="application/x-zim"` whose `href`
  is the archive's `.meta4` URL and `length` its size.
- Metalink: RFC 5854 (`urn:ietf:params:xml:ns:metalink`), as MirrorBrain serves it for
  download.kiwix.org: per `<file>` a `<size>`, `<hash type="sha-256">` (also md5, sha-1),
  `<pieces length=".." type="sha-1">` with one `<hash>` per piece, and `<url>` mirrors.
- `.sha256`: `sha256sum` output, `<64 hex>  <file name>`.
- Our manifests: JSON, `format` + `version` (1), SHA-256 of every file.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

ATOM = "{http://www.w3.org/2005/Atom}"
METALINK = "{urn:ietf:params:xml:ns:metalink}"
ACQUISITION = "http://opds-spec.org/acquisition/open-access"
HEX64 = re.compile(r"[0-9a-fA-F]{64}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
PACK_FORMAT = "classroom-edge/pack"
BUNDLE_FORMAT = "classroom-edge/bundle"
MAX_XML = 64 << 20


class CatalogError(ValueError):
    """A catalog, metalink, checksum file or manifest that cannot be used, and why."""


@dataclass(frozen=True)
class Book:
    """One archive a catalog offers."""

    name: str
    title: str
    url: str  # the archive, or its .meta4
    size: int | None = None
    description: str = ""
    language: str = ""
    subject: str = ""
    sha256: str | None = None
    flavour: str = ""
    kind: str = "zim"


@dataclass(frozen=True)
class Metalink:
    name: str
    size: int
    sha256: str
    urls: tuple[str, ...]
    piece_length: int = 0
    piece_type: str = ""
    pieces: tuple[str, ...] = ()


@dataclass(frozen=True)
class PackFile:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class PackManifest:
    name: str
    title: str
    files: tuple[PackFile, ...]
    index: str = "index.html"
    language: str = ""
    subject: str = ""
    description: str = ""
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _xml(data: bytes) -> ET.Element:
    if len(data) > MAX_XML:
        raise CatalogError("XML document too large")
    if b"<!DOCTYPE" in data[:4096] or b"<!ENTITY" in data:
        # No DTDs at all: no entity expansion bombs, no external entities.
        raise CatalogError("XML with a DOCTYPE or entities is refused")
    try:
        return ET.fromstring(data)  # noqa: S314 - DTDs refused above
    except ET.ParseError as exc:
        raise CatalogError(f"not well-formed XML: {exc}") from None


def _text(node: ET.Element, tag: str) -> str:
    child = node.find(tag)
    return (child.text or "").strip() if child is not None else ""


def language_code(iso639_3: str) -> str:
    """Kiwix writes ISO 639-3 (`eng`, `rus`); the portal's languages are two letters."""
    first = iso639_3.split(",")[0].strip().lower()
    return {"eng": "en", "rus": "ru", "udm": "udm", "fra": "fr", "deu": "de", "spa": "es",
            "ukr": "uk", "tat": "tt", "kaz": "kk"}.get(first, first)


def parse_opds(data: bytes, base_url: str = "") -> list[Book]:
    """The books of a Kiwix OPDS acquisition feed; relative links resolve against `base_url`."""
    root = _xml(data)
    if root.tag != f"{ATOM}feed":
        raise CatalogError("not an Atom feed (expected <feed> in the Atom namespace)")
    books = []
    for entry in root.iter(f"{ATOM}entry"):
        link = next((li for li in entry.iter(f"{ATOM}link") if li.get("rel") == ACQUISITION
                     and (li.get("type") or "").startswith("application/x-zim")), None)
        if link is None or not link.get("href"):
            continue
        name = _text(entry, f"{ATOM}name") or _text(entry, f"{ATOM}id").removeprefix("urn:uuid:")
        if not NAME.fullmatch(name):
            raise CatalogError(f"entry {name!r}: the book name must be letters, digits, '.', '_', '-'")
        length = link.get("length")
        books.append(Book(
            name=name, title=_text(entry, f"{ATOM}title") or name,
            url=urljoin(base_url, link.get("href", "")),
            size=int(length) if length and length.isdigit() else None,
            description=_text(entry, f"{ATOM}summary"),
            language=language_code(_text(entry, f"{ATOM}language")),
            subject=_text(entry, f"{ATOM}category"), flavour=_text(entry, f"{ATOM}flavour")))
    return books


def parse_metalink(data: bytes) -> Metalink:
    """The first `<file>` of an RFC 5854 metalink; it must carry a SHA-256 and a size."""
    root = _xml(data)
    node = root.find(f"{METALINK}file")
    if root.tag != f"{METALINK}metalink" or node is None:
        raise CatalogError("not a metalink 4 document (expected <metalink><file>)")
    hashes = {h.get("type", "").lower(): (h.text or "").strip() for h in node.findall(f"{METALINK}hash")}
    sha = hashes.get("sha-256", "")
    if not HEX64.fullmatch(sha):
        raise CatalogError("metalink has no sha-256 hash")
    size_text = _text(node, f"{METALINK}size")
    if not size_text.isdigit():
        raise CatalogError("metalink has no size")
    urls = sorted((int(u.get("priority") or 999999), (u.text or "").strip())
                   for u in node.findall(f"{METALINK}url") if (u.text or "").strip())
    pieces = node.find(f"{METALINK}pieces")
    piece_length, piece_type = 0, ""
    piece_hashes: tuple[str, ...] = ()
    if pieces is not None:
        piece_type = (pieces.get("type") or "").lower()
        length = pieces.get("length") or ""
        piece_hashes = tuple((h.text or "").strip().lower() for h in pieces.findall(f"{METALINK}hash"))
        if piece_type in ("sha-1", "sha-256") and length.isdigit() and int(length) > 0:
            piece_length = int(length)
            expected = -(-int(size_text) // piece_length)
            if len(piece_hashes) != expected:
                raise CatalogError(f"metalink lists {len(piece_hashes)} pieces, the size needs {expected}")
        else:
            piece_type, piece_hashes = "", ()
    return Metalink(node.get("name", ""), int(size_text), sha.lower(), tuple(u for _, u in urls),
                    piece_length, piece_type, piece_hashes)


def parse_sha256_file(text: str, file_name: str | None = None) -> str:
    """The hash in `sha256sum` output (for `file_name` when the file lists several)."""
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if parts and HEX64.fullmatch(parts[0]):
            listed = parts[1].lstrip("*").strip() if len(parts) > 1 else ""
            if file_name is None or not listed or listed.rsplit("/", 1)[-1] == file_name:
                return parts[0].lower()
    raise CatalogError("no SHA-256 found in the checksum file")


def _json(data: bytes, fmt: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CatalogError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise CatalogError(f"'format' must be {fmt!r}")
    if doc.get("version") != 1:
        raise CatalogError(f"unsupported {fmt} version {doc.get('version')!r} (this appliance reads 1)")
    return doc


def safe_pack_path(path: str) -> bool:
    """A pack's file path: relative, '/'-separated, no empty, '.' or '..' parts, no NUL."""
    if not path or path.startswith("/") or "\\" in path or "\0" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def parse_pack_manifest(data: bytes) -> PackManifest:
    doc = _json(data, PACK_FORMAT)
    name = doc.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise CatalogError("'name' must be 1-128 letters, digits, '.', '_', '-'")
    files = []
    raw_files = doc.get("files")
    if not isinstance(raw_files, list) or not raw_files:
        raise CatalogError("'files' must be a non-empty list")
    seen = set()
    for i, f in enumerate(raw_files):
        if not isinstance(f, dict):
            raise CatalogError(f"files[{i}] must be a table")
        path, sha, size = f.get("path"), f.get("sha256"), f.get("size")
        if not isinstance(path, str) or not safe_pack_path(path):
            raise CatalogError(f"files[{i}].path {path!r} must be a relative path without '..'")
        if not isinstance(sha, str) or not HEX64.fullmatch(sha):
            raise CatalogError(f"files[{i}].sha256 must be 64 hex digits")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise CatalogError(f"files[{i}].size must be a byte count")
        if path in seen:
            raise CatalogError(f"files[{i}].path {path!r} is listed twice")
        seen.add(path)
        files.append(PackFile(path, sha.lower(), size))
    index = doc.get("index", "index.html")
    if not isinstance(index, str) or index not in seen:
        raise CatalogError(f"'index' {index!r} must be one of the files")
    strings = {k: doc.get(k, "") for k in ("title", "language", "subject", "description", "edition")}
    for key, value in strings.items():
        if not isinstance(value, str):
            raise CatalogError(f"'{key}' must be a string")
    return PackManifest(name=name, title=strings["title"] or name, files=tuple(files), index=index,
                        language=strings["language"], subject=strings["subject"],
                        description=strings["description"], version=strings["edition"])


def pack_manifest_json(manifest: PackManifest) -> bytes:
    doc = {"format": PACK_FORMAT, "version": 1, "name": manifest.name, "title": manifest.title,
           "language": manifest.language, "subject": manifest.subject,
           "description": manifest.description, "edition": manifest.version,
           "index": manifest.index,
           "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in manifest.files]}
    return json.dumps(doc, ensure_ascii=False, indent=2).encode() + b"\n"


def parse_bundle(data: bytes, base_url: str = "") -> list[Book]:
    """A district bundle: the archives and packs a school should hold."""
    doc = _json(data, BUNDLE_FORMAT)
    items = doc.get("items")
    if not isinstance(items, list):
        raise CatalogError("'items' must be a list")
    books = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise CatalogError(f"items[{i}] must be a table")
        name, url, kind = item.get("name"), item.get("url"), item.get("kind", "zim")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise CatalogError(f"items[{i}].name must be letters, digits, '.', '_', '-'")
        if not isinstance(url, str) or not url:
            raise CatalogError(f"items[{i}].url is required")
        if kind not in ("zim", "pack"):
            raise CatalogError(f"items[{i}].kind must be 'zim' or 'pack'")
        sha = item.get("sha256")
        if kind == "zim" and (not isinstance(sha, str) or not HEX64.fullmatch(sha)):
            raise CatalogError(f"items[{i}].sha256 must be 64 hex digits")
        size = item.get("size")
        books.append(Book(name=name, title=str(item.get("title") or name), url=urljoin(base_url, url),
                          size=size if isinstance(size, int) else None,
                          language=str(item.get("language", "")), subject=str(item.get("subject", "")),
                          sha256=sha.lower() if isinstance(sha, str) else None, kind=kind))
    return books
