"""One-time enrollment tokens, the enrollment audit log and enrollment rate limits (console.db).

A token is 32 random bytes (URL-safe text) shown once to the admin; the database keeps only its
SHA-256. A fast hash is enough because the token is random, not chosen by a person: nobody can
guess 256 bits, so there is nothing for a slow hash to slow down. The first 12 hex digits of the
hash are the token's id: what the audit log records, so the token itself is never written down.

Every function takes the time (`now`) from its caller, so tests need no clock.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from appliance.config import ID_PATTERN
from appliance.store import transaction

DEFAULT_TTL_S = 24 * 3600.0
MAX_TTL_S = 30 * 24 * 3600.0
# Attempts allowed within RATE_WINDOW_S, counted before anything is checked. Per client address
# generously (a district may enroll many Pis from behind one NAT), per device tightly (a real
# Pi retries a few times at most).
RATE_WINDOW_S = 300.0
MAX_PER_CLIENT = 30
MAX_PER_DEVICE = 5

# Audit events.
ISSUED, ENROLLED, REFUSED, REVOKED = "issued", "enrolled", "refused", "revoked"


class TokenRefused(Exception):
    """The token cannot enroll this device; `reason` is what the Pi is told."""

    def __init__(self, reason: str, token_id: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.token_id = token_id


@dataclass(frozen=True)
class IssuedToken:
    """A new token: `token` is shown to the admin once and stored nowhere."""

    token: str
    token_id: str
    device_id: str
    expires_at: float


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_id(token_hash: str) -> str:
    return token_hash[:12]


def check_device_id(device_id: str) -> str:
    """`device_id` if it is a valid appliance id ([appliance] id's pattern), else ValueError."""
    if not isinstance(device_id, str) or not ID_PATTERN.fullmatch(device_id):
        raise ValueError("device id must be 1-63 characters of a-z, 0-9 and '-', starting with "
                         "a letter or digit")
    return device_id


_TTL = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_ttl(text: str) -> float:
    """'90m', '24h', '7d' or seconds, as seconds; ValueError outside (0, 30 days]."""
    match = _TTL.fullmatch(text.strip().lower())
    if not match:
        raise ValueError("a duration is a number with s, m, h or d (e.g. 24h)")
    seconds = float(match[1]) * _UNITS[match[2]]
    if not 0 < seconds <= MAX_TTL_S:
        raise ValueError("must be more than 0 and at most 30 days")
    return seconds


def audit(db: sqlite_utils.Database, event: str, now: float, *, device_id: str | None = None,
          client: str | None = None, token_id: str | None = None,
          detail: str | None = None) -> None:
    """One row of the enrollment audit log (never the token itself)."""
    db.execute(
        "INSERT INTO enrollment_audit (ts, event, device_id, client, token_id, detail) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [now, event, device_id, client, token_id, detail],
    )


def issue(db: sqlite_utils.Database, device_id: str, ttl_s: float, now: float) -> IssuedToken:
    """A new one-time token for `device_id`, valid for `ttl_s` seconds; audited."""
    check_device_id(device_id)
    token = secrets.token_urlsafe(32)
    digest = hash_token(token)
    with transaction(db) as conn:
        conn.execute(
            "INSERT INTO enrollment_tokens (token_hash, device_id, created_at, expires_at) "
            "VALUES (?, ?, ?, ?)",
            [digest, device_id, now, now + ttl_s],
        )
        audit(db, ISSUED, now, device_id=device_id, token_id=token_id(digest),
              detail=f"valid for {ttl_s:.0f} s")
    return IssuedToken(token, token_id(digest), device_id, now + ttl_s)


def consume(db: sqlite_utils.Database, token: str, device_id: str, client: str,
            now: float) -> str:
    """Spend `token` for `device_id`; return its id. Raises TokenRefused (unknown, expired,
    already used) otherwise.

    Atomic: one UPDATE that only matches an unused, unexpired token of this device, so of two
    concurrent uses exactly one changes the row (SQLite serialises writers)."""
    digest = hash_token(token)
    changed = db.execute(
        "UPDATE enrollment_tokens SET used_at = ?, used_by = ? WHERE token_hash = ? "
        "AND device_id = ? AND used_at IS NULL AND expires_at > ?",
        [now, client, digest, device_id, now],
    ).rowcount
    if changed == 1:
        return token_id(digest)
    row = db.execute(
        "SELECT device_id, expires_at, used_at FROM enrollment_tokens WHERE token_hash = ?",
        [digest],
    ).fetchone()
    # A token of another device is as unknown to this one as a made-up token.
    if row is None or row[0] != device_id:
        raise TokenRefused("unknown enrollment token", None)
    if row[2] is not None:
        raise TokenRefused("enrollment token was already used", token_id(digest))
    raise TokenRefused("enrollment token has expired", token_id(digest))


def allow_attempt(db: sqlite_utils.Database, key: str, limit: int, now: float) -> bool:
    """Count one attempt for `key` ('client:<addr>', 'device:<id>') in a fixed window of
    RATE_WINDOW_S; False when it is over `limit`. Rows older than a day are deleted."""
    db.execute(
        "INSERT INTO enrollment_attempts (key, attempts, window_start) VALUES (?, 1, ?) "
        "ON CONFLICT(key) DO UPDATE SET "
        "attempts = CASE WHEN ? - window_start >= ? THEN 1 ELSE attempts + 1 END, "
        "window_start = CASE WHEN ? - window_start >= ? THEN ? ELSE window_start END",
        [key, now, now, RATE_WINDOW_S, now, RATE_WINDOW_S, now],
    )
    db.execute("DELETE FROM enrollment_attempts WHERE ? - window_start >= ?", [now, 24 * 3600])
    row = db.execute("SELECT attempts FROM enrollment_attempts WHERE key = ?", [key]).fetchone()
    return bool(row) and int(row[0]) <= limit


def withdraw(db: sqlite_utils.Database, device_id: str, now: float) -> int:
    """Make every unused token of `device_id` unusable (on revocation); how many there were."""
    return int(db.execute(
        "UPDATE enrollment_tokens SET used_at = ?, used_by = 'withdrawn' "
        "WHERE device_id = ? AND used_at IS NULL",
        [now, device_id],
    ).rowcount)


def audit_log(db: sqlite_utils.Database, device_id: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
    """The newest audit rows first, of one device or of all."""
    where, params = ("WHERE device_id = ?", [device_id]) if device_id else ("", [])
    cursor = db.execute(
        f"SELECT ts, event, device_id, client, token_id, detail FROM enrollment_audit {where} "  # noqa: S608 - fixed text
        "ORDER BY id DESC LIMIT ?",
        [*params, limit],
    )
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
