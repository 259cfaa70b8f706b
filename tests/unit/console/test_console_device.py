"""The device page and its history API: access, ids, the hours parameter, bucketing, content."""

import json
import re
import time

import pytest

from appliance.console import records, summaries
from appliance.console.app import create_app
from appliance.console.auth import set_password
from appliance.console.ingest import Ingest
from appliance.fleet import payloads
from appliance.store import open_db

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def app(cfg):
    app = create_app(cfg)
    set_password(open_db(cfg.console_database_path), "admin", PASSWORD)
    return app


@pytest.fixture
def ingest(cfg):
    """An ingest worker fed by hand, its clock at the real time (the web app uses time.time())."""
    worker = Ingest(cfg, open_db(cfg.console_database_path), clock=Clock(time.time()))
    records.set_ingest_state(worker.db, heartbeat=worker.clock(), broker_connected=1)
    return worker


@pytest.fixture
def client(app):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": csrf})
    assert response.status_code == 302
    return client


def birth(ingest, ident="pi-7", name="Room 7", agent="1.2.3", interval=60.0):
    assert ingest.handle(f"edge/v1/dev/{ident}/status", payloads.birth(1, 1, agent, name, interval))


def sample(ingest, ts_ms, seq, ident="pi-7", **metrics):
    assert ingest.handle(f"edge/v1/dev/{ident}/tele", payloads.telemetry(seq, ts_ms, metrics))


def test_both_routes_need_sign_in(app, ingest):
    birth(ingest)
    client = app.test_client()
    response = client.get("/device/pi-7")
    assert response.status_code == 302 and response.location.endswith("/login?next=/device/pi-7")
    response = client.get("/api/device/pi-7/history")
    assert response.status_code == 401 and response.get_json() == {"error": "sign in required"}


@pytest.mark.parametrize("path", ["/device/nope-1", "/device/../x", "/device/A%20B", "/device/A B",
                                  "/device/pi-7/more", "/device/-pi"])
def test_unknown_or_invalid_device_is_a_404_page(client, ingest, path):
    birth(ingest)
    response = client.get(path)
    assert response.status_code == 404
    page = response.get_data(as_text=True)
    assert "Unknown appliance" in page and "← Fleet" in page  # the console's page, not Flask's
    assert "device.js" not in page


@pytest.mark.parametrize("ident", ["nope-1", "..%2Fx", "A%20B", "pi-7/more"])
def test_unknown_or_invalid_device_history_is_a_404(client, ingest, ident):
    birth(ingest)
    response = client.get(f"/api/device/{ident}/history")
    assert response.status_code == 404 and response.get_json() == {"error": "unknown device"}


@pytest.mark.parametrize("hours", ["0", "169", "abc", "", "-1", "1.5", "+5", "024x", "1000"])
def test_bad_hours_are_a_400_naming_the_parameter(client, ingest, hours):
    birth(ingest)
    response = client.get(f"/api/device/pi-7/history?hours={hours}")
    assert response.status_code == 400
    body = response.get_json()
    assert body["parameter"] == "hours" and "hours" in body["error"]


@pytest.mark.parametrize("hours", [1, 24, 168])
def test_history_has_at_most_240_points_whatever_the_range(client, ingest, hours):
    birth(ingest)
    now_ms = int(ingest.clock() * 1000)
    span_ms = hours * 3600 * 1000
    bucket_ms = span_ms // 240
    # Two samples per bucket over the range and a bucket beyond: more samples than points allowed.
    for i in range(2 * 240 + 4):
        sample(ingest, now_ms - i * bucket_ms // 2, 100_000 - i, cpu_pct=float(i % 100), mem_pct=50.0)
    response = client.get(f"/api/device/pi-7/history?hours={hours}")
    assert response.status_code == 200
    body = response.get_json()
    assert body["device"] == "pi-7" and body["bucket_ms"] == bucket_ms
    assert 239 <= len(body["points"]) <= 240  # every bucket has data, and no more than 240
    assert span_ms - bucket_ms < body["to"] - body["from"] <= span_ms
    starts = [p[0] for p in body["points"]]
    assert starts == sorted(set(starts))
    assert all(body["from"] <= s <= body["to"] and s % bucket_ms == 0 for s in starts)
    assert all(len(p) == 5 and p[2] == 50.0 and p[4] is None for p in body["points"])


def test_history_defaults_to_24_hours(client, ingest):
    birth(ingest)
    body = client.get("/api/device/pi-7/history").get_json()
    assert body["bucket_ms"] == 24 * 3600 * 1000 // 240 and body["points"] == []


def test_bucket_averages_and_missing_metrics(cfg, ingest):
    birth(ingest)
    db = ingest.db
    bucket_ms = 6 * 60_000  # 24 h / 240
    now = 1_800_000_000.0  # a bucket boundary: 5_000_000 buckets since the epoch
    start = int(now * 1000) - 10 * bucket_ms
    sample(ingest, start + 1_000, 1, cpu_pct=10.0, mem_pct=40.0, disk_pct=20.0, temp_c=50.0)
    sample(ingest, start + 2_000, 2, cpu_pct=20.0, mem_pct=41.0, disk_pct=20.0)
    sample(ingest, start + 3_000, 3, cpu_pct=60.0, mem_pct=42.0, disk_pct=20.0, temp_c=52.0)
    sample(ingest, start + 2 * bucket_ms, 4, cpu_pct=5.0)  # two buckets later, CPU only
    sample(ingest, start - 25 * 3600 * 1000, 5, cpu_pct=99.0)  # older than 24 h: not included
    history = records.device_history(db, "pi-7", now, 24)
    assert history["points"] == [
        [start, 30.0, 41.0, 20.0, 51.0],
        [start + 2 * bucket_ms, 5.0, None, None, None],
    ]
    assert history["to"] == int(now * 1000) and history["bucket_ms"] == bucket_ms
    assert records.device_history(db, "nobody", now, 24) is None
    with pytest.raises(ValueError, match="hours"):
        records.device_history(db, "pi-7", now, 169)


def test_device_is_the_snapshot_entry_plus_its_details(ingest):
    birth(ingest)
    now = ingest.clock()
    sample(ingest, int(now * 1000) - 5_000, 1, cpu_pct=12.0, mem_pct=30.0)
    entry = next(d for d in records.snapshot(ingest.db, now)["devices"] if d["id"] == "pi-7")
    one = records.device(ingest.db, "pi-7", now)
    assert {k: v for k, v in one.items() if k in entry} == entry
    assert set(one) - set(entry) == {"first_seen", "interval", "has_temp"}
    assert one["interval"] == 60.0 and one["has_temp"] is False and one["state"] == "online"
    assert records.device(ingest.db, "nobody", now) is None


def test_page_shows_the_device_and_its_charts_without_temperature(client, ingest):
    birth(ingest, name="Lincoln <Elementary>", agent="0.9.1")
    sample(ingest, int(ingest.clock() * 1000), 1, cpu_pct=12.0, mem_pct=30.0, disk_pct=22.0)
    response = client.get("/device/pi-7")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Lincoln &lt;Elementary&gt;" in page and "<Elementary>" not in page.split("<script")[0]
    assert ">0.9.1<" in page and "<code>pi-7</code>" in page
    assert ">online<" in page and "60 s" in page
    for chart in ("chart-cpu", "chart-mem", "chart-disk"):
        assert f'id="{chart}"' in page
    assert 'id="chart-temp"' not in page
    assert 'src="/static/device.js"' in page
    # Data for the script is a JSON block, not an inline script.
    block = r'<script type="application/json" id="device-initial">\{.*"agent_version": "0.9.1"'
    assert re.search(block, page)
    assert 'data-hours="1"' in page and 'data-hours="168"' in page


def test_temperature_chart_when_the_device_reported_one(client, ingest):
    birth(ingest)
    now_ms = int(ingest.clock() * 1000)
    sample(ingest, now_ms - 60_000, 1, cpu_pct=1.0, temp_c=48.5)
    sample(ingest, now_ms, 2, cpu_pct=1.0)  # the newest sample lacks it: still charted
    assert 'id="chart-temp"' in client.get("/device/pi-7").get_data(as_text=True)


def test_page_shows_the_shown_state_and_reason(client, ingest):
    birth(ingest)
    assert ingest.handle("edge/v1/dev/pi-7/status", payloads.will(1))
    page = client.get("/device/pi-7").get_data(as_text=True)
    assert 'class="device offline"' in page and "connection lost" in page


def test_fleet_page_links_each_name_to_its_device_page(client, ingest):
    birth(ingest)
    page = client.get("/").get_data(as_text=True)
    assert '<a class="name" href="/device/pi-7">Room 7</a>' in page


# -- capability summaries ------------------------------------------------------------------------

def agent_summary(ingest, ident="pi-7", clock="synced", **values):
    section = {"backlog": 1234, "oldest_unacked": 1_767_225_600_000, "last_ack": None,
               "unsynced": 0, "clock": "synced", **values}
    body = {"v": 1, "ts": 1_767_225_600_000, "clock": clock, "s": {"agent": section}}
    assert ingest.handle(f"edge/v1/dev/{ident}/summary", json.dumps(body).encode())


def panel(page, name):
    match = re.search(rf'<section class="card summary" data-section="{name}">(.*?)</section>', page, re.S)
    assert match, f"no {name} panel"
    return match.group(1)


def test_page_shows_a_panel_per_summary_drawn_from_its_spec(client, ingest):
    birth(ingest)
    agent_summary(ingest)
    page = client.get("/device/pi-7").get_data(as_text=True)
    agent = panel(page, "agent")
    assert "<h2>Reporting</h2>" in agent
    assert ('<dt>Samples not yet stored by the console</dt><dd data-field="backlog">1,234</dd>'
            in agent)
    assert '<dd data-field="oldest_unacked">2026-01-01 00:00 UTC</dd>' in agent
    assert f'<dd data-field="last_ack">{summaries.DASH}</dd>' in agent
    assert '<dd data-field="clock">synced</dd>' in agent
    assert "Reported " in agent and "not synchronised" not in agent
    assert 'src="/static/summaries.js"' in page
    initial = re.search(r'<script type="application/json" id="summaries-initial">(.*?)</script>', page, re.S)
    assert json.loads(initial.group(1))[0]["fields"][0]["value"] == 1234


def test_a_device_that_never_sent_a_summary_shows_the_panel_empty(client, ingest):
    birth(ingest)
    agent = panel(client.get("/device/pi-7").get_data(as_text=True), "agent")
    assert "Not reported yet" in agent and f'<dd data-field="backlog">{summaries.DASH}</dd>' in agent


def test_a_summary_from_an_unsynced_clock_says_so(client, ingest):
    birth(ingest)
    agent_summary(ingest, clock="unsynced", unsynced=3)
    agent = panel(client.get("/device/pi-7").get_data(as_text=True), "agent")
    assert "the appliance's clock is not synchronised" in agent
    assert '<dd data-field="unsynced">3</dd>' in agent


def test_summaries_api_returns_the_sections_and_needs_sign_in(app, client, ingest):
    birth(ingest)
    agent_summary(ingest, backlog=7)
    body = client.get("/api/device/pi-7/summaries").get_json()
    assert body["device"] == "pi-7"
    # One section per registered summary (the agent's first); only the agent's was reported.
    section = body["sections"][0]
    assert section["name"] == "agent" and section["synced"] is True
    assert "content" in [s["name"] for s in body["sections"]]
    assert "network" in [s["name"] for s in body["sections"]]
    assert {f["key"]: f["value"] for f in section["fields"]}["backlog"] == 7
    assert client.get("/api/device/nobody/summaries").status_code == 404
    assert client.get("/api/device/..%2Fx/summaries").status_code == 404
    assert app.test_client().get("/api/device/pi-7/summaries").status_code == 401


@pytest.mark.parametrize(("kind", "value", "shown"), [
    ("count", 1234567, "1,234,567"),
    ("bytes", 512, "512 B"),
    ("bytes", 1536, "1.5 KiB"),
    ("bytes", 5 * 1024**3, "5 GiB"),
    ("seconds", 42.25, "42.2 s"),
    ("seconds", 600, "10 min"),
    ("seconds", 3 * 3600 + 300, "3 h 5 min"),
    ("seconds", 3 * 86400 + 7200, "3 d 2 h"),
    ("timestamp", 0, "1970-01-01 00:00 UTC"),
    ("pct", 12.0, "12 %"),
    ("pct", 12.34, "12.3 %"),
    ("bool", True, "yes"),
    ("text", "<b>", "<b>"),  # escaped by the template, not here
    ("count", None, summaries.DASH),
])
def test_values_are_written_by_their_kind(kind, value, shown):
    assert summaries.text(kind, value) == shown


def test_history_counts_samples_with_an_untrusted_time(client, ingest):
    birth(ingest)
    now_ms = int(time.time() * 1000)
    assert ingest.handle("edge/v1/dev/pi-7/tele",
                         payloads.telemetry(1, now_ms - 60_000, {"cpu_pct": 5.0}, synced=False))
    sample(ingest, now_ms - 30_000, 2, cpu_pct=7.0)
    body = client.get("/api/device/pi-7/history?hours=1").get_json()
    assert body["unsynced"] == 1 and [p[1] for p in body["points"]] == [7.0]


def test_the_network_summary_has_its_panel(client, ingest):
    birth(ingest)
    section = {"stations": None, "leases": 3, "sessions": 2, "uplink": True, "portal_mode": "terms"}
    body = {"v": 1, "ts": 1_767_225_600_000, "clock": "synced", "s": {"network": section}}
    assert ingest.handle("edge/v1/dev/pi-7/summary", json.dumps(body).encode())
    network = panel(client.get("/device/pi-7").get_data(as_text=True), "network")
    assert "<h2>Classroom network</h2>" in network
    assert '<dt>Address leases</dt><dd data-field="leases">3</dd>' in network
    assert '<dt>Accepted devices</dt><dd data-field="sessions">2</dd>' in network
    assert f'<dd data-field="stations">{summaries.DASH}</dd>' in network
    assert '<dd data-field="portal_mode">terms</dd>' in network
