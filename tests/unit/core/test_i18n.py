"""Catalogs stay complete and every visible template text is marked; languages and formats per locale."""

import re
from pathlib import Path

import pytest
from babel import localedata
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from jinja2 import Environment

from appliance import i18n
from appliance.console import app as console
from appliance.portal import app as portal

ROOT = Path(__file__).resolve().parents[3]
TRANSLATIONS = ROOT / "web" / "translations"
# What each app shows: its templates, scripts and package, and the shared modules it uses.
APP_SOURCES = {
    "portal": ("web/templates/portal/", "web/static/portal/", "appliance/portal/"),
    "console": ("web/templates/console/", "web/static/console/", "appliance/console/",
                "appliance/i18n.py", "appliance/websecurity.py"),
}
APP_LANGUAGES = {"portal": portal.LANGUAGES, "console": console.LANGUAGES}
# Text a template may show untranslated: the product's name.
ALLOWED_TEXT = {"Classroom Edge"}
# Attributes a person reads (or hears from a screen reader).
VISIBLE_ATTRIBUTES = ("title", "alt", "placeholder", "aria-label", "aria-description")


def msgid_key(message_id):
    return message_id if isinstance(message_id, str) else tuple(message_id)


def extracted() -> dict[object, set[str]]:
    """Every msgid the sources mark, as `pybabel extract` with the keywords in docs/i18n.md finds them."""
    with (ROOT / "babel.cfg").open() as fp:
        method_map, options_map = parse_mapping_cfg(fp)
    found: dict[object, set[str]] = {}
    for filename, _lineno, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords={**DEFAULT_KEYWORDS, **i18n.KEYWORDS},
    ):
        key = msgid_key(message)
        if isinstance(key, tuple):
            key = key[:2]
        found.setdefault(key, set()).add(filename.replace("\\", "/"))
    return found


def catalog(lang: str):
    if lang == "pot":
        path = TRANSLATIONS / "messages.pot"
    else:
        path = TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as fp:
        return read_po(fp)


def translated(message) -> bool:
    forms = message.string if isinstance(message.string, tuple | list) else [message.string]
    return bool(message.string) and all(forms) and not message.fuzzy


@pytest.fixture(scope="module")
def marked():
    return extracted()


def test_the_template_catalog_is_up_to_date_with_the_sources(marked):
    pot = {msgid_key(m.id) for m in catalog("pot") if m.id}
    assert set(marked) - pot == set(), "marked but not in messages.pot: run pybabel (docs/i18n.md)"
    assert pot - set(marked) == set(), "in messages.pot but no longer marked: re-extract"


@pytest.mark.parametrize("lang", ["ru", "udm"])
def test_every_catalog_has_every_message(marked, lang):
    po = {msgid_key(m.id) for m in catalog(lang) if m.id}
    assert set(marked) - po == set(), f"{lang}: run `pybabel update` (docs/i18n.md)"


def test_the_russian_catalog_translates_everything():
    untranslated = [m.id for m in catalog("ru") if m.id and not translated(m)]
    assert untranslated == []


@pytest.mark.parametrize("app", sorted(APP_SOURCES))
def test_each_offered_language_translates_all_of_its_app(marked, app):
    for lang in APP_LANGUAGES[app]:
        if lang == i18n.DEFAULT_LANGUAGE:
            continue
        strings = {msgid_key(m.id): m for m in catalog(lang) if m.id}
        needed = [key for key, files in marked.items() if any(f.startswith(APP_SOURCES[app]) for f in files)]
        missing = [key for key in needed if not translated(strings[key])]
        assert missing == [], f"{app} offers {lang!r} but these are not translated"


@pytest.mark.parametrize("lang", ["ru", "udm"])
def test_translations_keep_the_placeholders(lang):
    problems = [(m.id, [str(e) for e in errors]) for m, errors in catalog(lang).check()]
    assert problems == []


def template_files():
    return sorted((ROOT / "web" / "templates").rglob("*.html"))


def unmarked_text(source: str) -> list[str]:
    """Letters a template shows outside Jinja expressions, HTML tags and {% trans %} blocks, and
    in attributes a person reads."""
    env = Environment(extensions=["jinja2.ext.i18n"], autoescape=True)
    # The template's literal text, each expression or tag replaced by a letterless mark.
    parts, in_trans, after_block_begin = [], False, False
    for _line, kind, value in env.lex(source):
        if kind == "whitespace":
            continue
        if kind == "block_begin":
            after_block_begin = True
            continue
        if after_block_begin and kind == "name":
            in_trans = {"trans": True, "endtrans": False}.get(value, in_trans)
        after_block_begin = False
        parts.append(value if kind == "data" and not in_trans else "\x00")
    text = "".join(parts)
    found = []
    for tag in re.findall(r"<[^>]*>", text):
        for name, value in re.findall(r"\b(" + "|".join(VISIBLE_ATTRIBUTES) + r')="([^"]*)"', tag):
            if re.search(r"[^\W\d_]", value):
                found.append(f'{name}="{value}"')
    text = re.sub(r"<!--.*?-->|<[^>]*>|&[a-z]+;|&#\d+;", " ", text, flags=re.S)
    for allowed in ALLOWED_TEXT:
        text = text.replace(allowed, " ")
    return found + re.findall(r"[^\W\d_][\w'’.-]*", text)


@pytest.mark.parametrize("path", template_files(), ids=lambda p: p.parent.name + "/" + p.name)
def test_templates_mark_every_visible_text(path):
    assert unmarked_text(path.read_text()) == []


def test_the_unmarked_text_check_finds_what_it_must():
    source = (
        '<p class="a">Hello {{ name }}</p><span title="Plain words">{{ _("ok") }}</span>'
        '{% trans %}Inside a block{% endtrans %}<a href="{{ url }}">Link text</a>'
        '<b>{{ _("fine") }}</b> Classroom Edge'
    )
    assert unmarked_text(source) == ['title="Plain words"', "Hello", "Link", "text"]
    assert unmarked_text('<div class="x" data-y="{{ y }}" id="z"></div>') == []


# --- choosing the language -------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "cookie", "accept", "expected"), [
    (None, None, [], "en"),
    (None, None, ["ru-RU", "en"], "ru"),
    (None, None, ["de-DE", "fr"], "en"),
    (None, "en", ["ru"], "en"),
    ("ru", "en", ["en"], "ru"),
    ("xx", "ru", ["en"], "ru"),
    (None, None, ["udm", "ru"], "udm"),
    (None, None, ["*"], "en"),
])
def test_language_is_the_query_then_the_cookie_then_accept_language(query, cookie, accept, expected):
    assert i18n.choose_language(query, cookie, accept, ["en", "ru", "udm"]) == expected


def test_a_language_the_app_does_not_offer_falls_through_to_the_next_choice():
    assert i18n.choose_language(None, "udm", ["udm", "ru;q=0.5"], ["en", "ru"]) == "en"
    assert i18n.choose_language(None, None, ["udm", "ru"], ["en", "ru"]) == "ru"


# --- dates and numbers ---------------------------------------------------------------------------


def test_udmurt_has_no_locale_data_of_its_own_so_it_formats_like_russian():
    assert not localedata.exists("udm")
    assert i18n.FALLBACK_LOCALES["udm"] == "ru"
    assert str(i18n.formatting_locale("udm")) == "ru"
    assert str(i18n.formatting_locale("ru")) == "ru" and str(i18n.formatting_locale("en")) == "en"
    assert str(i18n.formatting_locale("xx")) == "en"


def test_every_offered_language_has_a_formatting_locale_and_a_name():
    for lang in {*portal.LANGUAGES, *console.LANGUAGES}:
        assert localedata.exists(lang) or lang in i18n.FALLBACK_LOCALES
        assert i18n.language_name(lang)
    assert i18n.language_name("ru") == "Русский" and i18n.language_name("en") == "English"


TS = 1_700_000_000  # 2023-11-14 22:13:20 UTC


@pytest.mark.parametrize(("lang", "expected"), [
    ("en", "Nov 14, 2023, 22:13 UTC"),
    ("ru", "14 нояб. 2023 г., 22:13 UTC"),
    ("udm", "14 нояб. 2023 г., 22:13 UTC"),
])
def test_times_are_written_per_locale(lang, expected):
    # CLDR versions differ in which no-break space they put before "г.": any space will do.
    assert re.sub(r"[\u00a0\u202f]", " ", i18n.format_when(TS, lang)) == expected


@pytest.mark.parametrize(("lang", "expected"), [("en", "1234.5"), ("ru", "1234,5"), ("udm", "1234,5")])
def test_numbers_are_written_per_locale(lang, expected):
    assert i18n.format_decimal(1234.5, "0.#", lang) == expected
    assert i18n.format_decimal(1234.5, None, "en") == "1,234.5"


def test_catalogs_compile_in_memory_and_skip_fuzzy(tmp_path):
    po = tmp_path / "messages.po"
    po.write_text(
        'msgid ""\nmsgstr ""\n"Language: ru\\n"\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
        'msgid "Fleet"\nmsgstr "Устройства"\n\n#, fuzzy\nmsgid "History"\nmsgstr "Неверно"\n'
    )
    tr = i18n.compile_catalog(po)
    assert tr.gettext("Fleet") == "Устройства"
    assert tr.gettext("History") == "History"


def test_a_missing_catalog_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "messages.pot").write_text('msgid ""\nmsgstr ""\n')
    with pytest.raises(FileNotFoundError, match=r"fr/LC_MESSAGES/messages.po"):
        i18n.load_catalogs(tmp_path, ["en", "fr"])


def test_scripts_get_their_messages_and_a_form_per_plural_category():
    catalogs = i18n.load_catalogs(TRANSLATIONS, ["en", "ru"], js_extra=["online"])
    assert "just now" in catalogs.js_messages and "online" in catalogs.js_messages
    assert "Sign in" not in catalogs.js_messages  # template-only text stays on the server
    singular = "%(num)s malformed message rejected (see the ingest log)"
    assert any(pair[0] == singular for pair in catalogs.js_plurals)
    forms = i18n._plural_forms("ru", singular, singular.replace("message ", "messages "),
                               catalogs.languages["ru"].translations)
    assert set(forms) == {"one", "few", "many"}
    assert forms["one"].startswith("отклонено %(num)s некорректное")
    assert forms["many"].endswith("сообщений (см. журнал обработчика)")
