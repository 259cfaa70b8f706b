import hashlib
import json
from pathlib import Path

import pytest

from appliance.content import library
from appliance.content.store import MARKER, ContentStore, RootMissing, StoreError
from appliance.content.usage import UsageCounter, shown, views

from .conftest import ZIM


def test_blobs_are_addressed_by_sha256_and_stored_once(store):
    store.initialise()
    blob = store.put_chunks([b"hello ", b"world"])
    assert blob.sha256 == hashlib.sha256(b"hello world").hexdigest()
    assert blob.path.read_bytes() == b"hello world"
    assert store.put_chunks([b"hello world"]).path == blob.path
    assert list(store.tmp_dir.iterdir()) == []


def test_checksum_mismatch_stores_nothing(store):
    store.initialise()
    with pytest.raises(StoreError, match="checksum"):
        store.put_chunks([b"x"], expect_sha256="00" * 32)
    assert store.db.execute("SELECT count(*) FROM content_blobs").fetchone()[0] == 0


def test_an_unmounted_root_shows_as_missing_and_is_never_filled(store, tmp_path):
    library.add_zim(store, ZIM / "small.zim")
    assert store.present()
    (store.root / MARKER).unlink()  # what an unplugged drive's bare mount point looks like
    assert "has no" in store.problem()
    with pytest.raises(RootMissing):
        store.initialise()
    with pytest.raises(RootMissing):
        store.temp_path()


def test_require_mount_refuses_a_plain_folder(cfg, store):
    strict = ContentStore(cfg.content.root, store.db, require_mount=True)
    cfg.content.root.mkdir(parents=True)
    with pytest.raises(RootMissing, match="mount point"):
        strict.initialise()


@pytest.mark.parametrize("name", ["bad_mimetype_list.zim", "outofbounds_urlptrpos.zim",
                                  "smaller_than_header.zim"])
def test_invalid_archives_are_refused_with_a_message(store, name):
    with pytest.raises(library.LibraryError, match="refused"):
        library.add_zim(store, ZIM / "invalid" / name)
    assert library.items(store.db) == []
    assert store.db.execute("SELECT count(*) FROM content_blobs").fetchone()[0] == 0


def test_truncated_archive_is_refused(store, tmp_path):
    data = (ZIM / "wikipedia_en_ray_charles_mini.zim").read_bytes()
    cut = tmp_path / "cut.zim"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(library.LibraryError, match="refused"):
        library.add_zim(store, cut)


def test_verify_takes_a_changed_archive_out(store):
    item = library.add_zim(store, ZIM / "small.zim")
    assert library.verify(store, item.name) is None
    path = store.path(item.sha256)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "checksum" in library.verify(store, item.name)
    assert library.get(store.db, item.name).state == "bad"


def test_the_background_check_verifies_one_item_per_run_in_turn(store, cfg, tmp_path: Path, runner):
    from appliance.cli import cli as main
    from appliance.content import demo

    assert library.verify_next(store) is None  # an empty library: nothing to check
    small = library.add_zim(store, ZIM / "small.zim")
    library.add_pack(store, demo.build_demo_pack(tmp_path / "pack"), name="a_pack")
    ray = library.add_zim(store, ZIM / "wikipedia_en_ray_charles_mini.zim")
    order = sorted([small.name, "a_pack", ray.name])
    assert [library.verify_next(store) for _ in range(4)] == [(n, None) for n in [*order, order[0]]]
    # The archive turns bad on disk: its turn takes it out; put right, its next turn brings it back.
    path = store.path(small.sha256)
    good = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(good[:-100] + bytes(b ^ 0xFF for b in good[-100:]))
    while (checked := library.verify_next(store))[0] != small.name:
        pass
    assert "checksum" in checked[1] and library.get(store.db, small.name).state == "bad"
    path.write_bytes(good)
    while (checked := library.verify_next(store))[0] != small.name:
        pass
    assert checked == (small.name, None) and library.get(store.db, small.name).state == "ok"
    # `content sync` runs the check after the queue (nothing queued here) and says what it checked.
    from appliance.harness.process import write_config

    config_path = write_config(tmp_path / "appliance.toml", content={"root": str(cfg.content.root)},
                               appliance={"id": "t", "state_dir": str(cfg.appliance.state_dir)})
    result = runner.invoke(main, ["--config", str(config_path), "content", "sync", "--json"])
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.output[result.output.index("{"):])
    assert outcome["verified"] == {"name": order[(order.index(small.name) + 1) % 3], "problem": None}
    assert outcome["done"] == outcome["failed"] == 0
    result = runner.invoke(main, ["--config", str(config_path), "content", "sync", "--no-verify", "--json"])
    assert result.exit_code == 0 and "verified" not in result.output


def test_pack_from_a_plain_folder_and_remove(store, tmp_path: Path):
    folder = tmp_path / "Fractions pack"
    (folder / "media").mkdir(parents=True)
    (folder / "index.html").write_text("<title>Дроби</title><p>половина</p>")
    (folder / "media" / "a b.pdf").write_bytes(b"%PDF-1.4")
    item = library.add_pack(store, folder)
    assert item.kind == "pack" and item.index_page == "index.html"
    assert [p for p, *_ in library.pack_files(store.db, item.name)] == ["index.html", "media/a b.pdf"]
    assert library.remove(store, item.name)
    assert store.db.execute("SELECT count(*) FROM content_blobs").fetchone()[0] == 0


def test_usage_is_batched_per_item_and_day_and_small_counts_hidden(store):
    now = [1_700_000_000.0]
    counter = UsageCounter(lambda: store.db, flush_seconds=60, clock=lambda: now[0])
    for _ in range(3):
        counter.count("wiki")
    assert store.db.execute("SELECT count(*) FROM content_usage").fetchone()[0] == 0
    now[0] += 61
    counter.count("wiki")
    assert views(store.db, now=now[0]) == {"wiki": 4}
    assert shown(4) == "< 5" and shown(5) == "5"


def test_an_owner_releases_only_what_it_held_and_collection_keeps_what_is_held(store):
    store.initialise()
    mine = store.put_chunks([b"moodle picture"]).sha256
    shared = store.put_chunks([b"shared worksheet"]).sha256
    stray = store.put_chunks([b"nobody's"]).sha256
    store.hold("moodle", mine)
    store.hold("moodle", shared)
    store.hold("other", shared)
    assert store.held("moodle") == {mine, shared}
    # The owner lets go of everything: its own blob goes, the one another owner holds stays,
    # and a blob it never held is not touched even though nothing refers to it.
    assert store.release("moodle", keep=set()) == 1
    assert not store.path(mine).exists() and not store.has(mine)
    assert store.path(shared).is_file() and store.path(stray).is_file()
    assert store.held("moodle") == set()
    # The library's collection: the held blob survives, the unreferenced one goes.
    assert store.collect_garbage() == 1
    assert store.path(shared).is_file() and not store.path(stray).exists()
    assert store.release("other", keep={shared}) == 0 and store.path(shared).is_file()
