"""The archive origin serving the real archives of ../shared/data/zim and ones built here."""

import html
import re
import shutil
from urllib.parse import quote

import pytest
from libzim.reader import Archive

from appliance import config
from appliance.content import demo, library, schema
from appliance.content.origin import create_archive_app
from appliance.content.store import ContentStore, sha256_file
from appliance.portal.app import create_app
from appliance.store import migrate, open_db
from tests.conftest import SHARED

ZIM = SHARED / "data" / "zim"
RAY = ZIM / "wikipedia_en_ray_charles_mini.zim"


@pytest.fixture
def cfg(tmp_path):
    return config.from_dict({"appliance": {"id": "t", "state_dir": str(tmp_path / "state")},
                             "content": {"root": str(tmp_path / "content")}})


@pytest.fixture
def store(cfg):
    db = open_db(cfg.database_path)
    migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    yield ContentStore(cfg.content.root, db)
    db.conn.close()


def test_every_ray_charles_article_is_reachable_and_links_resolve(cfg, store):
    library.add_zim(store, RAY)
    client = create_archive_app(cfg).test_client()
    archive = Archive(str(RAY))
    checked = 0
    for i in range(archive.all_entry_count):
        entry = archive._get_entry_by_id(i)
        if not entry.path.startswith("A/"):
            continue
        response = client.get("/content/wikipedia_en_ray_charles/" + quote(entry.path, safe="/"))
        assert response.status_code in (200, 302), entry.path
        if response.status_code == 200:
            assert "sandbox allow-scripts" in response.headers["Content-Security-Policy"]
            assert "allow-same-origin" not in response.headers["Content-Security-Policy"]
            page = response.get_data(as_text=True)
            for link in re.findall(r'(?:src|href)="(\.\./[^"#?]+|\./[^"#?]+)"', page):
                base = "/content/wikipedia_en_ray_charles/" + entry.path.rsplit("/", 1)[0] + "/"
                from posixpath import normpath

                target = quote(normpath(base + html.unescape(link)), safe="/")
                assert client.get(target).status_code in (200, 302), (entry.path, link)
            checked += 1
    assert checked > 100


def test_conditional_range_and_replacement(cfg, store, tmp_path):
    library.add_zim(store, RAY)
    client = create_archive_app(cfg).test_client()
    url = "/content/wikipedia_en_ray_charles/A/Ray_Charles"
    first = client.get(url)
    etag = first.headers["ETag"]
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    part = client.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.data == first.data[10:20]
    assert client.get(url, headers={"Range": "bytes=99999999-"}).status_code == 416
    # Another archive under the same name: the old ETag must not answer 304.
    demo_zim = demo.build_demo_zim(tmp_path / "demo.zim")
    library.add_zim(store, demo_zim, name="wikipedia_en_ray_charles")
    replaced = client.get("/content/wikipedia_en_ray_charles/Water_cycle", headers={"If-None-Match": etag})
    assert replaced.status_code == 200


@pytest.mark.parametrize("path", ["A/Ray_Charles", "A/index", "I/m/Ray_Charles_Here_We_Go_Again.jpg",
                                  "-/s/css_modules/style.css", "-/j/js_modules/masonry.min.js"])
def test_the_fast_path_answers_as_the_flask_app_does(cfg, store, path):
    """A plain GET is answered by `FastEntries`; one with a validator goes through Flask (no
    Last-Modified, so `If-Modified-Since` still gets the whole entry): the same answer."""
    library.add_zim(store, RAY)
    client = create_archive_app(cfg).test_client()
    url = "/content/wikipedia_en_ray_charles/" + quote(path, safe="/")
    fast = client.get(url)
    slow = client.get(url, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert fast.status_code == slow.status_code == 200
    assert fast.data == slow.data and len(fast.data) == int(fast.headers["Content-Length"])
    # Date is the WSGI server's to add (gunicorn does); werkzeug's conditional answer adds it too.
    assert sorted(fast.headers.items()) == sorted(h for h in slow.headers.items() if h[0] != "Date")
    assert client.head(url).headers == fast.headers and client.head(url).data == b""
    # Marked bad, or removed, by another process: the very next plain GET is a 404.
    library.mark(store.db, "wikipedia_en_ray_charles", "checksum mismatch")
    assert client.get(url).status_code == 404
    library.mark(store.db, "wikipedia_en_ray_charles", None)
    assert client.get(url).status_code == 200
    library.remove(store, "wikipedia_en_ray_charles")
    assert client.get(url).status_code == 404


def test_root_level_scripts_resolve_with_and_without_a_referer(cfg, store, tmp_path):
    """The Ray Charles main page loads `/-/j/js_modules/masonry.min.js` from the site root; a
    sandboxed page sends no Referer, so the archive that has the path answers."""
    library.add_zim(store, demo.build_demo_zim(tmp_path / "demo.zim"))
    library.add_zim(store, RAY)
    client = create_archive_app(cfg).test_client()
    page = client.get("/content/wikipedia_en_ray_charles/A/index").get_data(as_text=True)
    assert '<script src="/-/j/js_modules/masonry.min.js">' in page
    direct = client.get("/content/wikipedia_en_ray_charles/-/j/js_modules/masonry.min.js")
    assert direct.status_code == 200 and direct.mimetype == "application/javascript"
    for headers in ({}, {"Referer": "http://h:8090/content/wikipedia_en_ray_charles/A/index"}):
        rooted = client.get("/-/j/js_modules/masonry.min.js", headers=headers)
        assert rooted.status_code == 200 and rooted.data == direct.data
    assert client.get("/-/j/js_modules/nothing.js").status_code == 404
    assert client.get("/M/Title").status_code == 404
    assert client.get("/X/fulltext/xapian").status_code == 404


@pytest.mark.parametrize("path", ["M/Title", "X/fulltext/xapian", "..%2F..%2Fetc%2Fpasswd",
                                  "../../etc/passwd",
                                  "A/Nope", "A/%00", "A/%FF%FE", "-/../../x"])
def test_hidden_missing_and_odd_paths_are_404(cfg, store, path):
    library.add_zim(store, RAY)
    client = create_archive_app(cfg).test_client()
    assert client.get("/content/wikipedia_en_ray_charles/" + path).status_code == 404


def test_split_archive_new_layout_odd_paths_and_redirects(cfg, store, tmp_path):
    (tmp_path / "build").mkdir()
    built = demo.build_demo_zim(tmp_path / "build" / "demo.zim")
    data = built.read_bytes()
    split = tmp_path / "split"
    split.mkdir()
    for n, start in enumerate(range(0, len(data), 20_000)):
        suffix = "abcdefghijklmnop"[n // 16] + "abcdefghijklmnop"[n % 16]
        (split / f"demo.zim{suffix}").write_bytes(data[start:start + 20_000])
    item = library.add_zim(store, split / "demo.zimaa")
    assert item.sha256 == sha256_file(built)
    client = create_archive_app(cfg).test_client()
    base = f"/content/{item.name}/"
    assert client.get(base).location.endswith("/index.html")
    assert client.get(base + quote("Fractions & decimals")).status_code == 200
    assert client.get(base + quote("Круговорот_воды")).status_code == 200
    assert client.get(base + "Hydrologic_cycle").location.endswith("/Water_cycle")
    assert client.get(f"/random/{item.name}").status_code == 302


def test_search_and_suggestions_across_archives_and_packs(cfg, store, tmp_path):
    library.add_zim(store, RAY)
    library.add_zim(store, demo.build_demo_zim(tmp_path / "demo.zim"))
    library.add_pack(store, demo.build_demo_pack(tmp_path / "pack"), name="fractions_ru", language="ru")
    client = create_app(cfg).test_client()
    page = client.get("/search?q=soul+music").get_data(as_text=True)
    assert "<mark>" in page and "Ray Charles" in page
    page = client.get("/search?q=дробей").get_data(as_text=True)
    assert "Дроби: первые шаги" in page
    body = client.get("/suggest?q=geor").get_json()
    assert any("Georgia" in s["title"] for s in body["suggestions"])
    # An inflected Russian word is no prefix of the title's form: its stem is.
    body = client.get("/suggest?q=" + quote("вода")).get_json()
    assert [s["title"] for s in body["suggestions"]] == ["Круговорот воды"]
    assert "'unsafe-inline'" not in client.get("/").headers["Content-Security-Policy"]


def test_pack_files_with_range_and_traversal(cfg, store, tmp_path):
    library.add_pack(store, demo.build_demo_pack(tmp_path / "pack"), name="fractions_ru")
    client = create_archive_app(cfg).test_client()
    assert client.get("/pack/fractions_ru/").location.endswith("/pack/fractions_ru/index.html")
    audio = client.get("/pack/fractions_ru/media/tone.wav", headers={"Range": "bytes=0-3"})
    assert audio.status_code == 206 and audio.data == b"RIFF"
    wav = (tmp_path / "pack" / "media" / "tone.wav").read_bytes()
    middle = client.get("/pack/fractions_ru/media/tone.wav", headers={"Range": "bytes=4000-4099"})
    assert middle.status_code == 206 and middle.data == wav[4000:4100]
    assert client.get("/pack/fractions_ru/../../state/appliance.db").status_code == 404
    shutil.rmtree(cfg.content.root / "blobs")
    assert client.get("/pack/fractions_ru/index.html").status_code == 404


@pytest.mark.parametrize("zim_name", ["wikipedia_en_ray_charles_mini.zim", "small.zim", "example.zim"])
def test_uncompressed_entries_are_found_in_the_file_as_libzim_reads_them(zim_name):
    import os

    from appliance.content import zim

    archive = Archive(str(ZIM / zim_name))
    fd = os.open(ZIM / zim_name, os.O_RDONLY)
    try:
        direct = 0
        for i in range(archive.all_entry_count):
            entry = archive._get_entry_by_id(i)
            stored = zim.stored_range(fd, i)
            if entry.is_redirect:
                assert stored is None
            elif stored is not None:
                assert os.pread(fd, stored[1], stored[0]) == bytes(entry.get_item().content), entry.path
                direct += 1
        assert direct >= 5  # images, fonts and the like are stored uncompressed
        assert zim.stored_range(fd, archive.all_entry_count) is None
    finally:
        os.close(fd)


def test_a_large_uncompressed_entry_streams_ranges_from_the_file(cfg, store, tmp_path):
    """A video-sized entry (uncompressed in the archive): Range answers come from the file at
    the entry's place, and the fast path sends the whole entry the same way."""
    import os

    data = os.urandom(3 << 20)
    pages = [demo.Page("index.html", "Video", '<!doctype html><html lang="en"><title>Video</title>'
                       '<video src="film.webm" controls></video></html>'),
             demo.Page("film.webm", "film", data, "video/webm", front=False)]
    library.add_zim(store, demo.build_zim(tmp_path / "film.zim", pages, main="index.html", title="Film",
                                          name="film"))
    item = library.get(store.db, "film")
    fd = os.open(store.path(item.sha256), os.O_RDONLY)
    try:
        from appliance.content import zim

        index = Archive(str(store.path(item.sha256))).get_entry_by_path("film.webm")._index
        assert zim.stored_range(fd, index)[1] == len(data)  # served from the file, not libzim
    finally:
        os.close(fd)
    client = create_archive_app(cfg).test_client()
    whole = client.get("/content/film/film.webm")
    assert whole.status_code == 200 and whole.data == data
    part = client.get("/content/film/film.webm", headers={"Range": "bytes=2000000-2000999"})
    assert part.status_code == 206 and part.data == data[2_000_000:2_001_000]
    assert part.headers["Content-Range"] == f"bytes 2000000-2000999/{len(data)}"
    tail = client.get("/content/film/film.webm", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.data == data[-10:]
