"""The DHCP hook's spool folder: the hook appends to `events`, the service takes whole files.

Taking a file is a rename of `events` to `taken-<ns>`; the hook's next event creates a fresh
`events`. A hook that opened `events` just before the rename still writes into the taken file,
so a taken file is read only once it has been quiet for `GRACE` seconds (its ctime: the rename
and every write set it); dnsmasq runs one hook at a time and each writes within milliseconds.
A taken file is deleted only after its events are committed, so a crash re-reads it (applying an
event twice changes nothing). Nothing is lost while the service is down: the hook keeps
appending to `events`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

EVENTS = "events"
TAKEN = "taken-"
GRACE = 1.0
# A spool file larger than this is read in pieces of whole lines (a flood must not load
# megabytes at once).
MAX_BATCH_BYTES = 1 << 20
HOOK = Path(__file__).with_name("dhcp-event")


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def take(self) -> None:
        """Rename a non-empty `events` to a taken file."""
        events = self.directory / EVENTS
        try:
            if events.stat().st_size == 0:
                return
        except FileNotFoundError:
            return
        os.rename(events, self.directory / f"{TAKEN}{time.time_ns():020d}")

    def ready(self, now: float | None = None) -> list[Path]:
        """Taken files quiet for GRACE seconds, oldest first."""
        current = time.time() if now is None else now
        found = []
        for path in sorted(self.directory.glob(f"{TAKEN}*")):
            try:
                if current - path.stat().st_ctime >= GRACE:
                    found.append(path)
            except FileNotFoundError:
                continue
        return found

    @staticmethod
    def batches(path: Path) -> Iterator[list[bytes]]:
        """The file's complete lines in batches of about MAX_BATCH_BYTES."""
        with path.open("rb") as f:
            batch: list[bytes] = []
            size = 0
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a torn last line (a crashed writer): nothing to trust in it
                batch.append(line)
                size += len(line)
                if size >= MAX_BATCH_BYTES:
                    yield batch
                    batch, size = [], 0
            if batch:
                yield batch

    @staticmethod
    def done(path: Path) -> None:
        path.unlink(missing_ok=True)
