"""POST /enroll on the console, through Flask's test client, and the Pi's checks of the answer."""

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from appliance.console.app import create_app
from appliance.fleet.pki import CertificateAuthority
from appliance.provision import client, tokens
from appliance.provision.enrollment import ca_directory, open_console_db


@pytest.fixture
def ca(cfg):
    return CertificateAuthority.open(ca_directory(cfg))


@pytest.fixture
def web(cfg, ca):
    return create_app(cfg).test_client()


def token_for(cfg, device="school-1", ttl=3600.0, now=None):
    import time

    return tokens.issue(open_console_db(cfg), device, ttl, now or time.time()).token


def audit(cfg):
    return [(r["event"], r["detail"]) for r in tokens.audit_log(open_console_db(cfg))]


def test_a_pi_trades_a_token_and_csr_for_a_certificate_without_a_session(cfg, ca, web):
    key, csr = client.make_request("school-1")
    token = token_for(cfg)
    response = web.post("/enroll", json={"device_id": "school-1", "token": token, "csr": csr})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    cert, returned_ca = client.check_answer(body, key, "school-1", ca.fingerprint)
    assert returned_ca == ca.cert
    assert body["serial"] == format(cert.serial_number, "x")
    assert audit(cfg)[0] == ("enrolled", f"certificate {body['serial']}")
    # The same token again: refused, and audited.
    again = web.post("/enroll", json={"device_id": "school-1", "token": token, "csr": csr})
    assert again.status_code == 403
    assert again.get_json() == {"error": "enrollment token was already used"}
    assert audit(cfg)[0] == ("refused", "enrollment token was already used")


def test_an_expired_token_is_refused(cfg, web):
    _, csr = client.make_request("school-1")
    token = token_for(cfg, ttl=1.0, now=1000.0)
    response = web.post("/enroll", json={"device_id": "school-1", "token": token, "csr": csr})
    assert response.status_code == 403
    assert "expired" in response.get_json()["error"]


def test_a_csr_for_another_device_is_refused_and_the_token_is_not_spent(cfg, web):
    token = token_for(cfg)
    _, wrong = client.make_request("school-2")
    response = web.post("/enroll", json={"device_id": "school-1", "token": token, "csr": wrong})
    assert response.status_code == 400
    assert "CN=school-1" in response.get_json()["error"]
    _, right = client.make_request("school-1")
    ok = web.post("/enroll", json={"device_id": "school-1", "token": token, "csr": right})
    assert ok.status_code == 200


@pytest.mark.parametrize("body", [None, [], {"device_id": "school-1"},
                                  {"device_id": 5, "token": "t", "csr": "c"},
                                  {"device_id": "../etc", "token": "t", "csr": "c"}])
def test_malformed_requests_are_refused(cfg, web, body):
    response = (web.post("/enroll", data="not json", content_type="application/json")
                if body is None else web.post("/enroll", json=body))
    assert response.status_code == 400
    assert audit(cfg)[0][0] == "refused"


def test_attempts_are_limited_per_device_then_per_client(cfg, web):
    _, csr = client.make_request("school-1")
    codes = [web.post("/enroll", json={"device_id": "school-1", "token": "guess", "csr": csr}
                      ).status_code for _ in range(tokens.MAX_PER_DEVICE + 1)]
    assert codes == [403] * tokens.MAX_PER_DEVICE + [429]
    # A real token cannot get through while the device is limited.
    token = token_for(cfg)
    assert web.post("/enroll", json={"device_id": "school-1", "token": token, "csr": csr}
                    ).status_code == 429
    remaining = tokens.MAX_PER_CLIENT - tokens.MAX_PER_DEVICE - 2
    for n in range(remaining):
        web.post("/enroll", json={"device_id": f"school-x{n}", "token": "guess", "csr": csr})
    assert web.post("/enroll", json={"device_id": "school-9", "token": "t", "csr": csr}
                    ).status_code == 429
    assert "this address" in audit(cfg)[0][1]


def test_the_token_never_appears_in_the_audit_log(cfg, web):
    token = token_for(cfg)
    _, csr = client.make_request("school-2")
    web.post("/enroll", json={"device_id": "school-1", "token": token, "csr": csr})
    for row in tokens.audit_log(open_console_db(cfg)):
        assert token not in str(row)


def test_no_ca_yet_is_a_clear_503(cfg):
    web = create_app(cfg).test_client()
    _, csr = client.make_request("school-1")
    response = web.post("/enroll", json={"device_id": "school-1", "token": "t", "csr": csr})
    assert response.status_code == 503


# -- the Pi's checks of the answer ---------------------------------------------------------------
def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_the_pi_refuses_an_answer_from_another_ca_or_for_another_key(tmp_path, ca):
    key, csr = client.make_request("school-1")
    cert = ca.sign_csr(csr, "school-1")
    good = {"certificate": pem(cert), "ca": pem(ca.cert)}
    client.check_answer(good, key, "school-1", None)
    with pytest.raises(client.EnrollError, match="fingerprint"):
        client.check_answer(good, key, "school-1", "0" * 64)
    other_key, _ = client.make_request("school-1")
    with pytest.raises(client.EnrollError, match="key"):
        client.check_answer(good, other_key, "school-1", None)
    stranger = CertificateAuthority.open(tmp_path / "stranger")
    with pytest.raises(client.EnrollError, match="not signed"):
        client.check_answer({"certificate": pem(cert), "ca": pem(stranger.cert)}, key,
                            "school-1", None)
    with pytest.raises(client.EnrollError, match="no certificate"):
        client.check_answer({"error": "x"}, key, "school-1", None)
    assert isinstance(cert, x509.Certificate)


@pytest.mark.parametrize("url, ok", [
    ("https://console.example.org", "https://console.example.org/enroll"),
    ("https://console.example.org/fleet/", "https://console.example.org/fleet/enroll"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080/enroll"),
    ("http://localhost:8080", "http://localhost:8080/enroll"),
    ("http://console.example.org", None),
    ("ftp://console.example.org", None),
    ("console.example.org", None),
])
def test_the_token_only_travels_over_https_except_on_loopback(url, ok):
    if ok:
        assert client.enroll_url(url) == ok
    else:
        with pytest.raises(client.EnrollError):
            client.enroll_url(url)
