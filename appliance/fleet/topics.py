"""The one place MQTT topics are built and parsed.

Each device writes only inside its own subtree `<root>/dev/<device_id>/...`, which is what lets the
broker's ACL key on the device identity. The root carries a version (`edge/v1`).
"""

from __future__ import annotations

from dataclasses import dataclass

STATUS = "status"
TELEMETRY = "tele"
ACK = "ack"  # console -> device: which telemetry samples are stored


@dataclass(frozen=True)
class Topics:
    """Topic names under one root, e.g. Topics("edge/v1")."""

    root: str = "edge/v1"

    def device(self, device_id: str, kind: str) -> str:
        return f"{self.root}/dev/{device_id}/{kind}"

    def status(self, device_id: str) -> str:
        return self.device(device_id, STATUS)

    def telemetry(self, device_id: str) -> str:
        return self.device(device_id, TELEMETRY)

    def ack(self, device_id: str) -> str:
        return self.device(device_id, ACK)

    def all_devices(self) -> str:
        """The console's subscription: everything every device publishes."""
        return f"{self.root}/dev/+/#"

    def parse(self, topic: str) -> tuple[str, str] | None:
        """Split a device topic into (device_id, kind); None if it is not one of ours."""
        prefix = f"{self.root}/dev/"
        if not topic.startswith(prefix):
            return None
        rest = topic[len(prefix):].split("/", 1)
        if len(rest) != 2 or not rest[0] or not rest[1]:
            return None
        return rest[0], rest[1]
