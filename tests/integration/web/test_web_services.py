"""Portal and console served by gunicorn over real sockets, as systemd runs them."""

import re
import subprocess
import sys
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

import pytest

from appliance import config as config_module
from appliance.harness.process import http_get, http_ok, wait_for

pytestmark = pytest.mark.integration


def test_portal_serves_the_landing_page(appliance_config, start):
    cfg_path = appliance_config("school-p")
    cfg = config_module.load(cfg_path)
    base = f"http://127.0.0.1:{cfg.portal.port}"
    start(cfg_path, "portal")
    wait_for(lambda: http_ok(base + "/healthz"), what="portal up")
    status, body = http_get(base + "/")
    assert status == 200
    assert b"School P" in body and b"Nothing in the library yet" in body
    assert http_get(base + "/static/portal.css")[0] == 200
    assert http_get(base + "/login")[0] == 404


def test_console_serves_sign_in_and_the_fleet(console_config, start, tmp_path):
    cfg = config_module.load(console_config)
    base = f"http://127.0.0.1:{cfg.console.port}"
    subprocess.run([sys.executable, "-m", "appliance", "--config", str(console_config),
                    "set-password", "admin", "--password-stdin"],
                   input="a long enough password\n", text=True, check=True)
    start(console_config, "console")
    wait_for(lambda: http_ok(base + "/healthz"), what="console up")

    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(base + "/").read().decode()  # redirected to sign-in
    assert "Sign in" in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"username": "admin", "password": "a long enough password",
                                   "csrf_token": token}).encode()
    fleet = opener.open(base + "/login", data).read().decode()
    assert "Fleet" in fleet and "No appliance has reported yet" in fleet
    with opener.open(base + "/events", timeout=5) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert stream.readline() == b"retry: 2000\n"
        stream.readline()
        assert stream.readline() == b"event: fleet\n"
