"""The console and the portal in a real browser (Debian's chromium, driven by Playwright).

What only a browser can show: fleet.js runs under the strict CSP, the fleet table follows the
server-sent events without a reload, and the portal fits a phone screen.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from appliance import config as config_module
from appliance.fleet import payloads
from appliance.harness.process import http_ok, wait_for
from appliance.store import open_db
from tests.conftest import SHARED
from tests.integration.fleet.test_fleet_loop import fleet

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Where the lead engineer looks at the pictures after a run (each test also keeps its own copy).
SHOTS = Path("/tmp/browser-shots")
PASSWORD = "a long enough password"
UI_TIMEOUT_MS = 10_000
# The state changes wait on the agent (re)connecting and the stream's 1 s poll.
LIVE_TIMEOUT_MS = 15_000
LOGIN_NEXT = r"/login\?next=(/|%2F)$"
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 2}
LAPTOP = {"viewport": {"width": 1366, "height": 768}}

# Runs before any page script: CSP violations are recorded even if chromium logs them quietly.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


@dataclass
class Tab:
    """A page in a fresh browser context, with every console error and uncaught exception."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def problems(self, *, allow: tuple[str, ...] = ()) -> list[str]:
        """Errors seen so far, except console errors matching a pattern in `allow`."""
        found = [f"console: {m}" for m in self.console_errors
                 if not any(re.search(a, m) for a in allow)]
        found += [f"pageerror: {m}" for m in self.page_errors]
        if not self.page.is_closed():
            found += [f"csp: {v}" for v in self.page.evaluate("window.__cspViolations || []")]
        return found

    def screenshot(self, tmp_path: Path, name: str) -> Path:
        path = tmp_path / name
        self.page.screenshot(path=str(path), full_page=True)
        SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SHOTS / name)
        return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One chromium for the module; tests get their own contexts from `open_tab`."""
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        expect.set_options(timeout=UI_TIMEOUT_MS)
        yield b
        b.close()


@pytest.fixture
def open_tab(browser: Browser) -> Iterator[Callable[..., Tab]]:
    """Factory: `open_tab(**context_options)` -> a Tab in a new context, closed after the test."""
    contexts = []

    def make(**options: object) -> Tab:
        context = browser.new_context(**options)
        context.set_default_timeout(UI_TIMEOUT_MS)
        context.add_init_script(RECORD_CSP_VIOLATIONS)
        contexts.append(context)
        tab = Tab(context.new_page())

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                tab.console_errors.append(f"{msg.text} ({msg.location.get('url', '')})")

        tab.page.on("console", on_console)
        tab.page.on("pageerror", lambda exc: tab.page_errors.append(str(exc)))
        return tab

    yield make
    for context in contexts:
        context.close()


def set_admin_password(console_config: Path, password: str = PASSWORD) -> None:
    subprocess.run([sys.executable, "-m", "appliance", "--config", str(console_config),
                    "set-password", "admin", "--password-stdin"],
                   input=password + "\n", text=True, check=True)


def console_url(console_config: Path) -> str:
    return f"http://127.0.0.1:{config_module.load(console_config).console.port}"


def start_console(console_config: Path, start: Callable, *, ingest: bool = True) -> str:
    set_admin_password(console_config)
    if ingest:
        start(console_config, "ingest")
    start(console_config, "console")
    base = console_url(console_config)
    wait_for(lambda: http_ok(base + "/healthz"), what="console up")
    return base


def no_sideways_scroll(page: Page) -> bool:
    """The document is no wider than the screen.

    Compared with the viewport we asked for, not `innerWidth`: with `is_mobile` chromium widens
    the layout viewport to fit wide content, so `scrollWidth <= innerWidth` would always hold.
    """
    width = page.viewport_size["width"]
    sizes = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    return sizes[0] <= width and sizes[1] <= width


def sign_in(page: Page, base: str, username: str = "admin", password: str = PASSWORD) -> None:
    """Open the console as a stranger would: redirected to sign-in, then the form."""
    page.goto(base + "/")
    expect(page).to_have_url(re.compile(re.escape(base) + LOGIN_NEXT))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_fleet_table_follows_the_agent_live_without_a_reload(
        appliance_config, console_config, start, open_tab, tmp_path):
    base = start_console(console_config, start)
    agent_cfg = appliance_config("school-live")
    agent = start(agent_cfg, "agent")

    tab = open_tab(**LAPTOP)
    page = tab.page
    sign_in(page, base)
    expect(page).to_have_url(base + "/")
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    expect(page.locator("#live")).to_have_text("live")  # the event stream is connected

    row = page.locator('#fleet tr[data-device="school-live"]')
    state = row.locator("td.state")
    expect(state).to_have_text(re.compile(r"^\s*online"), timeout=LIVE_TIMEOUT_MS)
    expect(row).to_have_class("online")
    # "12 %" is fleet.js formatting a live figure; the server-rendered cell has no unit.
    expect(row.locator('td[data-metric="cpu_pct"]')).to_have_text(re.compile(r"^\d+ %$"))
    expect(row.locator('td[data-metric="mem_pct"]')).to_have_text(re.compile(r"^\d+ %$"))
    expect(row.locator(".name")).to_have_text("School Live")
    expect(page.locator("#count-online")).to_have_text("1")

    # The chart: an SVG sparkline of the last hour. In its first minute an appliance has one
    # per-minute point, drawn as a dot at the right edge; later, lines.
    spark = row.locator("svg.spark")
    expect(spark).to_have_count(1)
    for series in ("cpu", "mem"):
        mark = spark.locator(f"circle.{series}, polyline.{series}")
        expect(mark).to_have_count(1)
        if mark.evaluate("e => e.tagName") == "circle":
            assert 150 <= float(mark.get_attribute("cx")) <= 160  # "now" is the right edge
        else:
            point = r"-?\d+(\.\d+)?,-?\d+(\.\d+)?"
            assert re.fullmatch(rf"{point}( {point})+", mark.get_attribute("points"))
    expect(spark.locator("title")).to_have_text(
        re.compile(r"^CPU \d+(\.\d+)? %, memory \d+(\.\d+)? % \(last hour, per minute\)$"))

    time_origin = page.evaluate("performance.timeOrigin")
    page.evaluate("window.__marker = 1")
    tab.screenshot(tmp_path, "console-fleet.png")

    # A clean stop publishes "offline": the row changes in place, the page is not reloaded.
    assert agent.stop() == 0
    expect(state).to_have_text(re.compile(r"^\s*offline\s*agent stopped"), timeout=LIVE_TIMEOUT_MS)
    expect(row).to_have_class("offline")
    expect(state).to_contain_text("agent stopped · last heard just now")
    expect(page.locator("#count-online")).to_have_text("0")
    assert page.evaluate("window.__marker") == 1
    assert page.evaluate("performance.timeOrigin") == time_origin
    tab.screenshot(tmp_path, "console-fleet-offline.png")

    # Started again: back online in the same document.
    start(agent_cfg, "agent")
    expect(state).to_have_text(re.compile(r"^\s*online"), timeout=LIVE_TIMEOUT_MS)
    expect(row).to_have_class("online")
    expect(page.locator("#count-online")).to_have_text("1")
    assert page.evaluate("window.__marker") == 1
    assert page.evaluate("performance.timeOrigin") == time_origin
    expect(page.locator("#fleet tbody tr")).to_have_count(1)

    assert tab.problems() == []


def test_console_pages_run_under_the_strict_csp_without_errors(console_config, start, open_tab, tmp_path):
    base = start_console(console_config, start)
    tab = open_tab(**LAPTOP)
    page = tab.page

    login = page.goto(base + "/login")
    assert login is not None
    assert "script-src 'self'" in login.headers["content-security-policy"]
    sign_in(page, base)
    expect(page).to_have_url(base + "/")
    # fleet.js ran (an external script: allowed) and opened the event stream.
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#live")).to_have_class("live on")
    expect(page.locator("#fleet tbody tr.empty")).to_contain_text("No appliance has reported yet")
    # The initial snapshot and the scripts' catalog are JSON data blocks, not inline scripts the
    # CSP would block.
    assert page.locator("script:not([src])").evaluate_all(
        "els => els.map(e => e.id + ':' + e.type)") == ["initial:application/json", "i18n:application/json"]
    # The same page at a phone width stays usable: no sideways scrolling.
    page.set_viewport_size(PHONE["viewport"])
    assert no_sideways_scroll(page)
    tab.screenshot(tmp_path, "console-fleet-empty-narrow.png")

    assert tab.problems() == []


@pytest.mark.parametrize("device", ["phone", "laptop"])
def test_portal_landing_page_fits_the_screen(appliance_config, start, open_tab, tmp_path, device):
    cfg_path = appliance_config("school-portal")
    cfg = config_module.load(cfg_path)
    base = f"http://127.0.0.1:{cfg.portal.port}"
    start(cfg_path, "portal")
    wait_for(lambda: http_ok(base + "/healthz"), what="portal up")

    tab = open_tab(**(PHONE if device == "phone" else LAPTOP))
    page = tab.page

    def check_layout() -> None:
        expect(page).to_have_title(re.compile(r"School Portal"))
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        expect(page.get_by_role("heading", level=1)).to_have_text("Library")
        expect(page.locator(".site")).to_have_text("Classroom library")
        expect(page.locator(".where")).to_have_text("School Portal")
        assert no_sideways_scroll(page), f"horizontal scroll on {device}"

    page.goto(base + "/")
    check_layout()
    expect(page.locator("p.empty")).to_contain_text("Nothing in the library yet")

    from appliance.content import demo, library, schema
    from appliance.content.store import ContentStore
    from appliance.store import migrate, open_db

    db = open_db(cfg.database_path)
    migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    store = ContentStore(cfg.content.root, db)
    library.add_zim(store, (SHARED / "data" / "zim" / "wikipedia_en_ray_charles_mini.zim"))
    library.add_zim(store, (SHARED / "data" / "zim" / "small.zim"))
    # One long word must wrap on a phone, not widen the page.
    library.add_pack(store, demo.build_demo_pack(tmp_path / f"pack-{device}"),
                     title="PhysikFuerDieSekundarstufeZweiteAuflage2024")
    db.conn.close()
    page.reload()
    check_layout()
    items = page.locator("ul.resources li")
    expect(items).to_have_count(3)
    expect(items.locator(".title")).to_have_text(
        ["PhysikFuerDieSekundarstufeZweiteAuflage2024", "Ray Charles", "Test ZIM file"])
    expect(items.nth(1).locator(".meta")).to_contain_text("569 kB archive")
    expect(items.nth(0)).to_have_class("folder")
    expect(items.nth(0).locator(".meta")).to_contain_text("collection")
    expect(page.locator("p.empty")).to_have_count(0)
    for item in (items.nth(0), items.nth(1), items.nth(2)):
        box = item.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= page.viewport_size["width"]

    tab.screenshot(tmp_path, f"portal-{device}.png")
    assert tab.problems() == []


def test_failed_sign_in_says_the_same_for_a_wrong_user_and_a_wrong_password(
        console_config, start, open_tab, tmp_path):
    base = start_console(console_config, start, ingest=False)
    tab = open_tab(**LAPTOP)
    page = tab.page

    def attempt(username: str, password: str) -> tuple[int, str, str]:
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            sign_in(page, base, username, password)
        alert = page.get_by_role("alert")
        expect(alert).to_be_visible()
        expect(page).to_have_url(re.compile(LOGIN_NEXT))
        expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
        # The form comes back empty: it does not echo the name it was given either.
        expect(page.get_by_label("User name")).to_have_value("")
        # Whitespace normalised: innerText's line breaks depend on whether the stylesheet has
        # been applied yet, which is not what this test is about.
        main = " ".join(page.locator("main").inner_text().split())
        return posted.value.status, alert.inner_text(), main

    wrong_password = attempt("admin", "not the right password")
    tab.screenshot(tmp_path, "console-sign-in-failed.png")
    wrong_user = attempt("nobody-here", "not the right password")
    assert wrong_password[0] == wrong_user[0] == 401
    assert wrong_password[1] == "Wrong user name or password."
    assert wrong_password == wrong_user

    # Still signed out: the fleet is behind the sign-in page.
    page.goto(base + "/")
    expect(page).to_have_url(re.compile(LOGIN_NEXT))
    # The only errors are chromium reporting the two 401 responses.
    rejected = r"status of 401 \(UNAUTHORIZED\) \(http://127\.0\.0\.1:\d+/login\?next="
    assert tab.problems(allow=(rejected,)) == []


def publish_past_samples(broker_port: int, device_id: str, now_ms: int) -> int:
    """A day of earlier samples on the device's telemetry topic, as an agent's backlog arrives.

    Every 5 minutes from 24 h ago, every 20 s in the last hour, nothing from 10 h to 8 h ago (a
    gap the charts must show). Their seqs are far above the agent's own, so the console's
    acknowledgements of them mark nothing in the agent's outbox.
    """
    stamps = [now_ms - m * 60_000 for m in range(24 * 60, 60, -5) if not 8 * 60 <= m <= 10 * 60]
    stamps += [now_ms - s * 1000 for s in range(3600, 10, -20)]
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-backlog", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", broker_port)
    pub.loop_start()
    try:
        for i, ts in enumerate(stamps):
            hour = ts / 3_600_000
            metrics = {"cpu_pct": round(30 + 25 * math.sin(hour), 1),
                       "mem_pct": round(42 + 3 * math.sin(hour / 3), 1),
                       "disk_pct": 22.0 + i / len(stamps),
                       "temp_c": round(48 + 4 * math.sin(hour / 2), 1)}
            info = pub.publish(f"edge/v1/dev/{device_id}/tele",
                               payloads.telemetry(1_000_000 + i, ts, metrics), qos=1)
        info.wait_for_publish(10)
    finally:
        pub.loop_stop()
        pub.disconnect()
    return len(stamps)


def test_device_page_opens_from_the_fleet_and_changes_range_without_a_reload(
        broker, appliance_config, console_config, start, open_tab, tmp_path):
    base = start_console(console_config, start)
    start(appliance_config("school-device"), "agent")
    # Messages published before ingest subscribes reach nobody: wait for it, on a loaded machine.
    wait_for(lambda: fleet(console_config)["ingest"]["broker_connected"], what="ingest connected")
    sent = publish_past_samples(broker.port, "school-device", int(time.time() * 1000))
    console_db = config_module.load(console_config).console_database_path

    def stored() -> bool:
        db = open_db(console_db)
        try:
            return db.execute("SELECT count(*) FROM health WHERE ts < ?",
                              [int(time.time() * 1000) - 10_000]).fetchone()[0] >= sent
        finally:
            db.conn.close()

    wait_for(stored, what="the past samples stored")

    tab = open_tab(**LAPTOP)
    page = tab.page
    page.clock.install()  # timers run on their own, and can be fast-forwarded to the next refresh
    sign_in(page, base)
    expect(page).to_have_url(base + "/")
    row = page.locator('#fleet tr[data-device="school-device"]')
    expect(row.locator("td.state")).to_have_text(re.compile(r"^\s*online"), timeout=LIVE_TIMEOUT_MS)
    link = row.get_by_role("link", name="School Device")
    expect(link).to_have_attribute("href", "/device/school-device")  # built by fleet.js
    link.click()

    expect(page).to_have_url(base + "/device/school-device")
    expect(page.get_by_role("heading", level=1)).to_have_text("School Device")
    expect(page.locator("#dev-state")).to_have_text("online")
    expect(page.locator("#dev-agent")).to_have_text(re.compile(r"^\d+\.\d+"))
    expect(page.locator("#dev-interval")).to_have_text("0.5 s")
    # device.js formatted the current figures (the server renders bare numbers).
    expect(page.locator('#figures dd[data-metric="cpu_pct"]')).to_have_text(re.compile(r"^\d+ %$"))
    expect(page.get_by_role("button", name="24 h")).to_have_attribute("aria-pressed", "true")
    # The agent's summary panel, drawn from its spec; summaries.js writes times locally.
    summary = page.locator('.summary[data-section="agent"]')
    expect(summary.get_by_role("heading")).to_have_text("Reporting")
    expect(summary.locator("[data-asof]")).to_have_text(re.compile(r"^Reported .* \(just now\)$"))

    # 24 h: the past day drawn as lines, broken at the 2-hour gap.
    cpu = page.locator("#chart-cpu svg")
    expect(cpu).to_have_count(1)
    # Auto-waiting: the chart may be drawn empty first and filled when the history arrives.
    expect(cpu.locator("polyline.series").nth(1)).to_be_attached()
    point = r"\d+(\.\d+)?,\d+(\.\d+)?"
    assert re.fullmatch(rf"{point}( {point})+", cpu.locator("polyline.series").first.get_attribute("points"))
    expect(page.locator("#chart-cpu .stats")).to_have_text(
        re.compile(r"^latest \d+(\.\d+)? % · min \d+(\.\d+)? · max \d+(\.\d+)?$"))
    expect(cpu.locator("text.axis")).to_have_text(["0", "50", "100", "24 h ago", "12 h ago", "now"])
    expect(page.locator("#chart-temp .stats")).to_contain_text("°C")
    expect(page.locator("#history-status")).to_contain_text("Last 24 h, averaged per 6 min")

    tab.screenshot(tmp_path, "console-device-24h.png")

    time_origin = page.evaluate("performance.timeOrigin")
    page.evaluate("window.__marker = 1")
    one_hour = "/api/device/school-device/history?hours=1"
    with page.expect_response(lambda r: r.url.endswith(one_hour)) as answer:
        page.get_by_role("button", name="1 h").click()
    assert answer.value.status == 200
    expect(page.get_by_role("button", name="1 h")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("button", name="24 h")).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#history-status")).to_contain_text("Last 1 h, averaged per 15 s")
    expect(cpu.locator("text.axis")).to_have_text(["0", "50", "100", "1 h ago", "30 min ago", "now"])
    expect(cpu.locator("polyline.series, circle.series").first).to_be_visible()
    expect(page).to_have_url(base + "/device/school-device?hours=1")  # remembered, not reloaded
    assert page.evaluate("window.__marker") == 1
    assert page.evaluate("performance.timeOrigin") == time_origin
    tab.screenshot(tmp_path, "console-device.png")

    # Every 30 s the page asks again, for the range shown, and for the current state.
    with page.expect_response(lambda r: r.url.endswith(one_hour)) as again, \
            page.expect_response(lambda r: r.url.endswith("/api/fleet")) as fleet_again, \
            page.expect_response(lambda r: r.url.endswith("/summaries")) as summaries_again:
        page.clock.fast_forward(31_000)
    assert again.value.status == fleet_again.value.status == summaries_again.value.status == 200
    assert page.evaluate("window.__marker") == 1

    # ... and the summary panel too.
    expect(summary.locator('dd[data-field="clock"]')).to_have_text("synced")
    expect(summary.locator('dd[data-field="backlog"]')).to_have_text(re.compile(r"^\d+$"))
    expect(summary.locator("[data-asof]")).to_have_text(re.compile(r"^Reported .* \(just now\)$"))

    # At a phone's width the page stays readable: no sideways scrolling, charts redrawn to fit.
    page.set_viewport_size(PHONE["viewport"])
    expect(cpu).to_have_attribute("width", re.compile(r"^[23]\d\d$"))
    assert no_sideways_scroll(page)
    tab.screenshot(tmp_path, "console-device-narrow.png")

    assert tab.problems() == []


def test_console_speaks_russian_in_the_scripts_too_and_the_switch_goes_back_to_english(
        appliance_config, console_config, start, open_tab, tmp_path):
    base = start_console(console_config, start)
    start(appliance_config("school-russian"), "agent")
    # A Russian browser: Accept-Language ru-RU, and Intl formats like Russian.
    tab = open_tab(**LAPTOP, locale="ru-RU")
    page = tab.page
    page.goto(base + "/")
    expect(page.locator("html")).to_have_attribute("lang", "ru")
    expect(page.get_by_role("heading", name="Вход")).to_be_visible()
    page.get_by_label("Имя пользователя").fill("admin")
    page.get_by_label("Пароль").fill(PASSWORD)
    page.get_by_role("button", name="Вход").click()
    expect(page).to_have_url(base + "/")
    # Written by fleet.js from the JSON catalog.
    expect(page.locator("#live")).to_have_text("в реальном времени")
    row = page.locator('#fleet tr[data-device="school-russian"]')
    expect(row.locator("td.state")).to_have_text(re.compile(r"^\s*в сети"), timeout=LIVE_TIMEOUT_MS)
    expect(row.locator('td[data-metric="cpu_pct"]')).to_have_text(re.compile(r"^\d+ %$"))
    row.get_by_role("link", name="School Russian").click()
    expect(page.locator("#dev-state")).to_have_text("в сети")
    expect(page.locator("#dev-interval")).to_have_text("0,5 с")  # decimal comma from Intl
    expect(page.locator("#history-status")).to_contain_text("Последние 24 ч, среднее за")
    expect(page.locator("#chart-cpu svg text.axis")).to_have_text(
        ["0", "50", "100", "24 ч назад", "12 ч назад", "сейчас"])
    tab.screenshot(tmp_path, "console-device-ru.png")

    page.get_by_role("link", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#dev-state")).to_have_text("online")
    page.goto(base + "/")  # the cookie, not the query, keeps English from now on
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    expect(page.locator("#live")).to_have_text("live")
    assert tab.problems() == []


def test_portal_switches_to_udmurt_on_a_phone(appliance_config, start, open_tab, tmp_path):
    cfg_path = appliance_config("school-udm")
    cfg = config_module.load(cfg_path)
    base = f"http://127.0.0.1:{cfg.portal.port}"
    start(cfg_path, "portal")
    wait_for(lambda: http_ok(base + "/healthz"), what="portal up")
    from appliance.content import library, schema
    from appliance.content.store import ContentStore
    from appliance.store import migrate, open_db

    db = open_db(cfg.database_path)
    migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    library.add_zim(ContentStore(cfg.content.root, db), (SHARED / "data" / "zim" / "small.zim"))
    db.conn.close()
    tab = open_tab(**PHONE)
    page = tab.page
    page.goto(base + "/")
    expect(page.get_by_role("heading", level=2)).to_have_text("In the library")
    page.get_by_role("link", name="Удмурт кыл").click()
    expect(page.locator("html")).to_have_attribute("lang", "udm")
    expect(page.get_by_role("heading", level=2)).to_have_text("Библиотекаын")
    expect(page.locator("ul.resources .meta")).to_contain_text("архив, 41 кБ")
    assert no_sideways_scroll(page)
    tab.screenshot(tmp_path, "portal-udm-phone.png")
    assert tab.problems() == []
