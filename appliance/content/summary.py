"""The content library's summary on the console's device page: items, space, root, sync."""

from __future__ import annotations

import sqlite_utils

from appliance.config import Config
from appliance.fleet.summaries import N_, Field, SummarySpec, Value

SUMMARY = SummarySpec(
    "content",
    N_("Library"),
    (
        Field("items", N_("Items"), "count"),
        Field("bad", N_("Items taken out (failed a check)"), "count"),
        Field("bytes", N_("Space used"), "bytes"),
        Field("root_missing", N_("Content drive missing"), "bool"),
        Field("jobs_queued", N_("Downloads queued"), "count"),
        Field("jobs_failed", N_("Downloads failed"), "count"),
        Field("last_sync", N_("Last download finished"), "timestamp"),
    ),
)


def collect(config: Config, db: sqlite_utils.Database) -> dict[str, Value]:
    from appliance.content.store import ContentStore

    if "content_items" not in db.table_names():
        return {"items": 0, "bad": 0, "bytes": 0, "root_missing": None, "jobs_queued": 0,
                "jobs_failed": 0, "last_sync": None}
    items, bad = db.execute("SELECT count(*), coalesce(sum(state = 'bad'), 0) FROM content_items").fetchone()
    used = db.execute("SELECT coalesce(sum(size), 0) FROM content_blobs").fetchone()[0]
    jobs = dict(db.execute("SELECT state, count(*) FROM content_jobs GROUP BY state").fetchall())
    last = db.execute("SELECT value FROM content_state WHERE key = 'last_sync'").fetchone()
    store = ContentStore(config.content.root, db, require_mount=config.content.require_mount)
    return {"items": int(items), "bad": int(bad), "bytes": int(used), "root_missing": not store.present()
            if items else None, "jobs_queued": int(jobs.get("queued", 0) + jobs.get("running", 0)),
            "jobs_failed": int(jobs.get("failed", 0)), "last_sync": int(last[0]) if last else None}
