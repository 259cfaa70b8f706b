"""The console's side of enrollment: a Pi's request (device id, one-time token, CSR) in, a signed
certificate and the fleet CA out. HTTP lives in `console_views`; this module decides.

Order of checks, each refusal audited: rate limits (client address, then device), the request's
shape, the CSR (checked before the token is spent, so a typo in a CSR does not burn a token),
the token (spent atomically), then signing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils
from cryptography.hazmat.primitives import serialization

from appliance.config import Config
from appliance.fleet.pki import CertificateAuthority, CsrError, check_csr
from appliance.provision import tokens
from appliance.provision.schema import COMPONENT, MIGRATIONS
from appliance.store import migrate, open_db

MAX_REQUEST_BYTES = 64 * 1024


def ca_directory(cfg: Config) -> Path:
    """Where the console keeps the fleet CA: `<state_dir>/pki` (key 0600, index, CRL)."""
    return cfg.appliance.state_dir / "pki"


def open_console_db(cfg: Config) -> sqlite_utils.Database:
    """The console database with the provision tables up to date."""
    database = open_db(cfg.console_database_path)
    migrate(database, COMPONENT, MIGRATIONS)
    return database


@dataclass(frozen=True)
class Answer:
    """What to send back: an HTTP status and a JSON body."""

    status: int
    body: dict[str, Any]


def _refuse(db: sqlite_utils.Database, now: float, status: int, reason: str, *,
            device_id: str | None, client: str, token_id: str | None = None) -> Answer:
    tokens.audit(db, tokens.REFUSED, now, device_id=device_id, client=client,
                 token_id=token_id, detail=reason)
    return Answer(status, {"error": reason})


def handle(db: sqlite_utils.Database, ca_dir: Path, payload: Any, client: str,
           now: float) -> Answer:
    """Answer one enrollment request (`payload` is the parsed JSON body, or None)."""
    if not tokens.allow_attempt(db, f"client:{client}", tokens.MAX_PER_CLIENT, now):
        return _refuse(db, now, 429, "too many enrollment attempts from this address; "
                       "wait a few minutes", device_id=None, client=client)
    fields = ("device_id", "token", "csr")
    if not isinstance(payload, dict) or not all(isinstance(payload.get(f), str) for f in fields):
        return _refuse(db, now, 400, "expected JSON with device_id, token and csr (strings)",
                       device_id=None, client=client)
    try:
        device_id = tokens.check_device_id(payload["device_id"])
    except ValueError as exc:
        # The id is not stored: it is whatever the client sent.
        return _refuse(db, now, 400, str(exc), device_id=None, client=client)
    if not tokens.allow_attempt(db, f"device:{device_id}", tokens.MAX_PER_DEVICE, now):
        return _refuse(db, now, 429, "too many enrollment attempts for this device; "
                       "wait a few minutes", device_id=device_id, client=client)
    if not CertificateAuthority.exists(ca_dir):
        return _refuse(db, now, 503, "the console has no fleet CA yet", device_id=device_id,
                       client=client)
    try:
        check_csr(payload["csr"], device_id)
    except CsrError as exc:
        return _refuse(db, now, 400, str(exc), device_id=device_id, client=client)
    try:
        token_id = tokens.consume(db, payload["token"], device_id, client, now)
    except tokens.TokenRefused as exc:
        return _refuse(db, now, 403, exc.reason, device_id=device_id, client=client,
                       token_id=exc.token_id)
    ca = CertificateAuthority.open(ca_dir)
    cert = ca.sign_csr(payload["csr"], device_id)
    serial = format(cert.serial_number, "x")
    tokens.audit(db, tokens.ENROLLED, now, device_id=device_id, client=client,
                 token_id=token_id, detail=f"certificate {serial}")
    return Answer(200, {
        "certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "ca": ca.cert.public_bytes(serialization.Encoding.PEM).decode(),
        "serial": serial,
        "not_after": cert.not_valid_after_utc.isoformat(),
    })
