"""The filter's persisted state in `appliance.db`: exams, timed overrides, the audit log and the
statistics the summary reports. Each operation is one function on `Store` (the CLI calls them
now; the console will, through the agent, later), each one transaction, each change audited.

The server reads `load()` again whenever `version()` changed (a counter bumped by every write),
so a change made by `appliance filter exam start` in another process is in force at the next
query, and survives a restart of the filter or of the Pi.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import sqlite_utils

from appliance.filter import schema
from appliance.filter.policy import EXAM_ALL, Exam, Override, State, domains
from appliance.store import migrate, open_db, transaction


class Store:
    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        migrate(db, schema.COMPONENT, schema.MIGRATIONS)

    @classmethod
    def open(cls, path: Path) -> Store:
        return cls(open_db(path))

    # -- reading -------------------------------------------------------------------------------
    def version(self) -> int:
        row = self.db.execute("SELECT value FROM filter_state WHERE key = 'version'").fetchone()
        return int(row[0]) if row else 0

    def load(self) -> State:
        exams = tuple(Exam(scope, until, domains(json.loads(allow)), started)
                      for scope, until, allow, started in self.db.execute(
                          "SELECT scope, until, allow, started_at FROM filter_exams ORDER BY scope"))
        overrides = tuple(Override(d, g, until, created) for d, g, until, created in self.db.execute(
            "SELECT domain, grp, until, created_at FROM filter_overrides ORDER BY domain, grp"))
        return State(exams, overrides, self.version())

    def audit(self, limit: int = 100) -> list[dict[str, object]]:
        return [{"ts": ts, "event": ev, "detail": json.loads(detail) if detail else {}, "actor": actor}
                for ts, ev, detail, actor in self.db.execute(
                    "SELECT ts, event, detail, actor FROM filter_audit ORDER BY id DESC LIMIT ?",
                    (limit,))]

    # -- changing ------------------------------------------------------------------------------
    def _changed(self, conn: object, event: str, detail: dict[str, object], actor: str,
                 now: float) -> None:
        self.db.execute("INSERT INTO filter_audit (ts, event, detail, actor) VALUES (?, ?, ?, ?)",
                        (now, event, json.dumps(detail, sort_keys=True), actor))
        self.db.execute("INSERT INTO filter_state (key, value) VALUES ('version', 1) "
                        "ON CONFLICT(key) DO UPDATE SET value = value + 1")

    def start_exam(self, scope: str, until: float, allow: tuple[str, ...] = (), *,
                   actor: str = "", now: float | None = None) -> Exam:
        """Allowlist-only for `scope` (a group or `*`, the building) until `until`; replaces a
        running exam of the same scope."""
        now = time.time() if now is None else now
        if until <= now:
            raise ValueError("the exam's end time is in the past")
        with transaction(self.db) as conn:
            self.db.execute(
                "INSERT OR REPLACE INTO filter_exams (scope, until, allow, started_at, started_by) "
                "VALUES (?, ?, ?, ?, ?)", (scope, until, json.dumps(sorted(domains(allow))), now, actor))
            self._changed(conn, "exam_start", {"scope": scope, "until": until,
                                               "allow": sorted(domains(allow))}, actor, now)
        return Exam(scope, until, domains(allow), now)

    def stop_exam(self, scope: str = EXAM_ALL, *, actor: str = "", now: float | None = None) -> bool:
        """End the exam of `scope`; False if none was running."""
        now = time.time() if now is None else now
        with transaction(self.db) as conn:
            gone = self.db.execute("DELETE FROM filter_exams WHERE scope = ?", (scope,)).rowcount
            if gone:
                self._changed(conn, "exam_stop", {"scope": scope}, actor, now)
        return bool(gone)

    def add_override(self, domain: str, group: str, seconds: float, *, actor: str = "",
                     now: float | None = None) -> Override:
        """Allow `domain` (and its subdomains) for `group` for `seconds` from now."""
        now = time.time() if now is None else now
        name = next(iter(domains([domain])), "")
        if not name:
            raise ValueError("no domain given")
        until = now + seconds
        with transaction(self.db) as conn:
            self.db.execute("INSERT OR REPLACE INTO filter_overrides VALUES (?, ?, ?, ?, ?)",
                            (name, group, until, now, actor))
            self.db.execute("DELETE FROM filter_overrides WHERE until < ?", (now,))
            self._changed(conn, "override_add", {"domain": name, "group": group, "until": until},
                          actor, now)
        return Override(name, group, until, now)

    def record_policy(self, policy_hash: str, staff_off: list[str], *, now: float | None = None,
                      actor: str = "config") -> int:
        """Note the policy the server runs; a new one bumps the policy version, and a change in
        which groups have filtering off is audited. Returns the policy version."""
        now = time.time() if now is None else now
        with transaction(self.db) as conn:
            rows = dict(self.db.execute(
                "SELECT key, value FROM filter_state WHERE key IN "
                "('policy_hash', 'policy_version', 'filtering_off')").fetchall())
            version = int(rows.get("policy_version") or 0)
            if rows.get("policy_hash") != policy_hash:
                version += 1
                previous = json.loads(rows["filtering_off"]) if rows.get("filtering_off") else []
                if sorted(previous) != sorted(staff_off):
                    self._changed(conn, "filtering_off", {"groups": sorted(staff_off),
                                                          "before": sorted(previous)}, actor, now)
                for k, v in (("policy_hash", policy_hash), ("policy_version", version),
                             ("filtering_off", json.dumps(sorted(staff_off)))):
                    self.db.execute("INSERT OR REPLACE INTO filter_state (key, value) VALUES (?, ?)",
                                    (k, v))
        return version

    def set_value(self, key: str, value: object) -> None:
        self.db.execute("INSERT OR REPLACE INTO filter_state (key, value) VALUES (?, ?)", (key, value))

    def value(self, key: str) -> object:
        row = self.db.execute("SELECT value FROM filter_state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def add_stats(self, counts: dict[tuple[str, str], tuple[int, int]]) -> None:
        """Add (queries, blocked) per (group, category) ("" category: all queries)."""
        with transaction(self.db):
            for (grp, cat), (q, b) in counts.items():
                self.db.execute(
                    "INSERT INTO filter_stats (grp, category, queries, blocked) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(grp, category) DO UPDATE SET queries = queries + excluded.queries, "
                    "blocked = blocked + excluded.blocked", (grp, cat, q, b))
