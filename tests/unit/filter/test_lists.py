"""List parsing (hosts, plain, adblock, UT1), the compiled matcher and its atomic swap."""

import os

import pytest

from appliance.filter import lists
from appliance.filter.lists import ListError, Lists, Matcher, Source
from tests.unit.filter.conftest import UT1


def test_parse_every_format_and_count_bad_lines():
    text = """# comment
! adblock comment
[Adblock Plus 2.0]
0.0.0.0 ads.example tracker.example # two names
127.0.0.1 localhost
||Adblock.Example^
||with-path.example/ads^
@@||allowed.example^
plain.example.
*.wild.example
münchen.example
not a domain
ex ample!.com
"""
    domains, bad, examples = lists.parse_lines(text.splitlines())
    assert domains == ["ads.example", "tracker.example", "adblock.example", "plain.example",
                       "wild.example", "xn--mnchen-3ya.example"]
    assert bad == 4 and "not a domain" in examples


def compile_(tmp_path, **cats):
    out = tmp_path / "lists.bin"
    lists.compile_lists([(Source(c, f"<{c}>"), v) for c, v in cats.items()], out)
    return Matcher.open(out)


def test_suffix_match_and_one_mask_per_domain(tmp_path):
    m = compile_(tmp_path, adult=["bad.example", "both.example"], gambling=["bet.example", "both.example"])
    assert m.names(m.mask("bad.example")) == ["adult"]
    assert m.names(m.mask("deep.sub.bad.example")) == ["adult"]
    assert m.names(m.mask("both.example")) == ["adult", "gambling"]
    assert m.mask("notbad.example") == 0
    assert m.mask("example") == 0
    assert m.matches("x.bet.example") == [("bet.example", ["gambling"])]
    assert m.header["entries"] == 3


def test_ut1_folders_compile(tmp_path):
    sources = lists.ut1_sources(UT1, ["gambling", "social_networks", "mixed_adult"])
    assert [s.category for s in sources] == ["gambling", "mixed_adult", "social_networks"]
    header = lists.update(sources, tmp_path / "ut1.bin")
    m = Matcher.open(tmp_path / "ut1.bin")
    assert header["entries"] > 30000
    first_social = next(line.strip() for line in (UT1 / "social_networks" / "domains").open()
                        if lists.normalize(line))
    assert "social_networks" in m.names(m.mask("www." + first_social))


def test_a_broken_list_never_replaces_the_working_one(tmp_path):
    out = tmp_path / "lists.bin"
    good = tmp_path / "good.txt"
    good.write_text("bad.example\n")
    lists.update([Source("adult", str(good))], out)
    before = out.read_bytes()
    html = tmp_path / "error.html"
    html.write_text("<html>\n<body>502 Bad Gateway</body>\n</html>\n")
    with pytest.raises(ListError, match=r"error\.html"):
        lists.update([Source("adult", str(good)), Source("adult", str(html))], out)
    with pytest.raises(ListError, match="cannot read"):
        lists.update([Source("adult", str(tmp_path / "missing.txt"))], out)
    with pytest.raises(ListError, match="cannot read"):
        lists.update([Source("adult", "http://127.0.0.1:9/none")], out)
    assert out.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_readers_swap_to_a_new_file_and_keep_the_old_on_a_corrupt_one(tmp_path):
    out = tmp_path / "lists.bin"
    lists.compile_lists([(Source("adult", "a"), ["one.example"])], out)
    working = Lists(out)
    old = working.current()
    assert old.mask("one.example")
    lists.compile_lists([(Source("adult", "a"), ["two.example"])], out)
    new = working.current(now=1e12)
    assert new.mask("two.example") and not new.mask("one.example")
    assert old.mask("one.example")  # a reader holding the old mapping still works
    corrupt = tmp_path / "c.bin"
    corrupt.write_bytes(b"CEFILT01garbage")
    os.replace(corrupt, out)
    assert working.current(now=2e12) is new


def test_empty_matcher_and_non_files(tmp_path):
    assert Matcher.empty().mask("a.example") == 0
    (tmp_path / "x").write_bytes(b"nope")
    with pytest.raises(ListError):
        Matcher.open(tmp_path / "x")
    assert Lists(tmp_path / "absent").current().mask("x") == 0
