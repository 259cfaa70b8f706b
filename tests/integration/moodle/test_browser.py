"""The mirror in real Chromium on a phone, with the school's Moodle gone (the internet is down).

Synced from the replay with `appliance moodle sync`, then the replay is stopped and the portal
serves: every sub-resource of the course list, a course, a page with a picture, a book chapter
and a folder must load from the portal itself, under the portal's CSP, without sideways scroll.
"""

from __future__ import annotations

import re
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Request, Response, expect

from appliance import config as config_module
from appliance.harness.process import http_ok, wait_for
from appliance.moodle.replay import ReplayMoodle
from tests.conftest import SHARED
from tests.integration.web.test_browser import PHONE, browser, no_sideways_scroll, open_tab  # noqa: F401

pytestmark = pytest.mark.integration

DATA = SHARED / "data" / "moodle"
PAGES = {
    "/moodle/": ("Biology 7", 0),
    "/moodle/course/2": ("Biology 7", 0),
    "/moodle/course/2/m/3": ("Строение клетки", 1),  # a page with its picture
    "/moodle/course/2/m/7/chapter/2": ("Учебник: Фотосинтез", 1),  # a chapter with a picture
    "/moodle/course/2/m/8": ("Лабораторные материалы", 0),  # a folder and its sub-folder
    "/moodle/course/3/m/16": ("Пирамиды Гизы", 1),
}


@pytest.fixture
def mirrored_portal(appliance_config, start, tmp_path):
    """A portal whose mirror was synced from the replay; the replay is down when it serves."""
    (tmp_path / "pw").write_text("Sync#Bot2024\n")
    (tmp_path / "pw").chmod(0o600)
    with ReplayMoodle(DATA / "state1") as replay:
        cfg_path = appliance_config("school-moodle", moodle={
            "url": replay.url, "username": "syncbot", "password_file": str(tmp_path / "pw"),
            "min_free_mb": 0})
        done = subprocess.run([sys.executable, "-m", "appliance", "--config", str(cfg_path), "moodle",
                               "sync", "--now", "--quiet"], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        site = replay.url
    cfg = config_module.load(cfg_path)
    base = f"http://127.0.0.1:{cfg.portal.port}"
    start(cfg_path, "portal")
    wait_for(lambda: http_ok(base + "/healthz"), what="portal up")
    return base, site


def test_mirrored_pages_load_whole_on_a_phone_with_moodle_down(mirrored_portal, open_tab, tmp_path):  # noqa: F811
    base, site = mirrored_portal
    for path, (heading, images) in PAGES.items():
        tab = open_tab(**PHONE)
        page = tab.page
        requests: list[str] = []
        failed: list[str] = []

        def on_request(request: Request, seen: list[str] = requests) -> None:
            seen.append(request.url)

        def on_response(response: Response, bad: list[str] = failed) -> None:
            if response.status >= 400:
                bad.append(f"{response.status} {response.url}")

        page.on("request", on_request)
        page.on("response", on_response)
        page.on("requestfailed", lambda r, bad=failed: bad.append(f"failed {r.url} {r.failure}"))
        page.goto(base + path)
        page.wait_for_load_state("networkidle")
        expect(page.locator("body")).to_contain_text(heading)
        assert failed == [], (path, failed)
        assert tab.problems() == [], (path, tab.problems())  # console errors, CSP violations
        outside = [u for u in requests if urlsplit(u).netloc != urlsplit(base).netloc]
        assert outside == [], (path, outside)
        assert not any("moodle.example" in u or u.startswith(site) for u in requests)
        pictures = page.locator("main img")
        expect(pictures).to_have_count(images)
        for n in range(images):
            img = pictures.nth(n)
            assert img.evaluate("i => i.complete && i.naturalWidth > 0"), (path, img.get_attribute("src"))
            box = img.bounding_box()
            assert box is not None and box["x"] + box["width"] <= page.viewport_size["width"], path
        assert no_sideways_scroll(page), f"horizontal scroll on {path}"
        size = page.evaluate("parseFloat(getComputedStyle(document.querySelector('main')).fontSize)")
        assert size >= 14, (path, size)  # readable on a phone
        tab.screenshot(tmp_path, "moodle-" + (re.sub(r"\W+", "-", path).strip("-") or "index") + ".png")


def test_the_library_search_box_leads_to_a_mirrored_chapter(mirrored_portal, open_tab, tmp_path):  # noqa: F811
    base, _ = mirrored_portal
    tab = open_tab(**PHONE)
    page = tab.page
    page.goto(base + "/")
    box = page.locator("input#q")
    box.fill("хлоропласт")
    box.press("Enter")
    hit = page.locator("ol.hits li").filter(has_text="Biology 7").first
    expect(hit).to_be_visible()
    hit.locator("a.title").click()
    expect(page).to_have_url(base + "/moodle/course/2/m/7/chapter/2")
    expect(page.locator("main img")).to_have_count(1)
    assert no_sideways_scroll(page)
    assert tab.problems() == []
    tab.screenshot(tmp_path, "moodle-search-chapter.png")


def test_a_pupil_signs_in_over_https_on_a_phone_and_reads_the_course(appliance_config, start, open_tab,  # noqa: F811
                                                                      tmp_path):
    from appliance.fleet.broker import free_port
    from appliance.moodle.replay import Pupil
    from tests.integration.moodle.test_signin import self_signed

    (tmp_path / "pw").write_text("Sync#Bot2024\n")
    (tmp_path / "pw").chmod(0o600)
    cert, key = self_signed(tmp_path, names=("classroom.localhost",))
    tls_port = free_port()
    with ReplayMoodle(DATA / "state1") as replay:
        replay.users["pupil7"] = Pupil("Pupil#Pass1", 40, (2,))
        cfg_path = appliance_config(
            "school-signin", portal={"https_port": tls_port},
            network={"portal_name": "classroom.localhost", "tls_cert": str(cert), "tls_key": str(key)},
            moodle={"url": replay.url, "username": "syncbot", "password_file": str(tmp_path / "pw"),
                    "min_free_mb": 0, "signin_courses": [2]})
        done = subprocess.run([sys.executable, "-m", "appliance", "--config", str(cfg_path), "moodle",
                               "sync", "--now", "--quiet"], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        cfg = config_module.load(cfg_path)
        base = f"http://classroom.localhost:{cfg.portal.port}"
        start(cfg_path, "portal")
        # Chromium maps *.localhost to loopback itself; the resolver here may not.
        wait_for(lambda: http_ok(f"http://127.0.0.1:{cfg.portal.port}/healthz"), what="portal up")
        # The test's own certificate is not one the browser trusts; everything else is as on a phone.
        tab = open_tab(**PHONE, ignore_https_errors=True)
        page = tab.page
        page.goto(base + "/moodle/course/2")
        expect(page).to_have_url(f"https://classroom.localhost:{tls_port}/moodle/signin/2?next=/moodle/course/2")
        expect(page.locator("input[name=password]")).to_be_visible()
        assert no_sideways_scroll(page)
        tab.screenshot(tmp_path, "moodle-signin.png")
        page.fill("input[name=username]", "pupil7")
        page.fill("input[name=password]", "wrong")
        page.click("form.signin button")
        expect(page.locator("p.error")).to_contain_text("Wrong username or password")
        page.fill("input[name=password]", "Pupil#Pass1")
        page.click("form.signin button")
        expect(page).to_have_url(f"https://classroom.localhost:{tls_port}/moodle/course/2")
        expect(page.locator("h1")).to_contain_text("Biology 7")
        cookies = {c["name"]: c for c in page.context.cookies()}
        session = cookies["__Host-portal_signin"]
        assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Lax"
        page.goto(f"https://classroom.localhost:{tls_port}/moodle/course/2/m/7/chapter/2")
        expect(page.locator("main img")).to_have_count(1)
        # Nothing but the wrong password's 401 (CSP violations, script errors would be here).
        assert [p for p in tab.problems() if "status of 401" not in p] == []
        # The plain-HTTP origin does not get the cookie: there the course still asks for sign-in.
        page.goto(base + "/moodle/course/2")
        expect(page).to_have_url(re.compile(r"https://classroom.localhost:\d+/moodle/course/2"))
