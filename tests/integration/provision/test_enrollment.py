"""Enrollment end to end: a token from the console, `appliance enroll` on the Pi, the agent on a
mutual-TLS Mosquitto with the new certificate, and revocation through the broker's CRL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from appliance import config as config_module
from appliance.fleet.broker import BrokerTls, Mosquitto, free_port
from appliance.fleet.pki import CertificateAuthority
from appliance.fleet.session import tls_context
from appliance.fleet.topics import Topics
from appliance.harness.process import REPO, http_ok, wait_for, write_config
from tests.integration.fleet.test_fleet_loop import fleet, wait_state

pytestmark = pytest.mark.integration

CONSOLE_ID = "test-console"
INGEST = f"console-ingest-{CONSOLE_ID}"


def appliance(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", "--config", str(config), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60, input=stdin,
                          check=False)


class Site:
    """A console (web + ingest) whose fleet CA signs enrollments, and its TLS broker."""

    def __init__(self, tmp_path: Path, start, *, broker_names: tuple[str, ...] = (),
                 offline_after: float = 3.0) -> None:
        self.tmp, self.start = tmp_path, start
        self.broker_names = ("localhost", "127.0.0.1", *broker_names)
        state = tmp_path / "console" / "state"
        self.pki = state / "pki"
        self.mqtt_port, self.web_port = free_port(), free_port()
        self.config = write_config(
            tmp_path / "console" / "console.toml",
            appliance={"id": CONSOLE_ID, "state_dir": str(state)},
            mqtt={"host": "localhost", "port": self.mqtt_port, "tls": True, "keepalive": 2,
                  "ca_file": str(self.pki / "ca.crt"),
                  "cert_file": str(self.pki / f"{INGEST}.crt"),
                  "key_file": str(self.pki / f"{INGEST}.key")},
            console={"listen": "127.0.0.1", "port": self.web_port, "workers": 1,
                     "cookie_secure": False, "offline_after": offline_after},
        )
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.broker: Mosquitto | None = None

    def token(self, device: str, ttl: str = "1h") -> dict[str, str]:
        result = appliance(self.config, "enrollment-token", "--device", device, "--ttl", ttl,
                           "--json")
        assert result.returncode == 0, result.stderr
        data: dict[str, str] = json.loads(result.stdout)
        return data

    def run(self) -> None:
        """Start broker (with the CA's CRL), console web and ingest; the CA must exist."""
        ca = CertificateAuthority.open(self.pki)
        server = ca.issue("broker", server_names=self.broker_names)
        ca.issue(INGEST)
        self.broker = Mosquitto(
            self.tmp / "broker", port=self.mqtt_port,
            tls=BrokerTls(ca.ca_file, server.cert, server.key,
                          acl=Topics().broker_acl([INGEST]), crl_file=ca.crl_file)).start()
        self.start(self.config, "console")
        self.start(self.config, "ingest")
        wait_for(lambda: http_ok(f"{self.url}/healthz"), what="console web")
        wait_for(lambda: fleet(self.config)["ingest"]["broker_connected"], timeout=40,
                 what="ingest on TLS")

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()


@pytest.fixture
def site(tmp_path, start):
    s = Site(tmp_path, start)
    yield s
    s.stop()


def pi_config(tmp_path: Path, ident: str, port: int) -> Path:
    tls = tmp_path / ident / "tls"
    return write_config(
        tmp_path / ident / "appliance.toml",
        appliance={"id": ident, "state_dir": str(tmp_path / ident / "state")},
        mqtt={"host": "localhost", "port": port, "tls": True, "keepalive": 2,
              "ca_file": str(tls / "ca.crt"), "cert_file": str(tls / "appliance.crt"),
              "key_file": str(tls / "appliance.key")},
        agent={"interval": 0.5, "backoff_max": 1.0},
    )


def connects(config: Path, timeout: float = 5.0) -> bool:
    """Whether the broker accepts a connection with this config's certificate (CONNACK 0)."""
    cfg = config_module.load(config)
    accepted = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg.appliance.id,
                         protocol=mqtt.MQTTv5)
    client.tls_set_context(tls_context(cfg.mqtt))
    client.on_connect = lambda c, u, f, reason, p: reason == 0 and accepted.set()
    try:
        client.connect("localhost", cfg.mqtt.port)
    except OSError:
        return False
    client.loop_start()
    try:
        return accepted.wait(timeout)
    finally:
        client.loop_stop()
        client.disconnect()


def test_a_pi_enrolls_reports_and_is_shut_out_once_revoked(tmp_path, site, start):
    issued = site.token("school-e2e")
    site.run()
    pi = pi_config(tmp_path, "school-e2e", site.mqtt_port)
    result = appliance(pi, "enroll", "--console", site.url, "--token", "-",
                       "--ca-fingerprint", issued["ca_fingerprint"], "--json",
                       stdin=issued["token"] + "\n")
    assert result.returncode == 0, result.stderr
    enrolled = json.loads(result.stdout)
    tls = tmp_path / "school-e2e" / "tls"
    assert (tls / "appliance.key").stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((tls / "appliance.crt").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "school-e2e"
    assert enrolled["serial"] == format(cert.serial_number, "x")
    assert (tls / "ca.crt").read_bytes() == (site.pki / "ca.crt").read_bytes()

    # The agent connects to the mutual-TLS broker with it and the console stores it.
    agent = start(pi, "agent")
    wait_state(site.config, "school-e2e", "online")

    # The same token a second time is refused, and nothing is overwritten.
    again = appliance(pi, "enroll", "--console", site.url, "--token", issued["token"])
    assert again.returncode == 1
    assert "already used" in again.stderr
    assert issued["token"] not in again.stderr
    assert x509.load_pem_x509_certificate((tls / "appliance.crt").read_bytes()) == cert

    # Revoked: the broker, restarted with the new CRL, refuses the Pi, not the console.
    revoked = appliance(site.config, "revoke-device", "school-e2e", "--json")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout)["revoked_serials"] == [enrolled["serial"]]
    agent.stop()
    site.broker.restart()
    wait_for(lambda: fleet(site.config)["ingest"]["broker_connected"], timeout=20,
             what="ingest back on the broker with the CRL")
    before = site.broker.log.read_text()
    assert not connects(pi)
    # Mosquitto does not log why; OpenSSL's verdict for this certificate is "revoked".
    after = site.broker.log.read_text()[len(before):]
    assert "certificate verify failed" in after
    crl = x509.load_pem_x509_crl((site.pki / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


def test_expired_and_foreign_tokens_and_a_wrong_fingerprint_are_refused(tmp_path, site):
    short = site.token("school-late", ttl="1s")
    site.run()
    time.sleep(1.2)
    pi = pi_config(tmp_path, "school-late", site.mqtt_port)
    expired = appliance(pi, "enroll", "--console", site.url, "--token", short["token"])
    assert expired.returncode == 1
    assert "expired" in expired.stderr

    other = site.token("school-other")
    foreign = appliance(pi, "enroll", "--console", site.url, "--token", other["token"])
    assert foreign.returncode == 1
    assert "unknown enrollment token" in foreign.stderr

    fresh = site.token("school-late")
    wrong = appliance(pi, "enroll", "--console", site.url, "--token", fresh["token"],
                      "--ca-fingerprint", "00" * 32)
    assert wrong.returncode == 1
    assert "fingerprint" in wrong.stderr
    assert not (tmp_path / "school-late" / "tls").exists()


def test_an_unreachable_console_says_so_and_asks_to_try_later(tmp_path):
    pi = pi_config(tmp_path, "school-far", free_port())
    result = appliance(pi, "enroll", "--console", f"http://127.0.0.1:{free_port()}",
                       "--token", "t")
    assert result.returncode == 75
    assert "cannot reach the console" in result.stderr


def test_first_boot_enrolls_and_then_deletes_its_secrets(tmp_path, site):
    issued = site.token("lincoln-main")
    site.run()
    boot, etc, root = tmp_path / "boot", tmp_path / "etc", tmp_path / "root"
    boot.mkdir()
    (boot / "firstboot.toml").write_text(f"""
site = "lincoln"
building = "main"
console_url = "{site.url}"
ca_fingerprint = "{issued['ca_fingerprint']}"
enrollment_token = "{issued['token']}"

[hotspot]
ssid = "Classroom"
passphrase = "hotspot-secret-1"
country = "US"
""")
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "firstboot", "--boot-dir", str(boot), "--etc",
         str(etc), "--root", str(root), "--console-device", str(tmp_path / "screen"), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["enrolled"]["device_id"] == "lincoln-main"
    cfg = config_module.load(etc / "appliance.toml")
    assert cfg.mqtt.cert_file is not None and cfg.mqtt.cert_file.exists()
    assert not (boot / "firstboot.toml").exists()
