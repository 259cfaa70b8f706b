"""The appliance's agent: samples health on a fixed interval and reports it over MQTT.

Samples go to the local SQLite outbox first and to the broker second, so an outage loses nothing:
while the broker is away the agent keeps sampling, and once it is back the backlog is sent oldest
first after the live sample. Presence is a retained `status` with a Last Will; a per-attempt
session counter lets the console discard a Will that arrives after the next birth.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import sqlite_utils

from appliance import __version__
from appliance.config import Config
from appliance.fleet import health, payloads
from appliance.fleet.backoff import Backoff
from appliance.fleet.schema import COMPONENT, MIGRATIONS
from appliance.fleet.session import MqttSession, make_client
from appliance.fleet.topics import Topics
from appliance.store import migrate, transaction

log = logging.getLogger(__name__)


# At most this many samples sent and not yet acknowledged by the console: a week of backlog
# drains at the console's pace instead of in one burst.
WINDOW = 200
BATCH = 50


class Agent:
    """Build with a Config and an open database; `run(stop)` until `stop` is set."""

    def __init__(
        self,
        config: Config,
        db: sqlite_utils.Database,
        *,
        collect: Callable[[], dict[str, float | None]] | None = None,
        wall_clock: Callable[[], float] = time.time,
        client: mqtt.Client | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.device_id = config.appliance.id
        self.topics = Topics(config.mqtt.topic_root)
        self.collect = collect or (lambda: health.collect(config.appliance.state_dir))
        self.wall_clock = wall_clock
        migrate(db, COMPONENT, MIGRATIONS)
        self.client = client or make_client(config.mqtt, client_id=self.device_id)
        self.client.on_message = self._handle_message
        self.session = MqttSession(
            self.client,
            config.mqtt,
            on_connected=self._on_connected,
            before_connect=self._arm_will,
            backoff=Backoff(cap=config.agent.backoff_max),
            name=f"agent {self.device_id}",
        )
        self.session_counter = self._state("session")
        # seq -> monotonic time sent, for samples the console has not acknowledged yet. Kept in
        # memory: after a restart everything unacknowledged is simply sent again.
        self._sent: dict[int, float] = {}
        # A sample unacknowledged this long is sent again (the console stores it only once).
        self.resend_after = max(3 * config.agent.interval, 2 * config.mqtt.keepalive, 2.0)
        # When send_pending() next has something to do; spares the SD card a query per loop.
        self._next_send_check = 0.0

    # -- local state ---------------------------------------------------------------------------
    def _state(self, key: str) -> int:
        row = self.db.execute("SELECT value FROM agent_state WHERE key = ?", [key]).fetchone()
        return int(row[0]) if row else 0

    def _set_state(self, key: str, value: int) -> None:
        self.db.execute(
            "INSERT INTO agent_state (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )

    def _now_ms(self) -> int:
        return int(self.wall_clock() * 1000)

    # -- MQTT hooks ----------------------------------------------------------------------------
    def _arm_will(self) -> None:
        # A new counter for every CONNECT attempt, persisted first: a Will from an older
        # connection can then never be mistaken for the current one.
        self.session_counter += 1
        self._set_state("session", self.session_counter)
        self.client.will_set(
            self.topics.status(self.device_id),
            payloads.will(self.session_counter),
            qos=1,
            retain=True,
        )

    def _on_connected(self) -> None:
        self.client.subscribe(self.topics.ack(self.device_id), qos=1)
        self.client.publish(
            self.topics.status(self.device_id),
            payloads.birth(
                self.session_counter,
                self._now_ms(),
                __version__,
                self.config.appliance.name or self.device_id,
                self.config.agent.interval,
            ),
            qos=1,
            retain=True,
        )
        # What was sent on the old connection may never have reached the console: send again.
        self._sent.clear()
        self._next_send_check = 0.0

    def _handle_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic != self.topics.ack(self.device_id):
            return
        try:
            ranges = payloads.parse_ack(bytes(msg.payload))
        except payloads.PayloadError as exc:
            log.warning("agent %s: ignored a bad acknowledgement: %s", self.device_id, exc.reason)
            return
        self.acknowledge(ranges)

    def acknowledge(self, ranges: list[tuple[int, int]]) -> None:
        """The console stored these samples: they need never be sent again."""
        self.db.conn.executemany(
            "UPDATE health_outbox SET acked = 1 WHERE seq BETWEEN ? AND ? AND acked = 0", ranges
        )
        for low, high in ranges:
            for seq in [s for s in self._sent if low <= s <= high]:
                del self._sent[seq]
        self._next_send_check = 0.0  # the window has room again

    # -- sampling ------------------------------------------------------------------------------
    def sample(self) -> int:
        """Collect one sample into the outbox; return its sequence number."""
        ts = self._now_ms()
        metrics = self.collect()
        with transaction(self.db):
            cursor = self.db.execute("INSERT INTO health_outbox (ts, payload) VALUES (?, '')", [ts])
            seq = int(cursor.lastrowid or 0)
            self.db.execute(
                "UPDATE health_outbox SET payload = ? WHERE seq = ?",
                [payloads.telemetry(seq, ts, metrics), seq],
            )
        self._next_send_check = 0.0
        return seq

    def _send(self, seq: int, payload: bytes) -> None:
        info = self.client.publish(self.topics.telemetry(self.device_id), payload, qos=1)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._sent[seq] = time.monotonic()

    def send_pending(self) -> int:
        """Send the newest sample first, then the backlog oldest first, within the window."""
        now = time.monotonic()
        if not self.session.connected or now < self._next_send_check:
            return 0
        in_flight = sum(1 for t in self._sent.values() if now - t < self.resend_after)
        budget = min(BATCH, WINDOW - in_flight)
        if budget <= 0:
            self._next_send_check = min(self._sent.values()) + self.resend_after
            return 0
        newest = self.db.execute(
            "SELECT seq, payload FROM health_outbox WHERE acked = 0 ORDER BY seq DESC LIMIT 1"
        ).fetchall()
        oldest = self.db.execute(
            "SELECT seq, payload FROM health_outbox WHERE acked = 0 ORDER BY seq LIMIT ?",
            [WINDOW],
        ).fetchall()
        sent = 0
        for seq, payload in newest + oldest:
            if sent >= budget:
                break
            last = self._sent.get(seq)
            if last is None or now - last >= self.resend_after:
                self._send(seq, payload)
                sent += 1
        if sent < budget:
            # Everything unacknowledged is in flight: nothing to do until a sample, an
            # acknowledgement, a reconnect, or the oldest resend falls due.
            self._next_send_check = (
                min(self._sent.values()) + self.resend_after if self._sent else float("inf")
            )
        return sent

    def prune(self) -> None:
        """Drop samples past retention, acknowledged or not: the outbox must not fill the SD card."""
        cutoff = self._now_ms() - self.config.agent.retention_hours * 3600 * 1000
        self.db.execute("DELETE FROM health_outbox WHERE ts < ?", [cutoff])

    def unacknowledged(self) -> int:
        return int(self.db.execute(
            "SELECT count(*) FROM health_outbox WHERE acked = 0"
        ).fetchone()[0])

    # -- main loop -----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        interval = self.config.agent.interval
        next_sample = time.monotonic()
        next_prune = time.monotonic()
        log.info("agent %s: reporting every %.1f s to %s:%s", self.device_id, interval,
                 self.config.mqtt.host, self.config.mqtt.port)
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_sample:
                    self.sample()
                    # Skip missed ticks rather than bursting after a stall.
                    next_sample += interval * max(1, int((now - next_sample) // interval) + 1)
                if now >= next_prune:
                    self.prune()
                    next_prune = now + 3600
                self.send_pending()
                self.session.poll(timeout=min(0.5, max(0.05, next_sample - time.monotonic())))
        finally:
            self._say_goodbye()

    def _say_goodbye(self) -> None:
        """Retained offline status first (a clean DISCONNECT makes the broker drop the Will)."""
        if self.session.connected:
            info = self.client.publish(
                self.topics.status(self.device_id),
                payloads.goodbye(self.session_counter, self._now_ms()),
                qos=1,
                retain=True,
            )
            deadline = time.monotonic() + 3.0
            while not info.is_published() and time.monotonic() < deadline:
                self.client.loop(timeout=0.1)
        self.session.close()
        log.info("agent %s: stopped", self.device_id)
