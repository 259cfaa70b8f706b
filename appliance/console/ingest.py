"""The console's ingest worker: MQTT messages from the fleet into the console database.

`Ingest.handle()` is the whole decision for one message and needs no broker, so tests feed it
bytes directly. `Ingest.run()` adds the MQTT session. A malformed message is rejected, counted
per (device, kind, reason) and logged the first time only; ingest carries on with the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

import paho.mqtt.client as mqtt
import sqlite_utils

from appliance.config import ID_PATTERN, Config
from appliance.console import records
from appliance.console.presence import INGEST_HEARTBEAT_S
from appliance.console.schema import COMPONENT, MIGRATIONS
from appliance.fleet import payloads, summaries
from appliance.fleet.session import MqttSession, make_client
from appliance.fleet.topics import ACK, STATUS, SUMMARY, TELEMETRY, Topics
from appliance.store import migrate

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600


def ingest_identity(config: Config) -> str:
    """The ingest worker's MQTT client id, and the CN its certificate must carry."""
    return f"console-ingest-{config.appliance.id}"


class Ingest:
    def __init__(
        self,
        config: Config,
        db: sqlite_utils.Database,
        *,
        clock: Callable[[], float] = time.time,
        client: mqtt.Client | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.clock = clock
        self.topics = Topics(config.mqtt.topic_root)
        migrate(db, COMPONENT, MIGRATIONS)
        self.client = client or make_client(config.mqtt, client_id=ingest_identity(config))
        self.client.on_message = self._on_message
        self.session = MqttSession(
            self.client, config.mqtt, on_connected=self._subscribe, name="ingest"
        )
        self.accepted = 0
        self.rejected = 0
        # device -> seqs stored since the last flush; acknowledged in one message per device.
        self.pending_acks: dict[str, list[int]] = {}
        self.specs = summaries.specs()
        # (device, section) -> summary sections ignored because this console has no spec.
        self.ignored_sections: Counter[tuple[str, str]] = Counter()
        self.handlers: dict[str, Callable[[str, bytes, float], bool]] = {
            STATUS: self._on_status,
            TELEMETRY: self._on_telemetry,
            ACK: self._on_own_ack,
            SUMMARY: self._on_summary,
        }

    def handle(self, topic: str, payload: bytes) -> bool:
        """Process one message; True if stored, False if ignored or rejected."""
        now = self.clock()
        parsed = self.topics.parse(topic)
        if parsed is None:
            return self._reject("(unknown)", "(unknown)", "topic outside the device tree", now)
        device_id, kind = parsed
        if not ID_PATTERN.fullmatch(device_id):
            return self._reject("(invalid)", kind, "invalid device id", now)
        handler = self.handlers.get(kind)
        if handler is None:
            return self._reject(device_id, kind[:40], "unknown message kind", now)
        try:
            stored = handler(device_id, payload, now)
        except payloads.PayloadError as exc:
            return self._reject(device_id, kind, exc.reason, now)
        if stored:
            self.accepted += 1
        return stored

    # One handler per message kind; a capability that adds a kind adds an entry here.
    def _on_status(self, device_id: str, payload: bytes, now: float) -> bool:
        if not payload:
            return False  # a cleared retained status: nothing to record
        return records.record_status(self.db, device_id, payloads.parse_status(payload), now)

    def _on_telemetry(self, device_id: str, payload: bytes, now: float) -> bool:
        sample = payloads.parse_telemetry(payload)
        records.record_telemetry(self.db, device_id, sample, now)
        # Acknowledged only once stored: the agent keeps it until then (a PUBACK only means
        # the broker took it, not that the console has it).
        self.pending_acks.setdefault(device_id, []).append(sample.seq)
        return True

    def _on_own_ack(self, device_id: str, payload: bytes, now: float) -> bool:
        return False  # our own acknowledgements, seen through the wildcard subscription

    def _on_summary(self, device_id: str, payload: bytes, now: float) -> bool:
        summary = summaries.parse(payload, self.specs)
        for name in summary.unknown:
            # A newer appliance's capability: not an error, but worth one line per device.
            self.ignored_sections[device_id, name] += 1
            if self.ignored_sections[device_id, name] == 1:
                log.info("ignoring summary section %r from %s: unknown to this console "
                         "(further ones are only counted)", name, device_id)
        for name, reason in summary.rejected.items():
            self._reject(device_id, SUMMARY, f"{name}: {reason}", now)
        return records.record_summary(self.db, device_id, summary, now) > 0

    def _reject(self, device_id: str, kind: str, reason: str, now: float) -> bool:
        self.rejected += 1
        if records.record_reject(self.db, device_id, kind, reason, now):
            # Logged once per (device, kind, reason): a broken agent must not flood the log.
            log.warning("rejected %s message from %s: %s (further ones are only counted)",
                        kind, device_id, reason)
        return False

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self.handle(msg.topic, bytes(msg.payload))
        except Exception:
            # A database error must not take ingest down; the message is lost, the worker is not.
            log.exception("ingest failed for a message on %s", msg.topic)

    def flush_acks(self) -> int:
        """Publish the pending acknowledgements; return how many devices were acknowledged."""
        if not self.session.connected or not self.pending_acks:
            return 0
        pending, self.pending_acks = self.pending_acks, {}
        for device_id, seqs in pending.items():
            for body in payloads.acks(seqs):
                self.client.publish(self.topics.ack(device_id), body, qos=1)
        return len(pending)

    def _subscribe(self) -> None:
        self.client.subscribe(self.topics.all_devices(), qos=1)
        records.set_ingest_state(self.db, broker_connected=1, broker_since=self.clock())

    def run(self, stop: threading.Event) -> None:
        records.set_ingest_state(self.db, broker_connected=0, broker_since=self.clock())
        next_heartbeat = 0.0
        next_prune = 0.0
        was_connected = False
        try:
            while not stop.is_set():
                self.session.poll(timeout=0.2)
                self.flush_acks()
                now = self.clock()
                if was_connected and not self.session.connected:
                    records.set_ingest_state(self.db, broker_connected=0, broker_since=now)
                was_connected = self.session.connected
                if now >= next_heartbeat:
                    records.set_ingest_state(self.db, heartbeat=now)
                    next_heartbeat = now + INGEST_HEARTBEAT_S
                if now >= next_prune:
                    records.prune_history(self.db, self.config.console.history_days, now)
                    next_prune = now + PRUNE_EVERY_S
        finally:
            self.session.close()
            records.set_ingest_state(self.db, broker_connected=0, heartbeat=0)
