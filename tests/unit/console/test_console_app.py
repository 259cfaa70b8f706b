import re

import pytest

from appliance.console import records
from appliance.console.app import create_app
from appliance.console.auth import UserError, set_password
from appliance.console.ingest import Ingest
from appliance.fleet import payloads
from appliance.store import open_db

PASSWORD = "correct horse battery"


@pytest.fixture
def app(cfg):
    app = create_app(cfg)
    db = open_db(cfg.console_database_path)
    set_password(db, "admin", PASSWORD)
    return app


def token(client, path="/login"):
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def login(client):
    return client.post("/login", data={"username": "admin", "password": PASSWORD,
                                       "csrf_token": token(client)})


def test_every_page_needs_sign_in(app):
    client = app.test_client()
    for path in ("/", "/events"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.location
    assert client.get("/api/fleet").status_code == 401
    assert client.get("/healthz").status_code == 200


def test_sign_in_without_csrf_token_is_refused(app):
    client = app.test_client()
    client.get("/login")
    response = client.post("/login", data={"username": "admin", "password": PASSWORD})
    assert response.status_code == 400


def test_wrong_password_is_refused(app):
    client = app.test_client()
    response = client.post("/login", data={"username": "admin", "password": "nope",
                                           "csrf_token": token(client)})
    assert response.status_code == 401
    assert client.get("/").status_code == 302


def test_signed_in_admin_sees_the_fleet(app, cfg):
    ingest = Ingest(cfg, open_db(cfg.console_database_path))
    ingest.handle("edge/v1/dev/pi-7/status", payloads.birth(1, 1, "0.1.0", "Room 7", 60.0))
    records.set_ingest_state(ingest.db, heartbeat=ingest.clock(), broker_connected=1)
    client = app.test_client()
    assert login(client).status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert "Room 7" in page and "1</strong> of" in page
    data = client.get("/api/fleet").get_json()
    assert data["devices"][0]["state"] == "online"


def test_open_redirect_after_sign_in_is_refused(app):
    client = app.test_client()
    response = client.post("/login?next=//evil.example/", data={
        "username": "admin", "password": PASSWORD, "csrf_token": token(client)})
    assert response.location == "/"


def test_sign_out_needs_csrf(app):
    client = app.test_client()
    login(client)
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200


def test_security_headers(app):
    response = app.test_client().get("/login")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"


def test_weak_password_is_refused(cfg):
    db = open_db(cfg.console_database_path)
    create_app(cfg)
    with pytest.raises(UserError, match="at least 12"):
        set_password(db, "admin", "short")


def test_repeated_failures_are_throttled_even_with_the_right_password(app):
    client = app.test_client()
    for _ in range(5):
        response = client.post("/login", data={"username": "admin", "password": "guess",
                                               "csrf_token": token(client)})
        assert response.status_code == 401
    response = client.post("/login", data={"username": "admin", "password": PASSWORD,
                                           "csrf_token": token(client)})
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.get_data(as_text=True)
