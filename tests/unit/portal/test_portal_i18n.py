"""The portal in the student's language: Accept-Language, the switch's cookie, Udmurt with Russian formats."""

import re

from appliance.portal.app import create_app
from tests.conftest import SHARED


def landing(client, **headers):
    return client.get("/", headers=headers).get_data(as_text=True)


def test_english_by_default_with_the_page_language_set(cfg):
    page = landing(create_app(cfg).test_client())
    assert '<html lang="en">' in page and "Nothing in the library yet" in page


def test_accept_language_russian_gets_a_russian_page(cfg):
    page = landing(create_app(cfg).test_client(), **{"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.5"})
    assert '<html lang="ru">' in page
    assert "В библиотеке пока ничего нет" in page and "Nothing in the library" not in page


def test_unknown_language_falls_back_to_english(cfg):
    page = landing(create_app(cfg).test_client(), **{"Accept-Language": "de-DE,fr;q=0.8"})
    assert '<html lang="en">' in page and "Nothing in the library yet" in page


def test_the_switch_is_on_the_page_and_its_cookie_beats_accept_language(cfg):
    client = create_app(cfg).test_client()
    page = landing(client, **{"Accept-Language": "ru"})
    links = dict(re.findall(r'<a href="([^"]+)" hreflang="([a-z]+)"', page))
    assert set(links.values()) == {"en", "ru", "udm"}
    assert 'hreflang="ru" lang="ru" aria-current="true">Русский</a>' in page
    response = client.get("/?lang=en", headers={"Accept-Language": "ru"})
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("lang=en;") and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Nothing in the library yet" in response.get_data(as_text=True)
    # Later visits, without the query: the cookie decides.
    assert "Nothing in the library yet" in landing(client, **{"Accept-Language": "ru"})
    assert "Accept-Language" in response.headers["Vary"] and "Cookie" in response.headers["Vary"]


def test_a_bad_language_in_the_query_sets_no_cookie(cfg):
    response = create_app(cfg).test_client().get("/?lang=<x>")
    assert "Set-Cookie" not in response.headers and response.status_code == 200


def test_udmurt_gets_its_catalog_and_russian_number_formats(cfg, store_for):

    from appliance.content import library

    library.add_zim(store_for(cfg), (SHARED / "data" / "zim" / "wikipedia_en_ray_charles_mini.zim"))
    page = landing(create_app(cfg).test_client(), **{"Accept-Language": "udm"})
    assert '<html lang="udm">' in page
    assert "Библиотекаын" in page and "In the library" not in page
    assert "архив, 569 кБ" in page  # decimal comma: formatted like Russian


def test_sizes_in_russian():
    from babel.support import NullTranslations

    from appliance.i18n import compile_catalog, translations_dir
    from appliance.portal.landing import human_size

    ru = compile_catalog(translations_dir() / "ru" / "LC_MESSAGES" / "messages.po")
    assert human_size(1_200_000_000, "ru", ru) == "1,2 ГБ"
    assert [human_size(n, "ru", ru) for n in (1, 3, 5)] == ["1 байт", "3 байта", "5 байт"]
    assert human_size(1, "en", NullTranslations()) == "1 byte"
