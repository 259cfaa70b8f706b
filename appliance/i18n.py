"""Translations for the web apps: gettext catalogs (Babel) in templates, Python and JavaScript.

Catalogs are `web/translations/<lang>/LC_MESSAGES/messages.po`, compiled in memory when an app is
built (no `.mo` files to keep in step). Each app offers the languages it lists; a request gets, in
this order, the one named by `?lang=` (which also sets the `lang` cookie), the `lang` cookie,
the best match for Accept-Language, else English (the msgids themselves).

Dates and numbers are formatted with Babel's locale data for the page's language, or for
`FALLBACK_LOCALES[lang]` when Babel has none (Udmurt is written and formatted like Russian).

What callers use: `install_i18n(app, languages)` in an app factory; `gettext`/`ngettext` for text
made in Python during a request; `N_` to mark module-level text translated later; `format_decimal`
and `format_when` for figures and times; `formatting_locale()`; in templates `_()`, `ngettext()`,
`{% trans %}`, `lang`, `languages` (the switch) and `js_catalog()` (for format.js's `t()`).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from babel import Locale, localedata
from babel.core import negotiate_locale
from babel.dates import format_date, format_time, get_datetime_format
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal as babel_format_decimal
from babel.support import NullTranslations, Translations
from flask import Flask, Response, current_app, g, has_request_context, request

from appliance import paths

DEFAULT_LANGUAGE = "en"
COOKIE = "lang"
# What a page's language depends on: every translated response says so in `Vary`.
VARY = ("Accept-Language", "Cookie")
COOKIE_MAX_AGE = 365 * 24 * 3600
# Languages Babel has no locale data for: whose dates, numbers and plural categories to borrow.
FALLBACK_LOCALES = {"udm": "ru"}
# Names in the switch for languages Babel cannot name (the others are named by Babel, in themselves).
LANGUAGE_NAMES = {"udm": "Удмурт кыл"}
DOMAIN = "messages"
# Keywords that mark text for translation, as `pybabel extract -k` takes them (docs/i18n.md).
KEYWORDS = {
    "_": None, "gettext": None, "ngettext": (1, 2), "N_": None,  # Python and Jinja
    "t": None, "nt": (1, 2),  # JavaScript (format.js)
}
# Plural categories sampled to hand plural forms to the browser (Intl.PluralRules names them).
_PLURAL_SAMPLES = range(0, 200)


def N_(message: str) -> str:
    """Mark text for extraction only; it is translated where it is shown."""
    return message


@dataclass(frozen=True)
class Language:
    """One language an app offers: its code, its name in itself, and its compiled catalog."""

    code: str
    name: str
    translations: NullTranslations


@dataclass(frozen=True)
class Catalogs:
    """What `install_i18n` loaded for one app: its languages (English first) and what JS translates."""

    languages: dict[str, Language]
    js_messages: frozenset[str]
    js_plurals: frozenset[tuple[str, str]]  # (singular, plural) msgids of nt() calls


def translations_dir() -> Path:
    return paths.web_dir() / "translations"


def formatting_locale(lang: Locale | str | None = None) -> Locale:
    """The Babel locale that formats dates and numbers for `lang` (default: the request's)."""
    if isinstance(lang, Locale):
        return lang
    return _locale(lang or current_language())


@cache
def _locale(lang: str) -> Locale:
    if localedata.exists(lang):
        return Locale.parse(lang)
    fallback = FALLBACK_LOCALES.get(lang)
    return Locale.parse(fallback) if fallback else Locale.parse(DEFAULT_LANGUAGE)


def language_name(code: str) -> str:
    if code in LANGUAGE_NAMES:
        return LANGUAGE_NAMES[code]
    name = str(Locale.parse(code).get_display_name(code) or code)
    return name[:1].upper() + name[1:]


def compile_catalog(po_file: Path) -> Translations:
    """A .po file as gettext translations, compiled in memory; fuzzy entries are left out."""
    with po_file.open("rb") as fp:
        catalog = read_po(fp, locale=None, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


def js_message_ids(pot_file: Path) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """The msgids the JavaScript files use (those the template locates in a .js file): the
    simple ones, and the (singular, plural) pairs."""
    with pot_file.open("rb") as fp:
        catalog = read_po(fp)
    simple: set[str] = set()
    plural: set[tuple[str, str]] = set()
    for m in catalog:
        if not m.id or not any(path.endswith(".js") for path, _ in m.locations):
            continue
        if isinstance(m.id, str):
            simple.add(m.id)
        else:
            plural.add((m.id[0], m.id[1]))
    return frozenset(simple), frozenset(plural)


def load_catalogs(directory: Path, languages: Sequence[str], js_extra: Iterable[str] = ()) -> Catalogs:
    """Compile the catalog of each language but English; a missing catalog is an error."""
    found: dict[str, Language] = {
        DEFAULT_LANGUAGE: Language(DEFAULT_LANGUAGE, language_name(DEFAULT_LANGUAGE), NullTranslations())
    }
    for code in languages:
        if code == DEFAULT_LANGUAGE:
            continue
        po_file = directory / code / "LC_MESSAGES" / f"{DOMAIN}.po"
        if not po_file.is_file():
            raise FileNotFoundError(f"{po_file}: no catalog for language {code!r} (see docs/i18n.md)")
        found[code] = Language(code, language_name(code), compile_catalog(po_file))
    simple, plural = js_message_ids(directory / f"{DOMAIN}.pot")
    return Catalogs(found, simple | frozenset(js_extra), plural)


def choose_language(
    query: str | None, cookie: str | None, accept: Iterable[str], available: Sequence[str]
) -> str:
    """The request's language: ?lang=, then the cookie, then Accept-Language, then English."""
    for explicit in (query, cookie):
        if explicit is not None and explicit in available:
            return explicit
    wanted = [a for a in accept if a and a != "*"]
    return negotiate_locale(wanted, list(available), sep="-") or DEFAULT_LANGUAGE


# --- during a request ----------------------------------------------------------------------------


def current_language() -> str:
    if has_request_context():
        return str(g.get("lang", DEFAULT_LANGUAGE))
    return DEFAULT_LANGUAGE


def translations() -> NullTranslations:
    """The request's translations; outside a request, those `rendering` set (else English)."""
    if has_request_context() and "i18n_translations" in g:
        found: NullTranslations = g.i18n_translations
        return found
    return _outside_request.get() or NullTranslations()


# What a hot path in front of Flask (no request context) renders in: see `rendering`.
_outside_request: ContextVar[NullTranslations | None] = ContextVar("i18n_outside_request", default=None)


@contextmanager
def rendering(catalogs: Catalogs, lang: str) -> Iterator[None]:
    """Render templates in `lang` outside a Flask request (a WSGI hot path in front of the app,
    which chose `lang` with `choose_language`): the templates' `_`, `ngettext` and `{% trans %}`
    are the same callables as in a request, reading the language from here (per thread)."""
    token = _outside_request.set(catalogs.languages[lang].translations)
    try:
        yield
    finally:
        _outside_request.reset(token)


def gettext(message: str, **variables: Any) -> str:
    text = translations().gettext(message)
    return text % variables if variables else text


def translate(message: str | None) -> str:
    """`message` translated if a catalog has it, else itself; never formatted. None: empty."""
    return translations().gettext(message) if message else ""


def ngettext(singular: str, plural: str, num: int, **variables: Any) -> str:
    variables.setdefault("num", num)
    return translations().ngettext(singular, plural, num) % variables


def format_decimal(
    number: float, format: str | None = None, locale: Locale | str | None = None
) -> str:
    """`number` as the language writes it (decimal comma in Russian); `format` a Babel pattern."""
    return babel_format_decimal(number, format, locale=formatting_locale(locale))


def format_when(ts: float | None, locale: Locale | str | None = None) -> str:
    """A Unix time as a medium date and a 24-hour time in UTC (the browser shows its local time)."""
    if ts is None:
        return gettext("never")
    locale = formatting_locale(locale)
    moment = datetime.fromtimestamp(ts, UTC)
    # The locale's way of joining a date and a time ("{1}, {0}"), with a 24-hour time.
    pattern = str(get_datetime_format("medium", locale=locale))
    stamp = pattern.replace("{1}", format_date(moment, "medium", locale=locale)).replace(
        "{0}", format_time(moment, "HH:mm", tzinfo=UTC, locale=locale)
    )
    return f"{stamp} UTC"


def _plural_forms(lang: str, singular: str, plural: str, tr: NullTranslations) -> dict[str, str]:
    """A plural message's form for each plural category of the language's formatting locale."""
    rule = formatting_locale(lang).plural_form
    forms: dict[str, str] = {}
    for n in _PLURAL_SAMPLES:
        forms.setdefault(rule(n), tr.ngettext(singular, plural, n))
    return forms


def js_catalog() -> dict[str, Any]:
    """What format.js needs: the language, the locale for Intl, and the JS messages translated."""
    catalogs: Catalogs = current_app.extensions["i18n"]
    lang = current_language()
    tr = translations()
    messages: dict[str, Any] = {}
    plurals: dict[str, dict[str, str]] = {}
    for msgid in sorted(catalogs.js_messages):
        messages[msgid] = tr.gettext(msgid)
    for singular, plural in sorted(catalogs.js_plurals):
        plurals[singular] = _plural_forms(lang, singular, plural, tr)
    return {"lang": lang, "locale": str(formatting_locale(lang)).replace("_", "-"),
            "messages": messages, "plurals": plurals}


def switch_links() -> list[dict[str, Any]]:
    """The language switch of the current request (`links_for`)."""
    return links_for(current_app.extensions["i18n"], request.path, request.args.items(multi=True),
                     current_language())


def links_for(catalogs: Catalogs, path: str, args: Iterable[tuple[str, str]],
              current: str) -> list[dict[str, Any]]:
    """The language switch: each offered language, `path` with the query `args` and ?lang= set,
    and whether it is the `current` one."""
    kept = [(k, v) for k, v in args if k != COOKIE]
    return [{"code": code, "name": language.name, "url": f"{path}?{urlencode([*kept, (COOKIE, code)])}",
             "current": code == current} for code, language in catalogs.languages.items()]


def _before_request() -> None:
    catalogs: Catalogs = current_app.extensions["i18n"]
    available = list(catalogs.languages)
    query = request.args.get(COOKIE)
    lang = choose_language(query, request.cookies.get(COOKIE), request.accept_languages.values(), available)
    g.lang = lang
    g.i18n_translations = catalogs.languages[lang].translations
    g.i18n_set_cookie = query == lang and request.cookies.get(COOKIE) != lang


def _after_request(response: Response) -> Response:
    if g.get("i18n_set_cookie"):
        response.set_cookie(
            COOKIE, g.lang, max_age=COOKIE_MAX_AGE, samesite="Lax", httponly=True,
            secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")),
        )
    # The same URL reads differently per language: caches must key on what chose it.
    for header in VARY:
        response.vary.add(header)
    return response


def _jinja_gettext(message: str) -> str:
    return translations().gettext(message)


def _jinja_ngettext(singular: str, plural: str, num: int) -> str:
    return translations().ngettext(singular, plural, num)


def install_i18n(app: Flask, languages: Sequence[str], *, js_extra: Iterable[str] = ()) -> Catalogs:
    """Load the app's catalogs and choose a language for every request.

    `js_extra`: msgids the scripts translate that are not literal in them (texts that arrive as
    data, such as a device's state and reason).
    """
    started = time.perf_counter()
    catalogs = load_catalogs(translations_dir(), languages, js_extra)
    app.logger.debug("i18n: %d catalogs in %.0f ms", len(catalogs.languages),
                     (time.perf_counter() - started) * 1000)
    app.extensions["i18n"] = catalogs
    app.jinja_env.add_extension("jinja2.ext.i18n")
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        _jinja_gettext, _jinja_ngettext, newstyle=True
    )
    # `translate` is for msgids that arrive as data (a state, a label from a tuple): unlike `_`,
    # it never treats the text as a format string, so a stray "%" from a device cannot break a page.
    app.jinja_env.globals.update(js_catalog=js_catalog, format_decimal=format_decimal,
                                 format_when=format_when, translate=translate)
    app.before_request(_before_request)
    app.after_request(_after_request)

    @app.context_processor
    def _language_context() -> dict[str, Any]:
        return {"lang": current_language(), "languages": switch_links()}

    return catalogs
