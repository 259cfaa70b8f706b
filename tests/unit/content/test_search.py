from appliance.content import search
from appliance.content.search import Hit


def test_russian_and_english_words_meet_their_stems():
    assert search.stem("библиотеки") == search.stem("библиотека")
    assert search.stem("running") == search.stem("runs")
    assert search.stem("Ёлки") == search.stem("елки")


def test_query_cannot_inject_fts_syntax():
    assert search.fts_query('water" OR body:*') == '"water" "or" "bodi"'
    assert search.fts_query("   ") is None


def test_merge_ranks_hits_found_by_several_sources_first():
    a = [Hit("zim", "w", "A/x", "X"), Hit("zim", "w", "A/y", "Y")]
    b = [Hit("pack", "p", "i.html", "P", "snip"), Hit("zim", "w", "A/y", "Y", "why")]
    merged = search.merge([a, b])
    assert merged[0].path == "A/y"
    assert merged[0].snippet == "why"
    assert {h.path for h in merged} == {"A/x", "A/y", "i.html"}


def test_snippet_and_highlight():
    text = "Intro. " * 40 + "The water cycle moves water."
    cut = search.snippet(text, "waters")
    assert "water cycle" in cut and cut.startswith("…")
    assert ("water", True) in search.highlight("The water cycle", "waters")
    # Russian: the stem is a prefix of the form in the text, any case.
    cut = search.snippet("Начало. " * 40 + "Вода движется между океанами.", "воды")
    assert cut.startswith("…") and "Вода движется" in cut
    # "happy" stems to "happi", no prefix of it: found by stemming every word instead.
    assert search.stem("happy") == search.stem("happiness") == "happi"
    cut = search.snippet("Intro. " * 40 + "A happy ending.", "happiness")
    assert "happy ending" in cut and cut.startswith("…")
    # Nothing matches: the start of the text.
    assert search.snippet("Intro. " * 40, "zebra").startswith("Intro. Intro.")


def test_fts_index_finds_russian_forms(store):
    search.index_document(store.db, "pack", "p", "a.html", "Круговорот воды", "испарение и осадки")
    search.index_document(store.db, "pack", "p", "b.html", "Fractions", "one half")
    assert [h.path for h in search.search(store.db, "круговорота")] == ["a.html"]
    assert [h.path for h in search.search(store.db, "осадков")] == ["a.html"]
    assert [h.title for h in search.suggest(store.db, "frac")] == ["Fractions"]
    search.remove_documents(store.db, "pack", "p")
    assert search.search(store.db, "fractions") == []


def test_article_texts_are_cached_per_archive_and_bounded():
    from appliance.content.zim import ArchiveCache

    cache = ArchiveCache(text_chars=10)
    calls = []

    def extract(text):
        def run():
            calls.append(text)
            return text, text.upper()
        return run

    def text(sha, path, extract):
        found, folded = cache.text(sha, path, extract)
        assert folded == found.upper()  # what extract returned with it
        return found

    assert text("a" * 64, "A/x", extract("12345")) == "12345"
    assert text("a" * 64, "A/x", extract("other")) == "12345"  # cached: not parsed again
    assert text("b" * 64, "A/x", extract("abcde")) == "abcde"  # another archive, same path
    assert text("c" * 64, "A/y", extract("zz")) == "zz"  # 12 characters: the oldest goes
    assert text("a" * 64, "A/x", extract("again")) == "again"
    assert text("d" * 64, "A/z", extract("x" * 11)) == "x" * 11  # too big to keep (the text's size)
    assert text("d" * 64, "A/z", extract("y")) == "y"
    assert calls == ["12345", "abcde", "zz", "again", "x" * 11, "y"]


def test_highlight_html_is_the_markup_a_template_writes_for_highlight():
    """The search page's snippets: every piece escaped as Jinja escapes it (markupsafe's
    entities), the matching words in <mark>, the same bytes as a loop over `highlight`."""
    from jinja2 import Environment

    loop = Environment(autoescape=True).from_string(
        "{% for piece, match in pieces %}{% if match %}<mark>{{ piece }}</mark>"
        "{% else %}{{ piece }}{% endif %}{% endfor %}")
    cases = [("a <b> & \"q\" 's' waters; Water&waters <i>", "water"),
             ("Вода & <воды> движется", "вода"), ("no match <here>", "zebra"), ("", "water"),
             ("happy &amp; happily", "happiness")]
    for text, query in cases:
        assert str(search.highlight_html(text, query)) == loop.render(pieces=search.highlight(text, query))
    assert str(search.highlight_html("x <y> water", "waters")) == "x &lt;y&gt; <mark>water</mark>"
    # Spaced text is cut the same whether the snippet spaces it or was told it is spaced.
    text = "Intro.\n\n  " * 40 + "The   water\tcycle."
    assert search.snippet(search.spaced(text), "water", is_spaced=True) == search.snippet(text, "water")
    # The archive search cuts snippets from html_text's text as it is (is_spaced=True).
    from appliance.content.library import html_text

    page = b"<html><title> A\n title </title><p>One\n\n  two</p>\t<p>three <b>four</b></p></html>"
    title, body = html_text(page)
    assert body == search.spaced(body) and "two" in body and title == search.spaced(title)


def test_snippets_found_in_folded_text_are_the_ones_found_without():
    """A cached article's snippet is found in its folded copy (`fold`): the same cut as the
    case-blind word pattern makes, for words found, words absent, Russian yo and odd letters."""
    text = search.spaced(
        "Intro. " * 30 + "Ray Charles recorded soul music; Water, WATERS and watering. "
        "Ёлка и ёжик. Ещё одна Ёлочка. happy endings. x-ray co-operation _under_score 1960s. "
        "Straße İstanbul ǅemal. " + "Outro. " * 30)
    folded = search.fold(text)
    assert folded is None  # the dotted I lower-cases to two characters
    plain = text.replace("İ", "I")
    folded = search.fold(plain)
    assert folded is not None and len(folded) == len(plain)
    queries = ["water", "Waters", "ёлки", "елка", "ёжика", "ещё", "happiness", "ray", "operation", "under",
               "1960", "strasse", "straße", "zebra", "soul music", "charles recorded", "", "the"]
    for query in queries:
        assert search.snippet(plain, query, is_spaced=True, folded=folded) == \
            search.snippet(plain, query, is_spaced=True), query
    # The yo of the text matches a query spelled with ye, and the other way round.
    assert "Ёлка" in search.snippet(plain, "елки", is_spaced=True, folded=folded)
    assert search.fold("Ёлка") == "елка"
