"""What a sync must fetch, reuse and drop for one course (pure: no I/O).

Input: the course as the mirror holds it (`Stored`), the course as Moodle describes it now
(`model.Course`) and what `core_course_check_updates` reported since the last sync (`Updates`).
Output: a `Plan`.

Why a diff and not only the update functions: Moodle's update functions report edited,
replaced and new modules and new chapters, but not a module that was deleted or hidden, nor a
renamed section or course (see the recordings' README). So every sync diffs the full course
description against the mirror, keyed by ids (sections by id: their numbers have gaps).

Files are keyed by (module, path in the module), not by URL: the URL's item id is a revision
that changes while the file does not. A stored file whose module was not reported and whose
size and time are unchanged is reused without a request; otherwise it is asked for with
If-None-Match (a 304 reuses it). A generated chapter page (no ETag) is fetched again when its
time changed or Moodle reported the chapter, and kept only if its bytes differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from appliance.moodle.model import Course, Module

FileKey = tuple[int, str]  # (cmid, path in the module)
ChapterKey = tuple[int, int]  # (cmid, chapter id)


@dataclass(frozen=True)
class StoredFile:
    size: int
    timemodified: int
    sha1: str
    sha256: str


@dataclass(frozen=True)
class StoredChapter:
    timemodified: int
    sha256: str  # of the raw generated page


@dataclass(frozen=True)
class Stored:
    """The mirror's current copy of a course (None fields: the course is new)."""

    course: Course | None = None
    files: Mapping[FileKey, StoredFile] = field(default_factory=dict)
    chapters: Mapping[ChapterKey, StoredChapter] = field(default_factory=dict)


@dataclass(frozen=True)
class Updates:
    """What `core_course_check_updates` said: per module the update names and item ids.

    `everything` is True when it was not asked (first sync) or failed: then nothing is trusted
    to be unchanged on the strength of a report alone."""

    modules: Mapping[int, frozenset[str]] = field(default_factory=dict)
    itemids: Mapping[int, frozenset[int]] = field(default_factory=dict)
    everything: bool = False

    def reported(self, cmid: int) -> bool:
        return self.everything or cmid in self.modules

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> Updates:
        """Parse `core_course_check_updates`; its warnings (`nonuservisible`,
        `cmidnotincourse`) are ignored: the diff finds what they are about."""
        modules: dict[int, frozenset[str]] = {}
        itemids: dict[int, frozenset[int]] = {}
        for inst in answer.get("instances") or []:
            if not isinstance(inst, dict) or inst.get("contextlevel") != "module":
                continue
            cmid = inst.get("id")
            if not isinstance(cmid, int):
                continue
            names, ids = set(), set()
            for upd in inst.get("updates") or []:
                if isinstance(upd, dict):
                    names.add(str(upd.get("name")))
                    ids |= {i for i in upd.get("itemids") or [] if isinstance(i, int)}
            modules[cmid] = frozenset(names)
            itemids[cmid] = frozenset(ids)
        return cls(modules, itemids)


@dataclass(frozen=True)
class FileTask:
    """Fetch one file: `etag` set means a conditional request (304: keep the stored one)."""

    cmid: int
    path: str
    url: str
    size: int
    etag: str | None
    reason: Literal["new", "changed", "reported"]


@dataclass(frozen=True)
class ChapterTask:
    cmid: int
    chapter_id: int
    url: str
    reason: Literal["new", "changed", "reported"]


ChangeKind = Literal[
    "course_added", "course_renamed", "section_added", "section_removed", "section_renamed",
    "module_added", "module_removed", "module_moved", "module_renamed", "module_changed",
    "module_restricted", "module_available",
]


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    id: int
    detail: str = ""


@dataclass(frozen=True)
class Plan:
    fetch: tuple[FileTask, ...]
    reuse: Mapping[FileKey, StoredFile]
    fetch_chapters: tuple[ChapterTask, ...]
    reuse_chapters: Mapping[ChapterKey, StoredChapter]
    changes: tuple[Change, ...]

    @property
    def unchanged(self) -> bool:
        return not self.fetch and not self.fetch_chapters and not self.changes

    def dropped_files(self, stored: Stored) -> set[FileKey]:
        """Stored files the new version no longer has (their module went, or the file did)."""
        keep = set(self.reuse) | {(t.cmid, t.path) for t in self.fetch}
        return set(stored.files) - keep


def plan(stored: Stored, fresh: Course, updates: Updates) -> Plan:
    """Decide, for `fresh` against `stored`, what to fetch and what to keep (see module doc)."""
    fetch: list[FileTask] = []
    reuse: dict[FileKey, StoredFile] = {}
    fetch_chapters: list[ChapterTask] = []
    reuse_chapters: dict[ChapterKey, StoredChapter] = {}
    for module in fresh.modules:
        reported = updates.reported(module.cmid)
        for f in module.files:
            key = (module.cmid, f.path)
            old = stored.files.get(key)
            if old is None:
                fetch.append(FileTask(module.cmid, f.path, f.url, f.size, None, "new"))
            elif not reported and old.size == f.size and old.timemodified == f.timemodified:
                reuse[key] = old
            else:
                reason: Literal["changed", "reported"] = (
                    "changed" if (old.size, old.timemodified) != (f.size, f.timemodified) else "reported")
                fetch.append(FileTask(module.cmid, f.path, f.url, f.size, old.sha1 or None, reason))
        reported_chapters = updates.itemids.get(module.cmid, frozenset())
        entries_known = "entries" in updates.modules.get(module.cmid, frozenset())
        for ch in module.chapters:
            ckey = (module.cmid, ch.id)
            cold = stored.chapters.get(ckey)
            if cold is None:
                fetch_chapters.append(ChapterTask(module.cmid, ch.id, ch.url, "new"))
            elif cold.timemodified != ch.timemodified:
                fetch_chapters.append(ChapterTask(module.cmid, ch.id, ch.url, "changed"))
            elif updates.everything or (reported and (not entries_known or ch.id in reported_chapters)):
                # Reported without saying which chapter, or this one: compare its bytes.
                fetch_chapters.append(ChapterTask(module.cmid, ch.id, ch.url, "reported"))
            else:
                reuse_chapters[ckey] = cold
    return Plan(tuple(fetch), reuse, tuple(fetch_chapters), reuse_chapters,
                tuple(diff(stored.course, fresh, updates)))


def diff(old: Course | None, new: Course, updates: Updates | None = None) -> list[Change]:
    """What changed between two versions of a course, by ids; includes what Moodle's update
    functions do not report (removed or hidden modules, renamed sections, a renamed course)."""
    if old is None:
        return [Change("course_added", new.id, new.fullname)]
    changes: list[Change] = []
    if (old.fullname, old.shortname) != (new.fullname, new.shortname):
        changes.append(Change("course_renamed", new.id, f"{old.fullname} -> {new.fullname}"))
    old_sections = {s.id: s for s in old.sections}
    new_sections = {s.id: s for s in new.sections}
    for sid in new_sections.keys() - old_sections.keys():
        changes.append(Change("section_added", sid, new_sections[sid].name))
    for sid in old_sections.keys() - new_sections.keys():
        changes.append(Change("section_removed", sid, old_sections[sid].name))
    for sid in new_sections.keys() & old_sections.keys():
        a, b = old_sections[sid], new_sections[sid]
        if a.name != b.name:
            changes.append(Change("section_renamed", sid, f"{a.name} -> {b.name}"))
    old_mods = {m.cmid: m for m in old.modules}
    new_mods = {m.cmid: m for m in new.modules}
    for cmid in new_mods.keys() - old_mods.keys():
        changes.append(Change("module_added", cmid, new_mods[cmid].name))
    for cmid in old_mods.keys() - new_mods.keys():
        # Deleted or hidden: Moodle's answer is the same (absent), and so is the mirror's.
        changes.append(Change("module_removed", cmid, old_mods[cmid].name))
    for cmid in sorted(new_mods.keys() & old_mods.keys()):
        a2, b2 = old_mods[cmid], new_mods[cmid]
        changes += _module_changes(a2, b2, updates)
    return sorted(changes, key=lambda c: (c.kind, c.id))


def _module_changes(a: Module, b: Module, updates: Updates | None) -> list[Change]:
    out: list[Change] = []
    if a.section_id != b.section_id:
        out.append(Change("module_moved", b.cmid, f"section {a.section_id} -> {b.section_id}"))
    if a.name != b.name:
        out.append(Change("module_renamed", b.cmid, f"{a.name} -> {b.name}"))
    if a.available and not b.available:
        out.append(Change("module_restricted", b.cmid, b.name))
    elif b.available and not a.available:
        out.append(Change("module_available", b.cmid, b.name))
    elif (a.content, a.description, a.external_url, a.files, a.chapters, a.listed) != (
            b.content, b.description, b.external_url, b.files, b.chapters, b.listed) or (
            updates is not None and not updates.everything and b.cmid in updates.modules):
        out.append(Change("module_changed", b.cmid, b.name))
    return out
