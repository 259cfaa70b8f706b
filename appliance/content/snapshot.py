"""The library as the portal's hot paths see it, without a query per request.

The archive origin's entries (`origin.FastEntries`) and the search page (`search_page`) need the
listed items and whether the drive is there on every request. Both change rarely: the items are
read again only when the database has changed (`PRAGMA data_version` moves when another
connection commits: an add, a replacement, a removal, an archive marked bad by `verify`), and the
root's presence is checked at most once a second while it is there (a missing drive is checked
on every request, so its return is seen at once).
"""

from __future__ import annotations

import threading
import time

from appliance.content import library
from appliance.content.store import ContentStore


class LibrarySnapshot:
    PRESENCE_SECONDS = 1.0

    def __init__(self, store: ContentStore) -> None:
        self.store = store
        self._listed: list[library.Item] = []
        self._by_name: dict[str, library.Item] = {}
        self._version = -1
        self._present_until = 0.0
        self._lock = threading.Lock()

    def listed(self) -> list[library.Item] | None:
        """Every item, as `library.items` lists them (all states), or None while the root is
        missing."""
        # Read before the items: a commit in between makes the next call read them again.
        version = self.store.db.execute("PRAGMA data_version").fetchone()[0]
        now = time.monotonic()
        with self._lock:
            if now >= self._present_until:
                if not self.store.present():
                    return None
                self._present_until = now + self.PRESENCE_SECONDS
            if version == self._version:
                return self._listed
        listed = library.items(self.store.db)
        with self._lock:
            self._listed, self._by_name, self._version = listed, {i.name: i for i in listed}, version
        return listed

    def get(self, name: str) -> library.Item | None:
        """The item called `name`, or None (unknown, or the root missing)."""
        if self.listed() is None:
            return None
        with self._lock:
            return self._by_name.get(name)
