"""A course as the sync account sees it, parsed from Moodle's web-service answers (pure).

`parse_course()` turns `core_course_get_contents` plus the `mod_*_get_*_by_courses` instances
into a `Course`; nothing else in the mirror reads Moodle's JSON. Only what the account may see
is kept: Moodle leaves hidden modules and sections out, and a restricted module (`uservisible`
false) keeps its name and availability note but no content and no files.
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Module types the mirror copies; any other is listed with a link to Moodle.
SUPPORTED = ("page", "resource", "book", "folder", "url", "label")
# The `@@PLUGINFILE@@` URLs Moodle writes: /webservice/pluginfile.php/<ctx>/<component>/<area>/...
PLUGINFILE = re.compile(r"/(?:webservice/)?pluginfile\.php/(\d+)/([a-z0-9_]+)/([a-z0-9_]+)/(.*)$")
# File areas whose first path segment is an item id that only busts caches (a revision).
REVISIONED = {("mod_page", "content"), ("mod_resource", "content"), ("mod_folder", "content")}


@dataclass(frozen=True)
class RemoteFile:
    """One file of a module. `path` is its place in the module (`/sub/dir/name.pdf`), the key
    the mirror keeps it under, whatever revision its URL carries."""

    path: str
    url: str
    size: int
    timemodified: int
    mimetype: str

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Chapter:
    """A book chapter: its generated `index.html` (no ETag: compared by content) and level
    (0 chapter, 1 sub-chapter)."""

    id: int
    title: str
    level: int
    url: str
    timemodified: int


@dataclass(frozen=True)
class Module:
    cmid: int
    modname: str
    name: str
    section_id: int
    position: int
    contextid: int
    listed: bool  # False for a stealth module: reachable by link, not on the course page
    available: bool  # False: restricted for the sync account, only `availability` is shown
    availability: str = ""  # HTML from Moodle (sanitized before it is shown)
    description: str = ""  # label text, or the intro of the other types (raw HTML)
    content: str = ""  # a page's HTML (raw)
    external_url: str = ""  # a url module's target
    moodle_url: str = ""  # the module on the school's Moodle ("open in Moodle when online")
    timemodified: int = 0
    files: tuple[RemoteFile, ...] = ()
    chapters: tuple[Chapter, ...] = ()

    @property
    def supported(self) -> bool:
        return self.modname in SUPPORTED


@dataclass(frozen=True)
class Section:
    id: int
    number: int
    name: str
    summary: str
    position: int


@dataclass(frozen=True)
class Course:
    id: int
    shortname: str
    fullname: str
    summary: str
    timemodified: int
    sections: tuple[Section, ...] = ()
    modules: tuple[Module, ...] = ()
    moodle_url: str = ""

    def module(self, cmid: int) -> Module | None:
        return next((m for m in self.modules if m.cmid == cmid), None)


@dataclass(frozen=True)
class Instances:
    """The `mod_*_get_*_by_courses` answers, indexed by course module id."""

    by_cmid: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_lists(cls, *lists: list[dict[str, Any]]) -> Instances:
        found: dict[int, Mapping[str, Any]] = {}
        for items in lists:
            for item in items:
                cmid = item.get("coursemodule")
                if isinstance(cmid, int):
                    found[cmid] = item
        return cls(found)


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_course(course: Mapping[str, Any], contents: list[dict[str, Any]], instances: Instances,
                 site_url: str) -> Course:
    """The `Course` from one entry of `core_enrol_get_users_courses`, that course's
    `core_course_get_contents` and the instances; `site_url` is Moodle's base URL."""
    sections: list[Section] = []
    modules: list[Module] = []
    for spos, s in enumerate(contents):
        if not s.get("uservisible", True) and not s.get("availabilityinfo"):
            continue
        sid = _int(s.get("id"))
        sections.append(Section(sid, _int(s.get("section")), _str(s.get("name")),
                                _str(s.get("summary")), spos))
        for mpos, m in enumerate(s.get("modules") or []):
            modules.append(_module(m, sid, mpos, instances))
    cid = _int(course.get("id"))
    return Course(
        id=cid, shortname=_str(course.get("shortname")),
        fullname=_str(course.get("fullname")) or _str(course.get("displayname")),
        summary=_str(course.get("summary")), timemodified=_int(course.get("timemodified")),
        sections=tuple(sections), modules=tuple(modules),
        moodle_url=f"{site_url.rstrip('/')}/course/view.php?id={cid}",
    )


def _module(m: Mapping[str, Any], section_id: int, position: int, instances: Instances) -> Module:
    cmid = _int(m.get("id"))
    modname = _str(m.get("modname"))
    available = bool(m.get("uservisible", False))
    base = Module(
        cmid=cmid, modname=modname, name=_str(m.get("name")), section_id=section_id,
        position=position, contextid=_int(m.get("contextid")),
        listed=_int(m.get("visibleoncoursepage"), 1) != 0, available=available,
        availability=_str(m.get("availabilityinfo")), moodle_url=_str(m.get("url")),
    )
    if not available or modname not in SUPPORTED:
        # Restricted content never lands on the Pi: name and note only.
        return base
    inst = instances.by_cmid.get(cmid, {})
    contents = [c for c in m.get("contents") or [] if isinstance(c, dict)]
    description = _str(m.get("description")) if modname == "label" else _str(inst.get("intro"))
    if modname == "label" and not description:
        description = _str(inst.get("intro"))
    files: list[RemoteFile] = []
    chapters: list[Chapter] = []
    external = ""
    if modname == "book":
        chapters = _chapters(contents)
        files = [_file(c) for c in contents if c.get("type") == "file" and c.get("filename") != "index.html"]
    elif modname == "url":
        external = next((_str(c.get("fileurl")) for c in contents if c.get("type") == "url"),
                        _str(inst.get("externalurl")))
    else:
        files = [_file(c) for c in contents
                 if c.get("type") == "file" and not (modname == "page" and c.get("filename") == "index.html")]
    return dataclasses.replace(
        base, description=description, content=_str(inst.get("content")) if modname == "page" else "",
        external_url=external, timemodified=_int(inst.get("timemodified")),
        files=tuple(files), chapters=tuple(chapters),
    )


def _file(c: Mapping[str, Any]) -> RemoteFile:
    filepath = _str(c.get("filepath")) or "/"
    return RemoteFile(path=filepath + _str(c.get("filename")), url=_str(c.get("fileurl")),
                      size=_int(c.get("filesize")), timemodified=_int(c.get("timemodified")),
                      mimetype=_str(c.get("mimetype")) or "application/octet-stream")


def _chapters(contents: list[dict[str, Any]]) -> list[Chapter]:
    """Chapters in the book's order (its `structure` entry), sub-chapters after their parent;
    hidden chapters (a teacher's drafts) are left out."""
    pages = {_str(c.get("filepath")).strip("/"): c for c in contents
             if c.get("filename") == "index.html"}
    structure = next((c for c in contents if c.get("filename") == "structure"), None)
    try:
        items = json.loads(_str(structure.get("content"))) if structure else []
    except ValueError:
        items = []
    found: list[Chapter] = []

    def walk(entries: Any, level: int) -> None:
        for item in entries if isinstance(entries, list) else []:
            if not isinstance(item, dict):
                continue
            chapter_id = _str(item.get("href")).split("/")[0]
            page = pages.get(chapter_id)
            if page and str(item.get("hidden", "0")) in ("0", "", "False", "false"):
                found.append(Chapter(_int(chapter_id), _str(item.get("title")), level,
                                     _str(page.get("fileurl")), _int(page.get("timemodified"))))
            walk(item.get("subitems"), level + 1)

    walk(items, 0)
    if not found:  # no structure: the pages in their order
        found = [Chapter(_int(k), _str(c.get("content")), 0, _str(c.get("fileurl")),
                         _int(c.get("timemodified"))) for k, c in pages.items()]
    return found


@dataclass(frozen=True)
class FileRef:
    """What a pluginfile URL points to: (context id, component, area, path after the item id)."""

    contextid: int
    component: str
    area: str
    itemid: str
    path: str


def parse_pluginfile(url: str) -> FileRef | None:
    """Split a Moodle file URL (absolute or relative, `webservice/` or not). None otherwise."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    match = PLUGINFILE.search(path)
    if not match:
        return None
    ctx, component, area, rest = match.groups()
    itemid, _, tail = rest.partition("/")
    if component == "mod_book" and area == "chapter":
        # The item id is the chapter: the mirror keeps chapter files under /<chapter>/.
        return FileRef(int(ctx), component, area, itemid, f"/{itemid}/{tail}")
    if (component, area) in REVISIONED:
        return FileRef(int(ctx), component, area, itemid, "/" + tail if tail else "/" + itemid)
    return FileRef(int(ctx), component, area, "", "/" + rest)


def course_to_json(course: Course) -> str:
    """The course as JSON (what the mirror keeps to diff against at the next sync)."""
    return json.dumps(dataclasses.asdict(course), ensure_ascii=False, sort_keys=True)


def course_from_json(text: str) -> Course:
    data = json.loads(text)
    modules = tuple(
        Module(**{**m, "files": tuple(RemoteFile(**f) for f in m["files"]),
                  "chapters": tuple(Chapter(**c) for c in m["chapters"])})
        for m in data.pop("modules")
    )
    sections = tuple(Section(**s) for s in data.pop("sections"))
    return Course(**data, sections=sections, modules=modules)
