"""Sign-in to a course on the portal: against the replayed Moodle, offline, over HTTPS only."""

from __future__ import annotations

import dataclasses
import datetime
import http.client
import ipaddress
import logging
import re
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.config import from_dict
from appliance.fleet.broker import free_port
from appliance.harness.process import wait_for, write_config
from appliance.moodle.portal_views import may_see
from appliance.moodle.replay import Pupil, ReplayMoodle
from appliance.portal.app import create_app
from tests.integration.moodle.test_sync import DATA, Rig

pytestmark = pytest.mark.integration

HTTPS = "https://classroom.internal:8443"
PUPIL, PUPIL_PW = "pupil7", "Pupil#Pass1"  # enrolled in course 2
OTHER, OTHER_PW = "other7", "Other#Pass1"  # enrolled in course 3 only


def self_signed(directory, names=("classroom.internal",), ips=("127.0.0.1",)):
    """A certificate for the portal and its key, made here (never a file shipped with the tests)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    sans = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "portal.crt", directory / "portal.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert_file, key_file


@pytest.fixture
def replay():
    with ReplayMoodle(DATA / "state1") as server:
        server.users[PUPIL] = Pupil(PUPIL_PW, 40, (2,))
        server.users[OTHER] = Pupil(OTHER_PW, 41, (3,))
        yield server


def config_data(tmp_path, replay_url, **moodle):
    cert, key = self_signed(tmp_path)
    (tmp_path / "pw").write_text("Sync#Bot2024\n")
    (tmp_path / "pw").chmod(0o600)
    return {
        "appliance": {"id": "t", "state_dir": str(tmp_path / "state")},
        "content": {"root": str(tmp_path / "library")},
        "portal": {"https_port": 8443},
        "network": {"tls_cert": str(cert), "tls_key": str(key)},
        "moodle": {"url": replay_url, "username": "syncbot", "password_file": str(tmp_path / "pw"),
                   "min_free_mb": 0, "signin_courses": [2], **moodle},
    }


@pytest.fixture
def cfg(tmp_path, replay):
    return from_dict(config_data(tmp_path, replay.url))


@pytest.fixture
def synced(cfg, replay):
    rig = Rig(cfg, replay)
    assert rig.sync().ok
    rig.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return rig


def logins(replay):
    return sum(1 for label, _ in replay.log if label == "/login/token.php")


class Browser:
    """A phone on the hotspot: one cookie jar for both origins, a client address of its own."""

    def __init__(self, cfg, address="10.42.0.50"):
        self.client = create_app(cfg).test_client()
        self.address = address

    def get(self, path, https=True):
        return self.client.get(path, base_url=HTTPS if https else "http://classroom.internal",
                               environ_base={"REMOTE_ADDR": self.address})

    def csrf(self, cid=2):
        page = self.get(f"/moodle/signin/{cid}")
        assert page.status_code == 200
        return re.search(r'name="csrf_token" value="([^"]+)"', page.data.decode()).group(1)

    def signin(self, username, password, cid=2, https=True, csrf=True, nxt=""):
        data = {"username": username, "password": password}
        if csrf:
            data["csrf_token"] = self.csrf(cid)
        query = f"?next={nxt}" if nxt else ""
        return self.client.post(f"/moodle/signin/{cid}{query}", data=data,
                                base_url=HTTPS if https else "http://classroom.internal",
                                environ_base={"REMOTE_ADDR": self.address})


def test_a_signin_course_is_sent_to_the_https_form_and_an_open_one_is_not(synced, cfg, replay):
    phone = Browser(cfg)
    assert phone.get("/moodle/course/3", https=False).status_code == 200  # open course
    for path in ("/moodle/course/2", "/moodle/course/2/m/7", "/moodle/course/2/m/7/chapter/2",
                 "/moodle/course/2/m/8/file/x.pdf", "/moodle/course/2/go/2"):
        for https in (False, True):
            r = phone.get(path, https=https)
            assert r.status_code == 303, (path, https)
            assert r.headers["Location"] == f"{HTTPS}/moodle/signin/2?next={path}", path
    index = phone.get("/moodle/", https=False).data.decode()
    assert "Sign-in required" in index
    # The form is never served over plain HTTP, and a password sent there is not read.
    form = phone.get("/moodle/signin/2", https=False)
    assert form.status_code == 303 and form.headers["Location"] == f"{HTTPS}/moodle/signin/2"
    before = logins(replay)
    r = phone.signin(PUPIL, PUPIL_PW, https=False, csrf=False)
    assert r.status_code == 403 and b"secure connection" in r.data
    assert logins(replay) == before
    # Search names the course's pages to no stranger.
    assert b"/moodle/course/2/" not in phone.get("/search?q=хлоропласт", https=False).data
    assert b"/moodle/course/2/" not in phone.get("/search?q=хлоропласт").data
    with create_app(cfg).test_request_context(base_url=HTTPS):
        for hidden in ("/moodle/course/2", "/moodle/course/2#m-5", "/moodle/course/2/m/7/chapter/2"):
            assert not may_see(hidden), hidden
        assert may_see("/moodle/course/3#m-15") and may_see("/moodle/course/22") and may_see("/moodle/")


def test_right_password_and_enrolled_shows_the_course_and_keeps_no_token(synced, cfg, replay, caplog):
    caplog.set_level(logging.DEBUG)
    phone = Browser(cfg)
    r = phone.signin(PUPIL, PUPIL_PW, nxt="/moodle/course/2/m/7")
    assert r.status_code == 303 and r.headers["Location"] == "/moodle/course/2/m/7"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("__Host-portal_signin=")
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in cookie, flag
    assert "Domain" not in cookie and "Expires=" in cookie
    assert phone.get("/moodle/course/2").status_code == 200
    assert phone.get("/moodle/course/2/m/7/chapter/2").status_code == 200
    page = phone.get("/moodle/course/2/m/7")
    assert page.status_code == 200 and "private" in page.headers["Cache-Control"]
    assert b"/moodle/course/2/m/7/chapter/2" in phone.get("/search?q=хлоропласт").data
    assert b"Signed in as pupil7" in phone.get("/moodle/").data
    # The pupil's Moodle token was used and is kept nowhere: not in the database, logs or cookie.
    tokens = [t for t, name in replay.user_tokens.items() if name == PUPIL]
    assert tokens
    synced.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    stored = cfg.database_path.read_bytes()
    for secret in (*tokens, PUPIL_PW):
        assert secret.encode() not in stored and secret not in caplog.text and secret not in cookie
    # Signing out ends it.
    index = phone.get("/moodle/").data.decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', index).group(1)
    assert phone.client.post("/moodle/signout", data={"csrf_token": token}, base_url=HTTPS).status_code == 303
    assert phone.get("/moodle/course/2").status_code == 303


def test_wrong_password_and_not_enrolled_are_refused(synced, cfg):
    phone = Browser(cfg)
    r = phone.signin(PUPIL, "wrong")
    assert r.status_code == 401 and b"Wrong username or password" in r.data
    assert phone.get("/moodle/course/2").status_code == 303
    r = phone.signin(OTHER, OTHER_PW)
    assert r.status_code == 403 and b"not enrolled" in r.data
    assert phone.get("/moodle/course/2").status_code == 303


def test_a_form_without_its_csrf_token_is_refused(synced, cfg, replay):
    phone = Browser(cfg)
    before = logins(replay)
    assert phone.signin(PUPIL, PUPIL_PW, csrf=False).status_code == 400
    phone.csrf()  # the session has a token now: a wrong one is refused too
    r = phone.client.post("/moodle/signin/2", data={"username": PUPIL, "password": PUPIL_PW,
                                                    "csrf_token": "forged"}, base_url=HTTPS)
    assert r.status_code == 400 and logins(replay) == before


def test_offline_signin_works_for_a_known_account_only_and_expires(synced, cfg, replay):
    assert Browser(cfg).signin(PUPIL, PUPIL_PW).status_code == 303  # online once
    # Moodle unreachable: nothing listens on the configured URL any more.
    down = dataclasses.replace(cfg, moodle=dataclasses.replace(cfg.moodle, url=f"http://127.0.0.1:{free_port()}"))
    phone = Browser(down, "10.42.0.60")
    r = phone.signin(PUPIL, PUPIL_PW)
    assert r.status_code == 303 and phone.get("/moodle/course/2").status_code == 200
    assert Browser(down, "10.42.0.61").signin(PUPIL, "wrong").status_code == 401
    r = Browser(down, "10.42.0.62").signin(OTHER, OTHER_PW)  # never signed in here
    assert r.status_code == 401 and b"cannot be reached" in r.data
    # 15 days later the hash is past offline_signin_days (14): refused, and deleted.
    synced.db.execute("UPDATE moodle_signins SET signed_in_at = signed_in_at - 15 * 86400")
    assert Browser(down, "10.42.0.63").signin(PUPIL, PUPIL_PW).status_code == 401
    assert synced.db.execute("SELECT count(*) FROM moodle_signins").fetchone()[0] == 0


def test_rate_limits_per_account_and_device_hold_before_moodle_is_asked(synced, cfg, replay):
    for i in range(5):  # [moodle] signin_account_failures, from five devices
        assert Browser(cfg, f"10.42.0.{100 + i}").signin(PUPIL, "wrong").status_code == 401
    before = logins(replay)
    r = Browser(cfg, "10.42.0.99").signin(PUPIL, PUPIL_PW)
    assert r.status_code == 429 and logins(replay) == before
    # Another account is not held by the pupil's failures...
    assert Browser(cfg, "10.42.0.99").signin(OTHER, OTHER_PW).status_code == 403  # not enrolled
    # ...but one device guessing many accounts is held after signin_device_failures (10).
    phone = Browser(cfg, "10.42.0.77")
    for i in range(10):
        assert phone.signin(f"guess{i}", "x").status_code == 401
    before = logins(replay)
    assert phone.signin(OTHER, OTHER_PW).status_code == 429
    assert logins(replay) == before


def test_the_portal_serves_the_signin_over_its_own_https_listener(tmp_path, replay, start):
    data = config_data(tmp_path, replay.url)
    port, tls_port, archive = free_port(), free_port(), free_port()
    data["portal"] = {"listen": "127.0.0.1", "port": port, "https_port": tls_port, "workers": 1}
    data["content"]["archive_port"] = archive
    path = write_config(tmp_path / "appliance.toml", **data)
    cfg = from_dict(data)
    rig = Rig(cfg, replay)
    assert rig.sync().ok
    rig.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    start(path, "portal")
    context = ssl.create_default_context(cafile=data["network"]["tls_cert"])

    def get(path, tls=True):
        conn = (http.client.HTTPSConnection("127.0.0.1", tls_port, context=context, timeout=5) if tls
                else http.client.HTTPConnection("127.0.0.1", port, timeout=5))
        try:
            conn.request("GET", path, headers={"Host": "classroom.internal"})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def up():
        try:
            return get("/healthz", tls=False)[0] == 200 and get("/healthz")[0] == 200
        except OSError:
            return False

    wait_for(up, timeout=20, what="portal on HTTP and HTTPS")
    status, headers, _ = get("/moodle/course/2", tls=False)
    assert status == 303
    assert headers["Location"] == f"https://classroom.internal:{tls_port}/moodle/signin/2?next=/moodle/course/2"
    status, headers, body = get("/moodle/signin/2")
    assert status == 200 and b'name="password"' in body
    assert "Secure" in headers["Set-Cookie"] and headers["Set-Cookie"].startswith("__Host-")
    status, _, body = get("/moodle/signin/2", tls=False)
    assert status == 303
    # The plain listener does not speak TLS, and the TLS one does not speak plain HTTP.
    with pytest.raises(ssl.SSLError):
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
        conn.request("GET", "/healthz")
    assert get("/moodle/course/3", tls=False)[0] == 200
