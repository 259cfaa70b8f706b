"""The search page's hot path (`search_page.FastSearch`) answers with the Flask view's bytes.

Every request is made twice, once through the portal app's WSGI entry (the hot path first) and
once to the Flask app behind it; status, headers and body must be the same, and the hot path
must have taken the requests it is for and handed the others on.
"""

import re
import shutil
import time
from urllib.parse import quote

import pytest
from libzim.reader import Archive
from werkzeug.test import EnvironBuilder, run_wsgi_app

from appliance import config
from appliance.content import demo, library, schema, search
from appliance.content.search_page import FastSearch
from appliance.content.snapshot import LibrarySnapshot
from appliance.content.store import ContentStore
from appliance.portal.app import create_app
from appliance.store import migrate, open_db
from tests.conftest import SHARED

RAY = SHARED / "data" / "zim" / "wikipedia_en_ray_charles_mini.zim"
ODD = ["", "   soul    music  ", "Soul Music", "дробей", "воды", "ёлка", "<script>alert(1)</script>",
       "x" * 400, "%", "'\"&<>", "AND OR NOT", "\"soul\"*", "NEAR(soul music)", "1960", "ray-charles"]
ACCEPT = [None, "ru-RU,ru;q=0.9,en;q=0.5", "udm", "en-US,en;q=0.9", "de-DE", "*"]


@pytest.fixture
def cfg(tmp_path):
    return config.from_dict({"appliance": {"id": "t", "name": "School 7",
                                           "state_dir": str(tmp_path / "state")},
                             "content": {"root": str(tmp_path / "content")},
                             # The block page on: a request for another host is the filter's.
                             "filter": {"block_page": ["10.0.0.1"]}})


@pytest.fixture
def portal(cfg, tmp_path):
    db = open_db(cfg.database_path)
    migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    store = ContentStore(cfg.content.root, db)
    library.add_zim(store, RAY)
    library.add_zim(store, demo.build_demo_zim(tmp_path / "demo.zim"))
    library.add_pack(store, demo.build_demo_pack(tmp_path / "pack"), name="fractions_ru", language="ru")
    app = create_app(cfg)
    fast = app.wsgi_app
    assert isinstance(fast, FastSearch)
    handed = []
    behind = fast.next

    def counted(environ, start_response):
        handed.append(environ["PATH_INFO"] + "?" + environ.get("QUERY_STRING", ""))
        return behind(environ, start_response)

    fast.next = counted
    yield app, fast, behind, handed, store
    db.conn.close()


def _words(limit: int) -> list[str]:
    archive = Archive(str(RAY))
    seen: dict[str, None] = {}
    for i in range(archive.all_entry_count):
        entry = archive._get_entry_by_id(i)
        if entry.is_redirect or not entry.path.startswith("A/"):
            continue
        item = entry.get_item()
        if item.mimetype.startswith("text/html"):
            for word in re.findall(r"\w{3,}", library.html_text(bytes(item.content))[1].lower()):
                seen.setdefault(word, None)
        if len(seen) >= limit:
            break
    return list(seen)[:limit]


def _answer(wsgi, path, *, method="GET", query="", accept=None, cookie=None, host="10.0.0.1"):
    headers = {"Host": host}
    if accept is not None:
        headers["Accept-Language"] = accept
    if cookie is not None:
        headers["Cookie"] = cookie
    environ = EnvironBuilder(path=path, method=method, query_string=query, headers=headers).get_environ()
    body, status, got = run_wsgi_app(wsgi, environ, buffered=True)
    return status, sorted(got.items()), b"".join(body)


def test_hot_path_answers_every_search_as_the_view_does(portal):
    _app, fast, behind, handed, _store = portal
    queries = ["q=" + quote(w) for w in _words(150) + ODD]
    queries += ["", "q=soul&page=2", "q=soul&q=music", "q=%ff%fe", "q=soul+music&x=%00", "q"]
    with_results = 0
    for n, query in enumerate(queries):
        accept = ACCEPT[n % len(ACCEPT)]
        cookie = "lang=ru" if n % 7 == 3 else ("lang=xx" if n % 11 == 5 else None)
        ours = _answer(fast, "/search", query=query, accept=accept, cookie=cookie)
        view = _answer(behind, "/search", query=query, accept=accept, cookie=cookie)
        assert ours == view, (query, accept, cookie)
        assert ours[0] == "200 OK"
        with_results += b'class="snippet"' in ours[2]
    assert handed == [], "the hot path handed searches on to the app"
    # The pages were real ones: results with marked snippets, in each language.
    body = _answer(fast, "/search", query="q=soul+music")[2]
    assert b"<mark>" in body and b"Ray Charles" in body
    assert "Поиск".encode() in _answer(fast, "/search", query="q=soul", accept="ru")[2]
    # Most comparisons were of result pages with snippets, not of empty ones.
    assert with_results > 100, with_results


def test_requests_for_the_app_are_handed_to_it(portal, cfg):
    _app, fast, behind, handed, store = portal
    cases = [
        dict(query="q=soul&lang=ru"),  # the switch: sets the cookie
        dict(method="HEAD", query="q=soul"),
        dict(method="POST", query="q=soul"),
        dict(query="q=soul", host="casino.example"),  # not the portal's host: the block page's
    ]
    for case in cases:
        before = len(handed)
        assert _answer(fast, "/search", **case) == _answer(behind, "/search", **case), case
        assert len(handed) == before + 1, case
    _status, headers, _body = _answer(fast, "/search", query="q=soul&lang=ru")
    assert any(k == "Set-Cookie" and v.startswith("lang=ru") for k, v in headers)
    assert _answer(fast, "/", query="q=soul")[0] == "200 OK" and handed[-1] == "/?q=soul"

    # A mirrored Moodle page among the hits: the pupil's session decides; the view answers.
    search.index_document(store.db, "moodle", "course-2", "/moodle/course/2/", "Biology",
                          "Chloroplasts make sugar from light")
    before = len(handed)
    moodle_hit = "q=chloroplasts"
    assert _answer(fast, "/search", query=moodle_hit) == _answer(behind, "/search", query=moodle_hit)
    assert len(handed) == before + 1

    # The drive is gone: once the hot path looks again (at most a second later), the view says
    # so; its return is seen at once.
    shutil.move(cfg.content.root, str(cfg.content.root) + ".away")
    time.sleep(LibrarySnapshot.PRESENCE_SECONDS + 0.1)
    before = len(handed)
    body = _answer(fast, "/search", query="q=soul")[2]
    assert len(handed) == before + 1 and b'class="missing"' in body
    shutil.move(str(cfg.content.root) + ".away", cfg.content.root)
    before = len(handed)
    assert b"<mark>" in _answer(fast, "/search", query="q=soul")[2] and len(handed) == before


def test_a_new_archive_is_searched_at_once(portal, tmp_path, cfg):
    """Another connection's add moves the database's data_version: the next search lists it."""
    _app, fast, behind, handed, _store = portal
    assert b"Photosynthesis" not in _answer(fast, "/search", query="q=photosynthesis")[2]
    db = open_db(cfg.database_path)
    try:
        pages = [demo.Page("index.html", "Photosynthesis",
                           '<!doctype html><html lang="en"><title>Photosynthesis</title>'
                           "<p>Photosynthesis turns light into sugar.</p></html>")]
        library.add_zim(ContentStore(cfg.content.root, db),
                        demo.build_zim(tmp_path / "bio.zim", pages, main="index.html", title="Biology",
                                       name="biology"))
    finally:
        db.conn.close()
    ours = _answer(fast, "/search", query="q=photosynthesis")
    assert b"Photosynthesis" in ours[2] and ours == _answer(behind, "/search", query="q=photosynthesis")
    assert handed == []
