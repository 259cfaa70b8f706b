"""The mirror's summary on the console's device page: courses, last sync, errors, size."""

from __future__ import annotations

import sqlite_utils

from appliance.config import Config
from appliance.fleet.summaries import N_, Field, SummarySpec, Value

SUMMARY = SummarySpec(
    "moodle",
    N_("Moodle mirror"),
    (
        Field("courses", N_("Courses mirrored"), "count"),
        Field("last_sync", N_("Last successful sync"), "timestamp"),
        Field("errors", N_("Courses with an error"), "count"),
        Field("size", N_("Size of the mirrored files"), "bytes"),
        Field("last_error", N_("Last error"), "text"),
    ),
)


def collect(config: Config, db: sqlite_utils.Database) -> dict[str, Value]:
    if not db["moodle_sync"].exists():
        return {"courses": 0, "last_sync": None, "errors": 0, "size": 0, "last_error": None}
    courses, size = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM moodle_courses").fetchone()
    last, errors = db.execute(
        "SELECT max(last_success), coalesce(sum(error IS NOT NULL), 0) FROM moodle_sync").fetchone()
    row = db.execute("SELECT error FROM moodle_sync WHERE error IS NOT NULL"
                     " ORDER BY last_attempt DESC LIMIT 1").fetchone()
    return {
        "courses": int(courses), "size": int(size), "errors": int(errors),
        "last_sync": int(last * 1000) if last is not None else None,
        "last_error": row[0][:200] if row else None,
    }
