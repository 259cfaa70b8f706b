"""A small certificate authority for the fleet's MQTT: one CA, the broker's certificate, and one
client certificate per appliance whose common name is the appliance id.

The broker takes the certificate's CN as the client's identity (`use_identity_as_username`), so
its ACL can confine each appliance to its own topics. Certificates are strict-valid (critical
basicConstraints, key identifiers, SAN on the server) so that strict verifiers accept them too.
Keys are written 0600 from the first byte.

Enrollment (`sign_csr`): an appliance makes its own key and sends a certificate signing request;
the CA key never leaves the console. Every issued certificate is recorded in `index.json` beside
the CA, so `revoke()` can find a device's certificates and `crl()` can write the revocation list
(`crl.pem`) that Mosquitto's `crlfile` reads.

Validity rule for enrolled certificates: notBefore is the signing time minus `BACKDATE` (2 days)
and notAfter is `CLIENT_DAYS` (5 years) after signing, never past the CA's own notAfter. A Pi has
no real-time clock: before NTP it may believe it is hours or days in the past, and a certificate
that is "not yet valid" for whoever checks it would fail for no good reason; a long lifetime
means a Pi that sits in a cupboard over summer still connects in September.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from appliance.secretfiles import write_secret

CA_DAYS = 10 * 365
LEAF_DAYS = 2 * 365
# Enrolled client certificates (see the module docstring for why these values).
CLIENT_DAYS = 5 * 365
BACKDATE = datetime.timedelta(days=2)


class CsrError(ValueError):
    """A certificate signing request this CA will not sign; the message says why."""


class NotIssuedError(LookupError):
    """`revoke()` found no certificate for that serial or identity."""


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key, as files."""

    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_secret(path, pem.decode().strip())


class CertificateAuthority:
    """`CertificateAuthority.open(dir)` loads the CA in `dir`, creating it on first use."""

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.dir = directory
        self.key = key
        self.cert = cert

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def crl_file(self) -> Path:
        """Where `crl()` writes the revocation list (PEM), for Mosquitto's `crlfile`."""
        return self.dir / "crl.pem"

    @property
    def index_file(self) -> Path:
        return self.dir / "index.json"

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate (DER), lowercase hex: what an enrolling Pi pins."""
        return fingerprint(self.cert)

    @staticmethod
    def exists(directory: Path) -> bool:
        return (directory / "ca.key").exists() and (directory / "ca.crt").exists()

    @classmethod
    def open(cls, directory: Path, name: str = "Classroom Edge fleet CA") -> CertificateAuthority:
        directory.mkdir(parents=True, exist_ok=True)
        key_file, cert_file = directory / "ca.key", directory / "ca.crt"
        if cls.exists(directory):
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_file}: not an EC private key")
            return cls(directory, key, x509.load_pem_x509_certificate(cert_file.read_bytes()))
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(key_file, key)
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(directory, key, cert)

    def issue(
        self, common_name: str, *, server_names: tuple[str, ...] = (), days: int = LEAF_DAYS
    ) -> Pair:
        """A new key and certificate for `common_name`: a server's if `server_names` are given
        (DNS names or IP addresses for its SAN), else a client's."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH]
            ), critical=False)
        )
        if server_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in server_names]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        pair = Pair(self.dir / f"{common_name}.crt", self.dir / f"{common_name}.key")
        _write_key(pair.key, key)
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._record(cert, common_name)
        return pair

    def sign_csr(
        self, csr_pem: bytes | str, identity: str, *, days: int = CLIENT_DAYS,
        now: datetime.datetime | None = None,
    ) -> x509.Certificate:
        """A client certificate for `identity` (the enrolling device id) from its CSR.

        Raises CsrError unless `check_csr` accepts the request. The certificate carries only
        what this CA decides (CN = identity, clientAuth, not a CA): nothing from the CSR but its
        public key. Validity: see the module docstring. Recorded in the index."""
        csr = check_csr(csr_pem, identity)
        now = now or datetime.datetime.now(datetime.UTC)
        not_after = min(now + datetime.timedelta(days=days), self.cert.not_valid_after_utc)
        public_key = csr.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        self._record(cert, identity)
        return cert

    # -- the index of issued certificates, and revocation ----------------------------------------
    @contextlib.contextmanager
    def _index(self) -> Iterator[dict[str, Any]]:
        """The index, locked for read-modify-write (console web workers sign concurrently);
        written back atomically when the block ends without an exception."""
        with (self.dir / "index.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data: dict[str, Any] = (json.loads(self.index_file.read_text())
                                        if self.index_file.exists() else {})
                data.setdefault("certificates", {})
                data.setdefault("crl_number", 0)
                yield data
                tmp = self.index_file.with_name(f".{self.index_file.name}.tmp")
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
                os.replace(tmp, self.index_file)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _record(self, cert: x509.Certificate, identity: str) -> None:
        with self._index() as index:
            index["certificates"][format(cert.serial_number, "x")] = {
                "identity": identity,
                "not_before": cert.not_valid_before_utc.isoformat(),
                "not_after": cert.not_valid_after_utc.isoformat(),
                "revoked_at": None,
            }

    def issued(self) -> dict[str, dict[str, Any]]:
        """Every certificate issued, by serial (lowercase hex): identity, validity, revoked_at."""
        with self._index() as index:
            certificates: dict[str, dict[str, Any]] = index["certificates"]
            return certificates

    def revoke(self, serial_or_identity: int | str) -> list[int]:
        """Revoke one certificate (its serial, as an int or hex string) or every unrevoked
        certificate of an identity, then rewrite the CRL. Returns the serials revoked now
        (empty when all were revoked already); NotIssuedError when nothing matches."""
        now = datetime.datetime.now(datetime.UTC).isoformat()
        with self._index() as index:
            certs: dict[str, dict[str, Any]] = index["certificates"]
            if isinstance(serial_or_identity, int):
                wanted = [format(serial_or_identity, "x")]
            elif serial_or_identity.lower() in certs:
                wanted = [serial_or_identity.lower()]
            else:
                wanted = [s for s, c in certs.items() if c["identity"] == serial_or_identity]
            wanted = [s for s in wanted if s in certs]
            if not wanted:
                raise NotIssuedError(f"no certificate issued for {serial_or_identity!r}")
            revoked = []
            for serial in wanted:
                if certs[serial]["revoked_at"] is None:
                    certs[serial]["revoked_at"] = now
                    revoked.append(int(serial, 16))
        self.crl()
        return revoked

    def crl(self) -> Path:
        """Write `crl.pem`: every revoked certificate, signed by the CA; returns its path.

        Its nextUpdate is the CA's own expiry: OpenSSL refuses *every* client while the broker
        holds an expired CRL, and this list is rewritten on each revocation anyway."""
        now = datetime.datetime.now(datetime.UTC)
        with self._index() as index:
            index["crl_number"] += 1
            builder = (
                x509.CertificateRevocationListBuilder()
                .issuer_name(self.cert.subject)
                .last_update(now - datetime.timedelta(minutes=5))
                .next_update(self.cert.not_valid_after_utc)
                .add_extension(x509.CRLNumber(index["crl_number"]), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                    critical=False,
                )
            )
            for serial, cert in sorted(index["certificates"].items()):
                if cert["revoked_at"] is not None:
                    builder = builder.add_revoked_certificate(
                        x509.RevokedCertificateBuilder()
                        .serial_number(int(serial, 16))
                        .revocation_date(datetime.datetime.fromisoformat(cert["revoked_at"]))
                        .build()
                    )
            crl = builder.sign(self.key, hashes.SHA256())
        tmp = self.crl_file.with_name(f".{self.crl_file.name}.tmp")
        tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        os.replace(tmp, self.crl_file)
        return self.crl_file


def check_csr(csr_pem: bytes | str, identity: str) -> x509.CertificateSigningRequest:
    """The parsed CSR if this CA may sign it for `identity`, else CsrError saying why.

    Accepted: a valid self-signature, a subject of exactly CN = identity, an EC key (P-256 or
    P-384) or RSA of 2048 bits or more, and no requested extension that asks for more than a
    client certificate (no CA flag, no names other than the identity, no usage but clientAuth).
    Pure: no file is touched, so a server checks before spending a one-time token."""
    raw = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    if len(raw) > 16384:
        raise CsrError("certificate request is too large")
    try:
        csr = x509.load_pem_x509_csr(raw)
    except ValueError:
        raise CsrError("not a PEM certificate request") from None
    if not csr.is_signature_valid:
        raise CsrError("certificate request signature is invalid")
    attributes = list(csr.subject)
    if (len(attributes) != 1 or attributes[0].oid != NameOID.COMMON_NAME
            or attributes[0].value != identity):
        raise CsrError(f"certificate request subject must be exactly CN={identity}")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1):
            raise CsrError("EC keys must use P-256 or P-384")
    elif isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise CsrError("RSA keys must have at least 2048 bits")
    else:
        raise CsrError("key must be EC (P-256, P-384) or RSA")
    for extension in csr.extensions:
        value = extension.value
        if extension.oid == ExtensionOID.BASIC_CONSTRAINTS:
            if isinstance(value, x509.BasicConstraints) and value.ca:
                raise CsrError("certificate request asks to be a CA")
        elif extension.oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
            if not isinstance(value, x509.SubjectAlternativeName) or any(
                    not isinstance(n, x509.DNSName) or n.value != identity for n in value):
                raise CsrError(f"certificate request names others than {identity}")
        elif extension.oid == ExtensionOID.KEY_USAGE:
            if isinstance(value, x509.KeyUsage) and (value.key_cert_sign or value.crl_sign):
                raise CsrError("certificate request asks to sign certificates")
        elif extension.oid == ExtensionOID.EXTENDED_KEY_USAGE:
            if not isinstance(value, x509.ExtendedKeyUsage) or list(value) != [
                    ExtendedKeyUsageOID.CLIENT_AUTH]:
                raise CsrError("certificate request asks for a usage other than clientAuth")
        else:
            raise CsrError(f"certificate request has an extension this CA does not grant "
                           f"({extension.oid.dotted_string})")
    return csr


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of a certificate (DER) as lowercase hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


def normalize_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as people paste it ("AB:CD:...", "sha256:abcd...") in lowercase
    hex; ValueError if it is not 64 hex digits."""
    cleaned = text.strip().lower().removeprefix("sha256:").replace(":", "").replace(" ", "")
    if len(cleaned) != 64 or any(c not in "0123456789abcdef" for c in cleaned):
        raise ValueError("a SHA-256 fingerprint is 64 hex digits (colons allowed)")
    return cleaned


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
