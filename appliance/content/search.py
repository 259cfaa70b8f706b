"""One search across all content: SQLite FTS5 over our own stems, merged with libzim's indexes.

FTS5 has no Russian stemmer, so we stem ourselves with Snowball, word by word by script
(Cyrillic words with the Russian stemmer, Latin ones with the English one), at index and at
query time, and FTS5 (`unicode61`) only matches stems. The original text is kept beside the index
(`content_docs`) for titles and snippets.

Other capabilities put their pages in the same index under their own `source` (the Moodle
mirror: `moodle`), with `path` the portal path of the page (starting with `/`); their first
document of an item is the item's own page and names the item in results (`item_titles`).

Results from several sources (our index, the Moodle mirror's pages among them; each archive's
own full-text and title indexes) are merged by reciprocal rank fusion: each list keeps its own ranking and a
hit's score is the sum of 1 / (K + rank) over the lists it is in, which needs no comparable
scores between sources.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import snowballstemmer
import sqlite_utils
from markupsafe import Markup, escape

from appliance.store import transaction

WORD = re.compile(r"\w+", re.UNICODE)
CYRILLIC = re.compile(r"[\u0400-\u04ff]")
RRF_K = 60
MAX_QUERY_WORDS = 12
MAX_BODY = 200_000


_local = threading.local()


def _stemmer(language: str) -> snowballstemmer.stemmer:
    """This thread's stemmer: a Snowball stemmer keeps the word being stemmed in the object,
    so two threads of a portal worker must never share one."""
    stemmers: dict[str, snowballstemmer.stemmer] | None = getattr(_local, "stemmers", None)
    if stemmers is None:
        stemmers = _local.stemmers = {}
    if language not in stemmers:
        stemmers[language] = snowballstemmer.stemmer(language)
    return stemmers[language]


def words(text: str) -> list[str]:
    return [w for w in WORD.findall(text.lower()) if not w.isdigit() or len(w) < 12]


@functools.lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """The Snowball stem of one word (memoized: snippets and highlighting stem the same words
    again and again, and Snowball in pure Python costs about 0.1 ms a word)."""
    word = word.lower().replace("ё", "е")  # noqa: RUF001 - Russian yo spelled as ye
    if CYRILLIC.search(word):
        return str(_stemmer("russian").stemWord(word))
    if word.isascii() and word.isalpha():
        return str(_stemmer("english").stemWord(word))
    return word


def stems(text: str) -> str:
    return " ".join(stem(w) for w in words(text))


def fts_query(query: str, *, prefix: bool = False) -> str | None:
    """An FTS5 MATCH expression for what a student typed: every word's stem must match; each is
    quoted, so no FTS5 syntax (AND, NEAR, quotes, *) can come from the box. With `prefix` the last
    word matches as a prefix (suggestions as you type). None when nothing searchable is left."""
    terms = words(query)[:MAX_QUERY_WORDS]
    if not terms:
        return None
    parts = [f'"{stem(t)}"' for t in terms]
    if prefix:
        # The stem is a prefix of every form of the word, and of what was typed so far.
        parts[-1] = f'"{stem(terms[-1])}"*'
    return " ".join(parts)


@dataclass(frozen=True)
class Hit:
    """One result: `source` (`zim`, `pack`, `moodle`), the item, the path inside it."""

    source: str
    item: str
    path: str
    title: str
    snippet: str = ""


def merge(lists: Sequence[Sequence[Hit]], limit: int = 20) -> list[Hit]:
    """Reciprocal rank fusion of ranked lists; a hit in several lists keeps its first title and
    the first non-empty snippet. Ties keep the order of the lists, then of ranks."""
    scores: dict[tuple[str, str], float] = {}
    best: dict[tuple[str, str], Hit] = {}
    order: dict[tuple[str, str], tuple[int, int]] = {}
    for li, hits in enumerate(lists):
        for rank, hit in enumerate(hits):
            key = (hit.item, hit.path)
            scores[key] = scores.get(key, 0.0) + 1.0 / (RRF_K + rank + 1)
            if key not in best:
                best[key], order[key] = hit, (rank, li)
            elif not best[key].snippet and hit.snippet:
                best[key] = Hit(best[key].source, hit.item, hit.path, best[key].title, hit.snippet)
    ranked = sorted(scores, key=lambda k: (-scores[k], order[k]))
    return [best[k] for k in ranked[:limit]]


@functools.lru_cache(maxsize=1024)
def _candidates(wanted: frozenset[str]) -> re.Pattern[str]:
    """Words that begin with one of the stems (Snowball stems are, nearly always, a prefix of
    the word: only those words need stemming to be checked)."""
    # `stem` spells a Russian yo as ye: either letter may stand in the text.
    alternatives = "|".join(re.escape(w).replace("е", "[её]")  # noqa: RUF001 - ye, not e
                            for w in sorted(wanted, key=len, reverse=True))
    return re.compile(rf"\b(?:{alternatives})\w*", re.IGNORECASE)


def _matching(text: str, wanted: frozenset[str]) -> list[re.Match[str]]:
    """The words of `text` whose stem is one of `wanted`: among the words that begin with a
    stem, or, when none of those does, among all words (a stem that is not a prefix)."""
    if not wanted:
        return []
    found = [m for m in _candidates(wanted).finditer(text) if stem(m.group()) in wanted]
    return found or [m for m in WORD.finditer(text) if stem(m.group()) in wanted]


def spaced(text: str) -> str:
    """`text` with every run of white space one space, none at the ends (what `snippet` cuts)."""
    return " ".join(text.split())


def fold(text: str) -> str | None:
    """`text` lower-cased, with Russian yo as ye (as `stem` spells it), to find words in by
    plain substring search; None when that moves a character (a few letters lower-case to two,
    such as the Turkish dotted I), since a snippet is cut from `text` at the same places."""
    folded = text.lower().replace("ё", "е")  # noqa: RUF001 - Russian yo spelled as ye
    return folded if len(folded) == len(text) else None


@functools.lru_cache(maxsize=1024)
def _stems_literally(wanted: frozenset[str]) -> re.Pattern[str]:
    """The stems as plain text, longest first (no case folding: it searches folded text, which
    the regular expression engine does many times faster than a case-blind word pattern)."""
    return re.compile("|".join(re.escape(w) for w in sorted(wanted, key=len, reverse=True)))


_WORD_CHAR = re.compile(r"\w")


def _first_in_folded(text: str, folded: str, prefixes: frozenset[str], wanted: frozenset[str]) -> int | None:
    """Where the first word of `text` that begins with one of `prefixes` and has one of
    `wanted` stems starts, found in `folded` (`fold(text)`: the same places)."""
    for match in _stems_literally(prefixes).finditer(folded):
        start = match.start()
        if start and _WORD_CHAR.match(folded, start - 1):
            continue  # inside a word
        word = WORD.match(text, start)
        if word is not None and stem(word.group()) in wanted:
            return start
    return None


def _shortened(wanted: frozenset[str]) -> frozenset[str]:
    """Each stem without its last two letters: Snowball (English and Russian alike) only
    removes and rewrites endings, so a word whose stem is not a prefix of it ("happy": "happi",
    "dying": "die") still begins with this."""
    return frozenset(w[:max(1, len(w) - 2)] for w in wanted)


def snippet(text: str, query: str, width: int = 160, *, is_spaced: bool = False,
            folded: str | None = None) -> str:
    """About `width` characters of `text` around the first word whose stem matches the query
    (found among the words that begin with a stem; when none does, every word is stemmed, or
    with `folded` every word that begins with a stem's `_shortened` form).
    `is_spaced`: `text` is already `spaced(...)` (a cached article's text), so it is not again;
    `folded`: `fold(text)` of that text, when the caller has it (a cached article's)."""
    wanted = frozenset(stem(w) for w in words(query))
    if not is_spaced:
        text = spaced(text)
    start: int | None = None
    if wanted:
        if folded is not None and len(folded) == len(text):
            start = _first_in_folded(text, folded, wanted, wanted)
            if start is None:
                start = _first_in_folded(text, folded, _shortened(wanted), wanted)
        else:
            found = next((m for m in _candidates(wanted).finditer(text) if stem(m.group()) in wanted), None)
            if found is None:
                found = next((m for m in WORD.finditer(text) if stem(m.group()) in wanted), None)
            start = found.start() if found is not None else None
    if start is not None:
        start = max(0, start - width // 3)
        cut = text[start:start + width]
        if start > 0:
            cut = "…" + cut.split(" ", 1)[-1]
        return cut + ("…" if start + width < len(text) else "")
    return text[:width] + ("…" if len(text) > width else "")


def highlight(text: str, query: str) -> list[tuple[str, bool]]:
    """`text` cut into (piece, matches) so a template can mark matching words without markup
    in the data (it escapes every piece); the words marked are those `_matching` finds."""
    out: list[tuple[str, bool]] = []
    pos = 0
    for match in _matching(text, frozenset(stem(w) for w in words(query))):
        if match.start() > pos:
            out.append((text[pos:match.start()], False))
        out.append((match.group(), True))
        pos = match.end()
    if pos < len(text):
        out.append((text[pos:], False))
    return out


def highlight_html(text: str, query: str) -> Markup:
    """`highlight` as HTML: the text escaped as Jinja escapes it, the matching words in `<mark>`
    (the markup a template looping over `highlight` writes, in one pass instead of one template
    step and one Markup object per piece)."""
    out: list[str] = []
    pos = 0
    for match in _matching(text, frozenset(stem(w) for w in words(query))):
        # A word (\w+) has nothing to escape.
        out += [_escape(text[pos:match.start()]), "<mark>", match.group(), "</mark>"]
        pos = match.end()
    out.append(_escape(text[pos:]))
    return Markup("".join(out))  # noqa: S704 - every piece of text is escaped above


_SPECIAL = re.compile(r"[&<>'\"]")


def _escape(text: str) -> str:
    """markupsafe's escaping (the same entities), for plain text that mostly has nothing to escape."""
    return str(escape(text)) if _SPECIAL.search(text) else text


def index_document(db: sqlite_utils.Database, source: str, item: str, path: str, title: str,
                   body: str) -> None:
    """Put one page in the search box (replacing what was there for the same source/item/path)."""
    body = body[:MAX_BODY]
    with transaction(db):
        old = db.execute("SELECT id FROM content_docs WHERE source = ? AND item = ? AND path = ?",
                         [source, item, path]).fetchone()
        if old:
            db.execute("DELETE FROM content_fts WHERE rowid = ?", [old[0]])
            db.execute("DELETE FROM content_docs WHERE id = ?", [old[0]])
        cur = db.execute("INSERT INTO content_docs (source, item, path, title, body) VALUES (?, ?, ?, ?, ?)",
                         [source, item, path, title, body])
        db.execute("INSERT INTO content_fts (rowid, title, body) VALUES (?, ?, ?)",
                   [cur.lastrowid, stems(title), stems(body)])


def index_many(db: sqlite_utils.Database, source: str, item: str,
               docs: Iterable[tuple[str, str, str]]) -> int:
    """Index (path, title, body) documents of one item in one transaction; returns how many."""
    n = 0
    with transaction(db):
        for path, title, body in docs:
            index_document(db, source, item, path, title, body)
            n += 1
    return n


def remove_documents(db: sqlite_utils.Database, source: str, item: str) -> None:
    with transaction(db):
        db.execute("DELETE FROM content_fts WHERE rowid IN (SELECT id FROM content_docs "
                   "WHERE source = ? AND item = ?)", [source, item])
        db.execute("DELETE FROM content_docs WHERE source = ? AND item = ?", [source, item])


def item_titles(db: sqlite_utils.Database, source: str, items: Iterable[str]) -> dict[str, str]:
    """For items of another capability's `source`: the title of each item's first document."""
    wanted = sorted(set(items))
    if not wanted:
        return {}
    rows = db.execute(
        f"SELECT item, title FROM content_docs WHERE id IN (SELECT min(id) FROM content_docs "  # noqa: S608
        f"WHERE source = ? AND item IN ({','.join('?' * len(wanted))}) GROUP BY item)",
        [source, *wanted]).fetchall()
    return {str(item): str(title) for item, title in rows}


def search(db: sqlite_utils.Database, query: str, *, limit: int = 20,
           items: Sequence[str] | None = None) -> list[Hit]:
    """Our index, best first (bm25, titles weigh 5x the text), with snippets."""
    match = fts_query(query)
    if match is None:
        return []
    sql = ("SELECT d.source, d.item, d.path, d.title, d.body FROM content_fts f "
           "JOIN content_docs d ON d.id = f.rowid WHERE content_fts MATCH ?")
    args: list[object] = [match]
    if items is not None:
        sql += f" AND d.item IN ({','.join('?' * len(items))})"
        args += list(items)
    sql += " ORDER BY bm25(content_fts, 5.0, 1.0) LIMIT ?"
    args.append(limit)
    return [Hit(s, i, p, t, snippet(b, query)) for s, i, p, t, b in db.execute(sql, args).fetchall()]


def suggest(db: sqlite_utils.Database, query: str, *, limit: int = 8,
            items: Sequence[str] | None = None) -> list[Hit]:
    """Titles whose words start with what was typed (the last word as a prefix)."""
    match = fts_query(query, prefix=True)
    if match is None:
        return []
    sql = ("SELECT d.source, d.item, d.path, d.title FROM content_fts f JOIN content_docs d "
           "ON d.id = f.rowid WHERE content_fts MATCH ?")
    args: list[object] = ["title : (" + match + ")"]
    if items is not None:
        sql += f" AND d.item IN ({','.join('?' * len(items))})"
        args += list(items)
    sql += " ORDER BY bm25(content_fts, 5.0, 1.0) LIMIT ?"
    args.append(limit)
    return [Hit(s, i, p, t) for s, i, p, t in db.execute(sql, args).fetchall()]
