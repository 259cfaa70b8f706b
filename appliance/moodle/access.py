"""Who may read a mirrored course: the access decision, the rate limits, the offline hashes.

A course is "open" (everyone on the hotspot) or "sign-in" (`[moodle] default_access`,
`signin_courses`, `open_courses`). Sign-in checks the pupil's Moodle password and enrolment
online (the portal view does the calls); these are the parts that need no request:

- `requires_signin()` and `may_read()`: the decision for a course and a session's courses;
- `Limiter`: failed sign-ins per key (`account:<username>`, `device:<address>`) in a sliding
  window, checked *before* Moodle is asked, so the Pi cannot be used to lock a pupil out of
  Moodle by guessing their password;
- `hash_password()`/`check_password()`: scrypt with a random salt, so an offline sign-in can be
  checked without the password or any token being stored;
- `remember()`/`offline()`/`purge()`: the offline hashes, each kept `offline_signin_days`
  after its account's last online sign-in, then deleted.

Usernames are kept as Moodle compares them (lower case, trimmed); nothing here logs them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import sqlite_utils

from appliance.config import MoodleSection

# scrypt cost: 16 MiB and 0.12 s per check on the x86 development machine (a Pi is slower);
# the parameters are stored in each hash, so a later change keeps old hashes checkable.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SCHEME = "scrypt"


def requires_signin(section: MoodleSection, course_id: int) -> bool:
    """Whether reading course `course_id` needs a signed-in, enrolled pupil."""
    if course_id in section.open_courses:
        return False
    if course_id in section.signin_courses:
        return True
    return section.default_access == "signin"


def may_read(section: MoodleSection, course_id: int, signed_in_courses: Iterable[int]) -> bool:
    """The decision for a request: open course, or a session enrolled in it."""
    return not requires_signin(section, course_id) or course_id in set(signed_in_courses)


def normalize_username(username: str) -> str:
    """The name as Moodle matches it (usernames are stored lower case there)."""
    return username.strip().lower()


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    """`scrypt$n$r$p$salt$hash` (base64), a fresh salt each time."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=256 * 1024 * 1024, dklen=32)
    b64 = base64.b64encode
    return f"{_SCHEME}${n}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


# Checked when an account has no hash, so a new name costs as long as a wrong password.
_DUMMY = hash_password("not-a-real-password")


def check_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches `stored` (a `hash_password` result); False for None or a
    malformed value, after the same work as a real check."""
    parts = (stored or "").split("$")
    real = len(parts) == 6 and parts[0] == _SCHEME
    _, n, r, p, salt, digest = parts if real else _DUMMY.split("$")
    try:
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), maxmem=256 * 1024 * 1024, dklen=32)
        return real and hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


@dataclass(frozen=True)
class Limiter:
    """At most `max_failures` failed sign-ins per key within `window` seconds."""

    db: sqlite_utils.Database
    window: float

    def blocked(self, key: str, max_failures: int, now: float) -> bool:
        row = self.db.execute("SELECT failures, window_start FROM moodle_signin_failures WHERE key = ?",
                              [key]).fetchone()
        return bool(row) and row[0] >= max_failures and now - row[1] < self.window

    def fail(self, key: str, now: float) -> None:
        w = self.window
        self.db.execute(
            "INSERT INTO moodle_signin_failures (key, failures, window_start) VALUES (?, 1, ?) "
            "ON CONFLICT(key) DO UPDATE SET "
            "failures = CASE WHEN ? - window_start >= ? THEN 1 ELSE failures + 1 END, "
            "window_start = CASE WHEN ? - window_start >= ? THEN ? ELSE window_start END",
            [key, now, now, w, now, w, now])

    def clear(self, key: str) -> None:
        self.db.execute("DELETE FROM moodle_signin_failures WHERE key = ?", [key])

    def purge(self, now: float) -> None:
        self.db.execute("DELETE FROM moodle_signin_failures WHERE ? - window_start >= ?", [now, self.window])


def limiter(db: sqlite_utils.Database, section: MoodleSection) -> Limiter:
    return Limiter(db, section.signin_window_minutes * 60.0)


def account_key(username: str) -> str:
    return "account:" + normalize_username(username)


def device_key(address: str) -> str:
    return "device:" + address


def remember(db: sqlite_utils.Database, username: str, password: str, courses: Iterable[int],
             now: float) -> None:
    """After an online sign-in: the account's offline hash and enrolled courses, renewed."""
    db.execute(
        "INSERT INTO moodle_signins (username, password_hash, courses, signed_in_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash, "
        "courses = excluded.courses, signed_in_at = excluded.signed_in_at",
        [normalize_username(username), hash_password(password), json.dumps(sorted(set(courses))), now])


def offline(db: sqlite_utils.Database, username: str, password: str, now: float,
            days: int) -> list[int] | None:
    """The courses of an account that signed in online within `days` and whose password
    matches its hash; None otherwise (no hash, expired, wrong password, `days` = 0)."""
    row = db.execute("SELECT password_hash, courses, signed_in_at FROM moodle_signins WHERE username = ?",
                     [normalize_username(username)]).fetchone()
    valid = row is not None and days > 0 and now - row[2] < days * 86400.0
    ok = check_password(row[0] if valid and row else None, password)
    if not ok or row is None:
        return None
    return [int(c) for c in json.loads(row[1])]


def purge(db: sqlite_utils.Database, now: float, days: int) -> int:
    """Delete the offline hashes older than `days`; how many."""
    cursor = db.execute("DELETE FROM moodle_signins WHERE ? - signed_in_at >= ?", [now, days * 86400.0])
    return cursor.rowcount or 0
