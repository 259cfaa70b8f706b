"""Moodle's HTML, as recorded (not sanitized by Moodle), leaves the sanitizer harmless and offline."""

from __future__ import annotations

import pytest

from appliance.moodle.sanitize import LinkMap, plain_text, sanitize

from .recordings import DATA, SITE, answers

FILES = {
    (20, "/cell.png"): "/moodle/course/2/m/3/file/cell.png",
    (24, "/2/chloroplast.png"): "/moodle/course/2/m/7/file/2/chloroplast.png",
}
LINKS = LinkMap(SITE, FILES, {12: "/moodle/course/2/m/12"}, (20, "/"))


def risky() -> list[str]:
    a = answers("state1")
    page = next(p for p in a["mod_page_get_pages_by_courses"]["pages"] if p["coursemodule"] == 3)
    label = next(x for x in a["mod_label_get_labels_by_courses"]["labels"] if x["coursemodule"] == 24)
    generated = (DATA / "state1/blobs").glob("*")
    index = next(p.read_text() for p in generated if b"teacher pasted script" in p.read_bytes())
    return [page["content"], label["intro"], index]


@pytest.mark.parametrize("raw", risky(), ids=["page", "label", "index.html"])
def test_scripts_handlers_iframes_and_javascript_links_are_gone(raw):
    assert "<script" in raw and "onclick" in raw and "javascript:" in raw  # as Moodle sent it
    clean = sanitize(raw, LINKS)
    for bad in (
        "<script",
        "onclick",
        "javascript:",
        "<iframe",
        "style=",
        "pluginfile.php",
        "moodle.example",
        "document.cookie",
        "alert(",
    ):
        assert bad not in clean
    assert "youtube.com/embed" in clean  # the iframe became a plain link


def test_moodle_files_become_mirror_urls_in_json_html_and_in_generated_pages():
    page = risky()[0]
    clean = sanitize(page, LINKS)
    assert '<img src="/moodle/course/2/m/3/file/cell.png"' in clean
    generated = sanitize('<p><img src="cell.png" alt="c"></p>', LINKS)
    assert 'src="/moodle/course/2/m/3/file/cell.png"' in generated
    chapter = LinkMap(SITE, FILES, {}, (24, "/2/"))
    assert 'src="/moodle/course/2/m/7/file/2/chloroplast.png"' in sanitize(
        '<img src="chloroplast.png">', chapter
    )


def test_external_images_become_links_and_unknown_moodle_urls_lose_their_link():
    clean = sanitize(
        '<img src="https://cdn.example/x.png" alt="X"> <a href="http://moodle.example/mod/forum/view.php?id=2">f</a>'
        ' <a href="http://moodle.example/mod/page/view.php?id=12">p</a>'
        ' <img src="http://moodle.example/webservice/pluginfile.php/99/mod_page/content/0/n.png" alt="gone">',
        LINKS,
    )
    assert '<a href="https://cdn.example/x.png" rel="noopener noreferrer">X</a>' in clean
    assert "<img" not in clean and "moodle.example" not in clean
    assert '<a rel="noopener noreferrer">f</a>' in clean  # kept as text: not mirrored
    assert 'href="/moodle/course/2/m/12"' in clean  # a stealth page, reachable by link
    assert "gone" in clean


def test_nested_dropped_elements_and_entities_stay_text():
    # As in a browser, a script's text ends at the first </script>: "y" is text again.
    clean = sanitize("<p>a &lt;b&gt; <script><script>x</script>y</script> z</p><style>p{}</style>", LINKS)
    assert clean == "<p>a &lt;b&gt; y z</p>"
    assert plain_text("<p>Tom &amp; Jerry <b>x</b></p>") == "Tom & Jerry x"
