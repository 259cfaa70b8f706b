"""The fleet CA signs only what an enrolling appliance may have, records it, and revokes it."""

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance.fleet.pki import (
    BACKDATE,
    CertificateAuthority,
    CsrError,
    NotIssuedError,
    normalize_fingerprint,
)


@pytest.fixture
def ca(tmp_path):
    return CertificateAuthority.open(tmp_path / "pki")


def csr(cn="school-1", *, key=None, extensions=(), extra_name=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if extra_name:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, extra_name))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), key


def test_signs_a_client_certificate_for_the_enrolling_device(ca):
    pem, key = csr("school-1")
    now = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC)
    cert = ca.sign_csr(pem, "school-1", now=now)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "school-1"
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(ca.cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    # Backdated for a Pi whose clock is behind, and valid for years.
    assert cert.not_valid_before_utc <= now - datetime.timedelta(days=1)
    assert cert.not_valid_before_utc == now - BACKDATE
    assert cert.not_valid_after_utc >= now + datetime.timedelta(days=4 * 365)
    assert ca.issued()[format(cert.serial_number, "x")]["identity"] == "school-1"


def test_validity_never_outlives_the_ca(ca):
    pem, _ = csr()
    cert = ca.sign_csr(pem, "school-1", days=100 * 365)
    assert cert.not_valid_after_utc == ca.cert.not_valid_after_utc


@pytest.mark.parametrize("make, reason", [
    (lambda: csr("school-2"), "exactly CN=school-1"),
    (lambda: csr("school-1", extra_name="Evil Corp"), "exactly CN=school-1"),
    (lambda: csr(extensions=[x509.BasicConstraints(ca=True, path_length=None)]), "CA"),
    (lambda: csr(extensions=[x509.SubjectAlternativeName([x509.DNSName("broker")])]), "names"),
    (lambda: csr(extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])]),
     "clientAuth"),
    (lambda: csr(key=rsa.generate_private_key(65537, 1024)), "2048"),  # noqa: S505 - the point
    (lambda: csr(key=ec.generate_private_key(ec.SECP256K1())), "P-256"),
    (lambda: (b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n",
              None), "not a PEM"),
])
def test_refuses_requests_beyond_a_device_certificate(ca, make, reason):
    pem, _ = make()
    with pytest.raises(CsrError, match=reason):
        ca.sign_csr(pem, "school-1")
    assert ca.issued() == {}


def test_a_san_naming_only_the_device_is_fine(ca):
    pem, _ = csr(extensions=[x509.SubjectAlternativeName([x509.DNSName("school-1")])])
    cert = ca.sign_csr(pem, "school-1")
    # The certificate carries only what the CA decides: no SAN copied from the request.
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_revoke_by_identity_or_serial_and_the_crl_lists_them(ca):
    first = ca.sign_csr(csr()[0], "school-1")
    second = ca.sign_csr(csr()[0], "school-1")
    other = ca.sign_csr(csr("school-2")[0], "school-2")
    assert sorted(ca.revoke("school-1")) == sorted([first.serial_number, second.serial_number])
    assert ca.revoke("school-1") == []  # already revoked: nothing new
    crl = x509.load_pem_x509_crl(ca.crl_file.read_bytes())
    assert crl.is_signature_valid(ca.cert.public_key())
    assert crl.get_revoked_certificate_by_serial_number(first.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(other.serial_number) is None
    assert crl.next_update_utc == ca.cert.not_valid_after_utc
    assert ca.revoke(format(other.serial_number, "x")) == [other.serial_number]
    again = x509.load_pem_x509_crl(ca.crl_file.read_bytes())
    assert again.get_revoked_certificate_by_serial_number(other.serial_number) is not None
    number = again.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_revoking_what_was_never_issued_says_so(ca):
    with pytest.raises(NotIssuedError):
        ca.revoke("nobody")


def test_an_empty_crl_is_valid(ca):
    crl = x509.load_pem_x509_crl(ca.crl().read_bytes())
    assert len(crl) == 0


def test_fingerprints_as_people_paste_them(ca):
    fp = ca.fingerprint
    assert len(fp) == 64
    colons = ":".join(fp[i:i + 2] for i in range(0, 64, 2)).upper()
    assert normalize_fingerprint(colons) == fp
    assert normalize_fingerprint(f"sha256:{fp}") == fp
    with pytest.raises(ValueError, match="64 hex"):
        normalize_fingerprint("abcd")
