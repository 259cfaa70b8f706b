"""The console in the admin's language: sign-in page, flashes, fleet and device pages, the JS catalog."""

import json
import re

import pytest

from appliance.console import records
from appliance.console.app import create_app
from appliance.console.auth import set_password
from appliance.console.ingest import Ingest
from appliance.fleet import payloads
from appliance.store import open_db

PASSWORD = "correct horse battery"
RU = {"Accept-Language": "ru-RU,ru;q=0.9"}


@pytest.fixture
def app(cfg):
    app = create_app(cfg)
    set_password(open_db(cfg.console_database_path), "admin", PASSWORD)
    return app


def csrf(client, **headers):
    page = client.get("/login", headers=headers).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def js_catalog(page):
    block = re.search(r'<script type="application/json" id="i18n">(.*?)</script>', page, re.S)
    return json.loads(block.group(1))


def test_sign_in_page_in_russian_with_the_switch_and_no_account(app):
    page = app.test_client().get("/login", headers=RU).get_data(as_text=True)
    assert '<html lang="ru">' in page and "<h1>Вход</h1>" in page and "Имя пользователя" in page
    assert 'hreflang="en"' in page and 'hreflang="ru"' in page
    assert 'hreflang="udm"' not in page  # the console does not offer Udmurt (yet)
    # ?lang= keeps the other query parameters (here: where to go after signing in).
    assert 'href="/login?next=%2Fdevice%2Fx&amp;lang=en"' in app.test_client().get(
        "/login?next=/device/x", headers=RU).get_data(as_text=True)


def test_flash_messages_are_translated(app):
    client = app.test_client()
    response = client.post("/login", headers=RU, data={
        "username": "admin", "password": "wrong", "csrf_token": csrf(client, **RU)})
    assert response.status_code == 401
    assert "Неверное имя пользователя или пароль." in response.get_data(as_text=True)


def test_the_switch_cookie_beats_accept_language(app):
    client = app.test_client()
    response = client.get("/login?lang=en", headers=RU)
    assert "SameSite=Lax" in response.headers["Set-Cookie"]
    assert "<h1>Sign in</h1>" in client.get("/login", headers=RU).get_data(as_text=True)


def test_udmurt_asked_for_on_the_console_falls_back_to_the_next_language(app):
    page = app.test_client().get("/login", headers={"Accept-Language": "udm,ru;q=0.8"}).get_data(as_text=True)
    assert '<html lang="ru">' in page


def test_fleet_and_device_pages_in_russian(app, cfg):
    ingest = Ingest(cfg, open_db(cfg.console_database_path))
    ingest.handle("edge/v1/dev/pi-7/status", payloads.birth(1, 1, "0.1.0", "Room 7", 150.0))
    records.set_ingest_state(ingest.db, heartbeat=ingest.clock(), broker_connected=1)
    ingest.handle("edge/v1/dev/pi-7/status", payloads.will(1))
    client = app.test_client()
    client.post("/login", headers=RU, data={
        "username": "admin", "password": PASSWORD, "csrf_token": csrf(client, **RU)})
    fleet = client.get("/", headers=RU).get_data(as_text=True)
    assert "<h1>Устройства</h1>" in fleet and "связь потеряна" in fleet and "не в сети" in fleet
    assert "В сети: <strong" in fleet
    device = client.get("/device/pi-7", headers=RU).get_data(as_text=True)
    assert "Интервал отчётов" in device and "2,5 мин" in device  # 150 s, decimal comma
    assert re.search(r"\d{4}\W+г\., \d\d:\d\d UTC", device)  # Russian date, 24-hour time
    missing = client.get("/device/nobody", headers=RU).get_data(as_text=True)
    assert "Устройство с идентификатором <code>nobody</code>" in missing


def test_the_scripts_catalog_is_a_json_block_with_locale_messages_and_plurals(app):
    client = app.test_client()
    catalog = js_catalog(client.get("/login", headers=RU).get_data(as_text=True))
    assert catalog["lang"] == "ru" and catalog["locale"] == "ru"
    assert catalog["messages"]["just now"] == "только что"
    assert catalog["messages"]["connection lost"] == "связь потеряна"  # a reason sent as data
    forms = catalog["plurals"]["%(num)s malformed message rejected (see the ingest log)"]
    assert set(forms) == {"one", "few", "many"}
    english = js_catalog(client.get("/login").get_data(as_text=True))
    assert english["messages"]["just now"] == "just now" and english["locale"] == "en"


def test_device_ids_in_the_404_text_stay_escaped(app, cfg):
    client = app.test_client()
    client.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": csrf(client)})
    page = client.get("/device/<b>x").get_data(as_text=True)
    assert "<b>x" not in page and "&lt;b&gt;x" in page
