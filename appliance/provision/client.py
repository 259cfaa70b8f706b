"""The Pi's side of enrollment: make a key that never leaves the Pi, have the console sign it.

`enroll(cfg, console_url, token, ca_fingerprint)` makes an EC P-256 key and a CSR with
CN = `[appliance] id`, posts them with the one-time token to `<console_url>/enroll`, checks the
answer (the certificate is for our key and our id, and is signed by the returned CA, whose
SHA-256 fingerprint must equal `ca_fingerprint` when one is given), then writes the key (0600),
the certificate and the CA where `[mqtt] key_file`, `cert_file` and `ca_file` point, each file
atomically.

The token is a secret, so it only travels over HTTPS; plain `http://` is accepted for a loopback
console only (tests, a console on the same machine). The HTTPS certificate of the console is
checked against the system's CAs.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.config import Config
from appliance.fleet.pki import fingerprint, normalize_fingerprint
from appliance.secretfiles import write_secret

# The user the agent runs as (systemd units): it must be able to read its key.
SERVICE_USER = "appliance"


class EnrollError(Exception):
    """Enrollment failed for a reason retrying will not fix (refused token, wrong CA, ...)."""


class ConsoleUnreachable(EnrollError):
    """The console could not be asked (network, DNS, the console down or busy): try later."""


@dataclass(frozen=True)
class Enrolled:
    """What enrollment wrote."""

    device_id: str
    serial: str
    not_after: str
    ca_fingerprint: str
    cert_file: Path
    key_file: Path
    ca_file: Path


def enroll_url(console_url: str) -> str:
    """`<console_url>/enroll`; EnrollError unless https, or http to a loopback host."""
    parts = urllib.parse.urlsplit(console_url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise EnrollError(f"console URL must be https://HOST[:PORT][/PATH] (got {console_url!r})")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise EnrollError("console URL must use https: the enrollment token is a secret "
                          "(http is accepted only for a console on this machine)")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/enroll",
                                    "", ""))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_request(device_id: str) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A new private key and a CSR (PEM) whose subject is exactly CN = device_id."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def check_answer(answer: Any, key: ec.EllipticCurvePrivateKey, device_id: str,
                 pinned: str | None) -> tuple[x509.Certificate, x509.Certificate]:
    """The certificate and CA of the console's answer, if they are what we asked for; else
    EnrollError. Validity dates are not checked: the Pi's clock may be wrong at first boot."""
    if not isinstance(answer, dict) or not all(
            isinstance(answer.get(k), str) for k in ("certificate", "ca")):
        raise EnrollError("the console's answer has no certificate")
    try:
        cert = x509.load_pem_x509_certificate(answer["certificate"].encode())
        ca = x509.load_pem_x509_certificate(answer["ca"].encode())
    except ValueError:
        raise EnrollError("the console's answer is not PEM certificates") from None
    ca_fp = fingerprint(ca)
    if pinned is not None and ca_fp != pinned:
        raise EnrollError(f"the console's CA has fingerprint {ca_fp}, not the expected "
                          f"{pinned}: not enrolling (is this the right console?)")
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        ca.verify_directly_issued_by(ca)
        cert.verify_directly_issued_by(ca)
    except (x509.ExtensionNotFound, InvalidSignature, ValueError, TypeError) as exc:
        raise EnrollError(f"the certificate is not signed by the console's CA ({exc})") from None
    if not constraints.ca:
        raise EnrollError("the console's CA certificate is not a CA")
    if cert.public_key() != key.public_key():
        raise EnrollError("the certificate is not for this Pi's key")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [n.value for n in names] != [device_id]:
        raise EnrollError(f"the certificate is not for {device_id}")
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = x509.ExtendedKeyUsage([])
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise EnrollError("the certificate does not allow client authentication")
    return cert, ca


def _post(url: str, body: dict[str, str], timeout: float) -> Any:
    data = json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - scheme checked by enroll_url
        url, data=data, method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    context = ssl.create_default_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error") or exc.reason
        except (ValueError, AttributeError):
            reason = exc.reason
        if exc.code == 429 or exc.code >= 500:
            raise ConsoleUnreachable(f"the console is busy or failing ({exc.code}: {reason}); "
                                     "try again later") from None
        raise EnrollError(f"the console refused enrollment ({exc.code}): {reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            raise EnrollError(f"the console's HTTPS certificate was not accepted: "
                              f"{exc.reason}") from None
        raise ConsoleUnreachable(f"cannot reach the console at {url}: {exc.reason}") from None
    except (TimeoutError, ConnectionError) as exc:
        raise ConsoleUnreachable(f"cannot reach the console at {url}: {exc}") from None
    except ValueError:
        raise EnrollError("the console's answer is not JSON") from None


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def give_to_service_user(*paths: Path) -> None:
    """As root (first boot), hand the files to the agent's user so it can read its key."""
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return
    for path in paths:
        os.chown(path, user.pw_uid, user.pw_gid)


def share_folder_with_service_group(path: Path) -> None:
    """As root (first boot): `path` becomes root:<services' group>, 0750."""
    if os.geteuid() != 0:
        return
    try:
        group = pwd.getpwnam(SERVICE_USER).pw_gid
    except KeyError:
        return
    os.chown(path, 0, group)
    os.chmod(path, 0o750)  # noqa: S103 - group: the services, which read their secrets there


def enroll(cfg: Config, console_url: str, token: str, ca_fingerprint: str | None = None,
           timeout: float = 30.0) -> Enrolled:
    """Enroll this appliance (see the module docstring); raises ConsoleUnreachable (try later)
    or EnrollError (fix something first). Nothing is written unless everything checked out."""
    mqtt = cfg.mqtt
    if mqtt.ca_file is None or mqtt.cert_file is None or mqtt.key_file is None:
        raise EnrollError(f"{cfg.source or '<config>'}: set [mqtt] ca_file, cert_file and "
                          "key_file: enrollment writes the certificates there")
    try:
        pinned = normalize_fingerprint(ca_fingerprint) if ca_fingerprint else None
    except ValueError as exc:
        raise EnrollError(f"--ca-fingerprint: {exc}") from None
    if not token.strip():
        raise EnrollError("the enrollment token is empty")
    url = enroll_url(console_url)
    device_id = cfg.appliance.id
    key, csr = make_request(device_id)
    answer = _post(url, {"device_id": device_id, "token": token.strip(), "csr": csr}, timeout)
    cert, ca = check_answer(answer, key, device_id, pinned)
    write_secret(mqtt.key_file, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode().strip())
    _write_public(mqtt.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    _write_public(mqtt.ca_file, ca.public_bytes(serialization.Encoding.PEM))
    give_to_service_user(mqtt.key_file, mqtt.cert_file)
    return Enrolled(device_id, format(cert.serial_number, "x"), cert.not_valid_after_utc.isoformat(),
                    fingerprint(ca), mqtt.cert_file, mqtt.key_file, mqtt.ca_file)
