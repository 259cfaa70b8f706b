"""The planner, on the recorded states: what a resync fetches, keeps and notices."""

from __future__ import annotations

from appliance.moodle.planner import Stored, StoredChapter, StoredFile, Updates, diff, plan

from .recordings import answers, course


def mirrored(state: str, cid: int) -> Stored:
    """The mirror after syncing `state`: every file and chapter stored (fake hashes)."""
    c = course(state, cid)
    files = {
        (m.cmid, f.path): StoredFile(f.size, f.timemodified, f"sha1-{m.cmid}{f.path}", "0" * 64)
        for m in c.modules
        for f in m.files
    }
    chapters = {
        (m.cmid, ch.id): StoredChapter(ch.timemodified, "1" * 64) for m in c.modules for ch in m.chapters
    }
    return Stored(c, files, chapters)


def test_state1_lists_only_what_the_sync_account_may_see():
    c = course("state1", 2)
    cmids = {m.cmid for m in c.modules}
    assert 10 not in cmids and 14 not in cmids  # hidden module, module of a hidden section
    assert [s.number for s in c.sections] == [0, 1, 2, 3]
    restricted = c.module(11)
    assert restricted is not None and not restricted.available
    assert restricted.files == () and restricted.content == "" and "Available from" in restricted.availability
    stealth = c.module(12)
    assert stealth is not None and stealth.available and not stealth.listed and stealth.content
    book = c.module(7)
    assert book is not None and [ch.id for ch in book.chapters] == [1, 2, 3]
    assert [f.path for f in book.files] == ["/2/chloroplast.png"]
    folder = c.module(8)
    assert folder is not None and "/Лабораторная 1/microscope.png" in [f.path for f in folder.files]


def test_a_first_sync_fetches_every_file_and_chapter():
    p = plan(Stored(), course("state1", 2), Updates(everything=True))
    assert len(p.fetch) == 7 and len(p.fetch_chapters) == 3 and not p.reuse
    assert all(t.etag is None for t in p.fetch)


def test_state2_fetches_only_what_changed_and_finds_what_updates_do_not_report():
    stored = mirrored("state1", 2)
    updates = Updates.from_answer(answers("state2")["core_course_check_updates:2:since_state1_capture"])
    p = plan(stored, course("state2", 2), updates)
    new = {(t.cmid, t.path) for t in p.fetch if t.etag is None}
    conditional = {(t.cmid, t.path) for t in p.fetch if t.etag is not None}
    assert new == {(4, "/worksheet_cell_v2.pdf"), (25, "/genetics.png")}
    # Reported modules: their unchanged files are asked about with If-None-Match (304 expected).
    assert conditional == {(3, "/cell.png"), (7, "/2/chloroplast.png")}
    assert {(t.cmid, t.chapter_id) for t in p.fetch_chapters} == {(7, 4)}
    assert (8, "/data.csv") in p.reuse and (7, 1) in p.reuse_chapters
    kinds = {(c.kind, c.id) for c in p.changes}
    assert ("module_removed", 5) in kinds  # deleted: not reported by Moodle
    assert ("module_removed", 6) in kinds  # hidden: not reported by Moodle
    assert ("section_added", 13) in kinds and ("module_added", 25) in kinds
    assert (5, "/photosynthesis.png") in p.dropped_files(stored)


def test_a_renamed_section_is_found_although_no_update_is_reported():
    updates = Updates.from_answer(answers("state2")["core_course_check_updates:3:since_state1_capture"])
    assert updates.modules == {}
    p = plan(mirrored("state1", 3), course("state2", 3), updates)
    assert not p.fetch and not p.fetch_chapters
    assert [(c.kind, c.detail) for c in p.changes] == [
        ("section_renamed", "Древний Рим -> Древний Рим и Карфаген")
    ]


def test_nothing_changed_means_no_request_at_all():
    stored = mirrored("state2", 2)
    updates = Updates.from_answer({"instances": [], "warnings": []})
    p = plan(stored, course("state2", 2), updates)
    assert p.unchanged and len(p.reuse) == len(stored.files)


def test_a_changed_file_time_is_fetched_even_when_not_reported():
    stored = mirrored("state1", 2)
    old = stored.files[(8, "/data.csv")]
    files = {
        **stored.files,
        (8, "/data.csv"): StoredFile(old.size + 1, old.timemodified, old.sha1, old.sha256),
    }
    p = plan(Stored(stored.course, files, stored.chapters), course("state1", 2), Updates())
    assert [(t.cmid, t.path, t.reason) for t in p.fetch] == [(8, "/data.csv", "changed")]


def test_diff_reports_a_course_rename():
    a = course("state1", 3)
    b = a.__class__(**{**a.__dict__, "fullname": "История 5 (новая)"})
    assert [c.kind for c in diff(a, b)] == ["course_renamed"]
