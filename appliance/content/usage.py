"""Usage: views per item per day, counted in memory and written in batches.

Nothing about who viewed: no address, no device, no time of day, only (item, day) -> views, so a
student's reading cannot be reconstructed. Counts are held in memory and added to
`content_usage` at most every `[content] usage_flush_seconds` (spares the SD card: one small
transaction, not one write per page). Shown figures under 5 read "< 5" (`shown`), so a small
class cannot be singled out. A crash loses at most one interval of counts.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import sqlite_utils

from appliance.store import transaction

SMALL = 5


def shown(count: int) -> str:
    """A count as people see it: below 5 it is only "< 5"."""
    return "< 5" if count < SMALL else str(count)


class UsageCounter:
    def __init__(self, db_factory: Callable[[], sqlite_utils.Database], flush_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._db_factory = db_factory
        self.flush_seconds = flush_seconds
        self._clock = clock
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._last_flush = clock()

    def count(self, item: str) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime(self._clock()))
        with self._lock:
            self._counts[(item, day)] += 1
            due = self._clock() - self._last_flush >= self.flush_seconds
        if due:
            self.flush()

    def flush(self) -> int:
        """Write what is counted; returns how many (item, day) rows were touched."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
            self._last_flush = self._clock()
        if not counts:
            return 0
        db = self._db_factory()
        try:
            with transaction(db):
                db.conn.executemany(
                    "INSERT INTO content_usage (item, day, views) VALUES (?, ?, ?) "
                    "ON CONFLICT (item, day) DO UPDATE SET views = views + excluded.views",
                    [(item, day, n) for (item, day), n in counts.items()])
        except Exception:
            with self._lock:
                self._counts.update(counts)  # try again next time rather than lose them
            raise
        return len(counts)


def views(db: sqlite_utils.Database, days: int = 7, now: float | None = None) -> dict[str, int]:
    """Views per item over the last `days` days (today included)."""
    since = time.strftime("%Y-%m-%d", time.gmtime((now or time.time()) - (days - 1) * 86400))
    return dict(db.execute("SELECT item, sum(views) FROM content_usage WHERE day >= ? GROUP BY item",
                           [since]).fetchall())


def prune(db: sqlite_utils.Database, keep_days: int = 400, now: float | None = None) -> None:
    """Counts older than `keep_days` go (docs/privacy.md says how long they are kept)."""
    cutoff = time.strftime("%Y-%m-%d", time.gmtime((now or time.time()) - keep_days * 86400))
    with transaction(db):
        db.execute("DELETE FROM content_usage WHERE day < ?", [cutoff])
