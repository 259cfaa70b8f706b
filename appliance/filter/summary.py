"""The filter's summary for the console's device page: aggregate statistics (queries and blocks
per category and group, the most blocked names) and the attestation "filtering active, lists of
<date>, policy version N". Read from the filter's tables in `appliance.db` (the server writes
them every 10 s); no per-device data.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import sqlite_utils

from appliance.config import Config
from appliance.fleet.summaries import MAX_TEXT, N_, Field, SummarySpec, Value

# Categories with a figure of their own; the rest add up in blocked_other.
CATEGORIES = ("adult", "gambling", "malware", "phishing", "social_networks")
ACTIVE_WITHIN_S = 60.0  # the server writes every 10 s: a minute of silence means it is down

SUMMARY = SummarySpec(
    "filter",
    N_("DNS filter"),
    (
        Field("active", N_("Filtering active"), "bool"),
        Field("attestation", N_("Attestation"), "text"),
        Field("lists_built", N_("Lists of"), "timestamp"),
        Field("policy_version", N_("Policy version"), "count"),
        Field("queries", N_("Queries"), "count"),
        Field("blocked", N_("Blocked"), "count"),
        Field("blocked_adult", N_("Blocked: adult"), "count"),
        Field("blocked_gambling", N_("Blocked: gambling"), "count"),
        Field("blocked_malware", N_("Blocked: malware"), "count"),
        Field("blocked_phishing", N_("Blocked: phishing"), "count"),
        Field("blocked_social_networks", N_("Blocked: social networks"), "count"),
        Field("blocked_other", N_("Blocked: other"), "count"),
        Field("groups", N_("Queries / blocked per group"), "text"),
        Field("top_blocked", N_("Most blocked names"), "text"),
        Field("exam", N_("Exam mode"), "text"),
        Field("filtering_off", N_("Groups with filtering off"), "text"),
    ),
)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def collect(config: Config, db: sqlite_utils.Database, now: float | None = None) -> dict[str, Value]:
    now = time.time() if now is None else now
    out: dict[str, Value] = {f.key: None for f in SUMMARY.fields}
    if not db["filter_state"].exists():
        out["active"] = False
        return out
    state = dict(db.execute("SELECT key, value FROM filter_state").fetchall())
    active_at = state.get("active_at")
    active = isinstance(active_at, int | float) and now - float(active_at) < ACTIVE_WITHIN_S
    built = state.get("lists_built_at")
    version = state.get("policy_version")
    out["active"] = active
    out["lists_built"] = int(float(built) * 1000) if isinstance(built, int | float) else None
    out["policy_version"] = int(version) if isinstance(version, int) else None
    if active:
        day = (datetime.fromtimestamp(float(built), UTC).strftime("%Y-%m-%d")
               if isinstance(built, int | float) else "none")
        out["attestation"] = f"filtering active, lists of {day}, policy version {version}"
    else:
        out["attestation"] = "filtering not active"
    per_group: dict[str, list[int]] = {}
    blocked_by: dict[str, int] = {}
    for grp, cat, queries, blocked in db.execute(
            "SELECT grp, category, queries, blocked FROM filter_stats"):
        g = per_group.setdefault(grp, [0, 0])
        g[0] += int(queries)
        g[1] += int(blocked)
        if cat:
            blocked_by[cat] = blocked_by.get(cat, 0) + int(blocked)
    out["queries"] = sum(g[0] for g in per_group.values())
    out["blocked"] = sum(blocked_by.values())
    for cat in CATEGORIES:
        out[f"blocked_{cat}"] = blocked_by.get(cat, 0)
    out["blocked_other"] = sum(n for c, n in blocked_by.items() if c not in CATEGORIES)
    out["groups"] = _clip(", ".join(f"{g} {q}/{b}" for g, (q, b) in sorted(per_group.items()))) or None
    top = json.loads(str(state.get("top_blocked") or "{}"))
    out["top_blocked"] = _clip(", ".join(f"{n} ({c})" for n, c in list(top.items())[:10])) or None
    exams = db.execute("SELECT scope, until FROM filter_exams WHERE until > ? ORDER BY scope",
                       (now,)).fetchall()
    out["exam"] = _clip(", ".join(
        f"{'building' if s == '*' else s} until "
        f"{datetime.fromtimestamp(u, UTC).strftime('%H:%M UTC')}" for s, u in exams)) or None
    off = json.loads(str(state.get("filtering_off") or "[]"))
    out["filtering_off"] = _clip(", ".join(off)) or None
    return out
