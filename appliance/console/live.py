"""What the fleet page's event stream sends: the whole snapshot once, then only what changed.

A district's snapshot is large (hundreds of appliances with an hour of chart each) and changes
every second (some appliance always just reported), while each change touches a few rows. So
after the first `fleet` event the stream sends `patch` events with the changed devices only.
No I/O here: `FleetDiff.update()` takes snapshots and returns events.
"""

from __future__ import annotations

import json
from typing import Any


def _key(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


class FleetDiff:
    """Feed successive snapshots; get back ("fleet", snapshot), ("patch", changes) or None."""

    def __init__(self) -> None:
        self._devices: dict[str, str] = {}
        self._order: list[str] | None = None
        self._head: str | None = None

    def update(self, snap: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        devices = {d["id"]: _key(d) for d in snap["devices"]}
        order = [d["id"] for d in snap["devices"]]
        head = _key({"ingest": snap["ingest"], "counts": snap["counts"]})
        first = self._order is None
        changed = [d for d in snap["devices"] if self._devices.get(d["id"]) != devices[d["id"]]]
        removed = [i for i in self._devices if i not in devices]
        same_order = order == self._order
        same_head = head == self._head
        self._devices, self._order, self._head = devices, order, head
        if first:
            return "fleet", snap
        if not changed and not removed and same_order and same_head:
            return None
        patch: dict[str, Any] = {
            "generated_at": snap["generated_at"],
            "ingest": snap["ingest"],
            "counts": snap["counts"],
            "devices": changed,
            "removed": removed,
        }
        if not same_order:
            patch["order"] = order
        return "patch", patch
