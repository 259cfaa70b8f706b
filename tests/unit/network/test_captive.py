"""The captive responder and the portal's /captive/ pages."""

from __future__ import annotations

import http.client
import socket
import threading

import pytest

from appliance import config
from appliance.network import captive, portal_views, probes
from appliance.portal.app import create_app


def test_answers_before_and_after_acceptance():
    for probe in probes.PROBES:
        if probe.https:
            continue
        before = captive.answer(probe.host, probe.path, False, "portal.test")
        assert before.status == 302
        assert dict(before.headers)["Location"] == "http://portal.test/captive/"
        after = captive.answer(probe.host, probe.path, True, "portal.test")
        if probe.login_trigger:
            assert after.status == 302
        else:
            assert after == probe.online


@pytest.fixture
def responder():
    accepted: set[str] = set()
    server = captive.make_server(0, lambda ip: ip in accepted, "portal.test")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], accepted
    server.shutdown()
    server.server_close()


def test_every_answer_closes_the_connection(responder):
    port, accepted = responder
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/hotspot-detect.html", headers={"Host": "captive.apple.com",
                                                          "Connection": "keep-alive"})
    first = conn.getresponse()
    assert first.status == 302 and first.getheader("Connection") == "close"
    assert first.getheader("Cache-Control") == "no-store"
    assert first.version == 10
    first.read()
    # The server closed its side: a reused connection cannot be served by it again.
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /generate_204 HTTP/1.1\r\nHost: connectivitycheck.gstatic.com\r\n\r\n"
                 b"GET /generate_204 HTTP/1.1\r\nHost: connectivitycheck.gstatic.com\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    assert data.count(b"HTTP/1.0 302") == 1  # one answer, then the socket is closed
    accepted.add("127.0.0.1")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/generate_204", headers={"Host": "connectivitycheck.gstatic.com"})
    ok = conn.getresponse()
    assert ok.status == 204 and ok.read() == b""


@pytest.fixture
def portal(tmp_path):
    terms = tmp_path / "terms.txt"
    terms.write_text("Rule one.\n\nRule two.")
    (tmp_path / "terms.fr.txt").write_text("Règle un.")
    cfg = config.from_dict({"appliance": {"id": "x", "state_dir": str(tmp_path / "s")},
                            "network": {"terms_file": str(terms),
                                        "helper": {"socket": str(tmp_path / "none.sock")}}})
    return create_app(cfg).test_client()


def test_terms_page_works_without_javascript(portal):
    page = portal.get("/captive/").get_data(as_text=True)
    assert "Rule one." in page and "Rule two." in page
    assert '<form method="post" action="/captive/accept">' in page and "<script" not in page
    assert "Règle un." in portal.get("/captive/", headers={"Accept-Language": "fr"}).get_data(as_text=True)


def test_the_sign_in_sheet_speaks_the_students_language(portal):
    page = portal.get("/captive/", headers={"Accept-Language": "ru"}).get_data(as_text=True)
    assert '<html lang="ru">' in page
    assert "Добро пожаловать в сеть класса" in page and ">Я согласен</button>" in page
    assert "Welcome to the classroom network" not in page
    done = portal.get("/captive/done", headers={"Accept-Language": "ru"}).get_data(as_text=True)
    assert "Вы в сети" in done
    # The switch needs no account: a link that sets the language cookie, which then wins over
    # the browser's Accept-Language.
    switched = portal.get("/captive/?lang=udm").get_data(as_text=True)
    assert '<html lang="udm">' in switched and "Соглаш луисько" in switched
    again = portal.get("/captive/done", headers={"Accept-Language": "ru"}).get_data(as_text=True)
    assert '<html lang="udm">' in again


def test_accept_refuses_cross_site_posts(portal):
    assert portal.post("/captive/accept").status_code == 403
    assert portal.post("/captive/accept", headers={"Origin": "http://evil.example"}).status_code == 403
    # Same origin, but no helper is listening: a clear failure page, not a redirect.
    same = portal.post("/captive/accept", headers={"Origin": "http://classroom.internal"})
    assert same.status_code == 503


def test_same_origin_rule():
    assert portal_views.same_origin("http://portal.test", None, "10.42.0.1", "portal.test")
    assert portal_views.same_origin(None, "http://10.42.0.1/captive/", "10.42.0.1", "portal.test")
    assert not portal_views.same_origin("null", None, "10.42.0.1", "portal.test")
    assert not portal_views.same_origin("http://portal.test.evil", None, "10.42.0.1", "portal.test")


def test_api_is_captive_json(portal):
    answer = portal.get("/captive/api")
    assert answer.content_type == "application/captive+json"
    assert answer.json == {"captive": True, "user-portal-url": "http://classroom.internal/captive/"}


def test_captive_pages_let_browsers_send_their_origin(portal):
    # Under the app-wide `no-referrer`, browsers send `Origin: null` with the accept POST.
    page = portal.get("/captive/")
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert portal.get("/").headers["Referrer-Policy"] == "no-referrer"
