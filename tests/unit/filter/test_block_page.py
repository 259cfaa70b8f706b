"""The portal's block page and "why is this site blocked?": the category for the asking device
by the Host it sent, never student data in a URL, the portal's own names untouched, the lookup by
name for the students' group, in the students' language."""

from __future__ import annotations

import pytest

from appliance import config
from appliance.filter import service
from appliance.filter.portal_views import clean_name, is_own_host
from appliance.portal.app import create_app


@pytest.fixture
def portal(tmp_path):
    listed = tmp_path / "gambling.txt"
    listed.write_text("casino.example\n")
    cfg = config.from_dict({
        "appliance": {"id": "x", "state_dir": str(tmp_path / "s")},
        "agent": {"clock_source": "host"},
        "network": {"portal_name": "classroom.internal",
                    "helper": {"socket": str(tmp_path / "none.sock")}},
        "filter": {"block_page": ["10.42.0.1"],
                   "lists": [{"category": "gambling", "path": str(listed)}]}})
    service.update_lists(cfg)
    return create_app(cfg).test_client()


def test_a_blocked_name_gets_the_block_page_with_its_category(portal):
    page = portal.get("/games/poker?user=x", headers={"Host": "www.Casino.example"})
    assert page.status_code == 403 and page.headers["Cache-Control"] == "no-store"
    text = page.get_data(as_text=True)
    assert "This site is blocked" in text and "www.casino.example" in text and "gambling" in text
    assert "ask your teacher" in text and 'href="http://classroom.internal/blocked/"' in text
    # Answered in place (no redirect carrying anything), and the way to the portal carries
    # nothing of the request.
    assert "Location" not in page.headers and "classroom.internal/blocked/?" not in text
    ru = portal.get("/", headers={"Host": "www.casino.example", "Accept-Language": "ru"})
    assert "Сайт заблокирован" in ru.get_data(as_text=True)


def test_the_portals_own_names_and_allowed_names_pass_through(portal):
    for host in ("classroom.internal", "10.42.0.1", "[fd42:ce::1]", "localhost:8080"):
        page = portal.get("/captive/", headers={"Host": host})
        assert page.status_code == 200, host
    assert portal.get("/captive/", headers={"Host": "www.allowed.example"}).status_code == 200


def test_why_is_this_site_blocked_looks_up_a_name_for_the_students(portal):
    page = portal.get("/blocked/?name=https://WWW.Casino.example/x").get_data(as_text=True)
    assert "www.casino.example" in page and "blocked for students" in page and "gambling" in page
    assert "MAC" not in page and "reasons" not in page  # the category only
    fine = portal.get("/blocked/?name=www.allowed.example").get_data(as_text=True)
    assert "not blocked for students" in fine
    bad = portal.get("/blocked/?name=%3Cscript%3E").get_data(as_text=True)
    assert "That is not a site name" in bad and "<script>" not in bad
    assert "Site name" in portal.get("/blocked/").get_data(as_text=True)
    udm = portal.get("/blocked/?name=casino.example&lang=udm").get_data(as_text=True)
    assert '<html lang="udm">' in udm and "blocked for students" not in udm


@pytest.mark.parametrize(("raw", "name"), [
    ("www.Example.org.", "www.example.org"), ("http://a.example:8080/x?y", "a.example"),
    ("user@a.example", "a.example"), ("10.0.0.1", None), ("[::1]", None), ("nodot", None),
    ("bad name.example", None), ("a" * 64 + ".example", None), ("", None),
])
def test_clean_name(raw, name):
    assert clean_name(raw) == name


def test_own_hosts():
    assert is_own_host("Classroom.Internal:80", "classroom.internal")
    assert is_own_host("192.0.2.1:8080", "x") and is_own_host("[2001:db8::1]:80", "x")
    assert not is_own_host("www.example.org", "classroom.internal")
