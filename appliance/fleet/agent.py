"""The appliance's agent: samples health on a fixed interval and reports it over MQTT.

Samples go to the local SQLite outbox first and to the broker second, so an outage loses nothing:
while the broker is away the agent keeps sampling, and once it is back the backlog is sent oldest
first after the live sample. Presence is a retained `status` with a Last Will; a per-attempt
session counter lets the console discard a Will that arrives after the next birth.

Each sample records whether the clock was synchronised (`appliance.clock`) and its monotonic
time; once the clock is synchronised, samples of the same boot are re-timed before they are sent.
The capabilities' summaries (`appliance.fleet.summaries`) go out on their own topic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import sqlite_utils

from appliance import __version__
from appliance.clock import STATES, ClockTrust, State, boot_id, default_probe, retimed_ms
from appliance.config import Config
from appliance.fleet import health, payloads, summaries
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
# Samples of this boot taken before the clock was synchronised wait this long after a connect
# for NTP (which normally syncs within seconds of the uplink) so they can be re-timed; then they
# go out flagged. Samples of an earlier boot cannot be re-timed and go out flagged at once.
HOLD_UNSYNCED_S = 120.0
# The summaries go out when they change, and at least every this many samples.
SUMMARY_EVERY_SAMPLES = 10


def retime_rows(
    rows: list[tuple[int, bytes, float]], now_wall: float, now_mono: float
) -> list[tuple[int, int, bytes]]:
    """(seq, payload, mono) of unsynced samples of this boot -> (seq, ts, payload) re-timed by
    the now trusted wall clock. Pure."""
    out = []
    for seq, payload, mono in rows:
        sample = payloads.parse_telemetry(payload)
        ts = retimed_ms(now_wall, now_mono, mono)
        out.append((seq, ts, payloads.telemetry(seq, ts, dict(sample.metrics))))
    return out


class Agent:
    """Build with a Config and an open database; `run(stop)` until `stop` is set."""

    def __init__(
        self,
        config: Config,
        db: sqlite_utils.Database,
        *,
        collect: Callable[[], dict[str, float | None]] | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        clock: ClockTrust | None = None,
        boot: str | None = None,
        summary_providers: tuple[summaries.Provider, ...] | None = None,
        client: mqtt.Client | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.device_id = config.appliance.id
        self.topics = Topics(config.mqtt.topic_root)
        self.collect = collect or (lambda: health.collect(config.appliance.state_dir))
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        self.clock = clock or ClockTrust(config.appliance.state_dir, now=wall_clock,
                                         sync_probe=default_probe(config.agent.clock_source))
        self.boot = boot_id() if boot is None else boot
        self.providers = summaries.providers() if summary_providers is None else summary_providers
        self.specs = {p.spec.name: p.spec for p in self.providers}
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
        # The clock's state as of the last sample (asked once per sample, not per loop turn).
        self.clock_state: State = self.clock.state()
        self._clock_stored = False
        self._connected_at = float("-inf")
        # The sections last published, and samples taken since: a summary goes out on change.
        self._last_summary: dict[str, dict[str, summaries.Value]] | None = None
        self._samples_since_summary = 0
        self._summary_due = False
        self._broken_providers: set[str] = set()

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
        self._connected_at = self.monotonic()
        self._last_summary = None  # the console may have missed the last one: send it again
        self._summary_due = True

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
        with transaction(self.db):
            self.db.conn.executemany(
                "UPDATE health_outbox SET acked = 1 WHERE seq BETWEEN ? AND ? AND acked = 0", ranges
            )
            self._set_state("last_ack_ms", self._now_ms())
        for low, high in ranges:
            for seq in [s for s in self._sent if low <= s <= high]:
                del self._sent[seq]
        self._next_send_check = 0.0  # the window has room again

    # -- sampling ------------------------------------------------------------------------------
    def _observe_clock(self) -> State:
        state = self.clock.state()
        if state != self.clock_state or not self._clock_stored:
            self._set_state("clock", STATES.index(state))  # for the agent's summary
            self._clock_stored = True
        self.clock_state = state
        return state

    def sample(self) -> int:
        """Collect one sample into the outbox; return its sequence number.

        Flagged unsynced unless the clock is NTP-synchronised: a merely plausible clock may be
        behind by the whole time the Pi was off.
        """
        synced = self._observe_clock() == "synced"
        ts, mono = self._now_ms(), self.monotonic()
        metrics = self.collect()
        with transaction(self.db):
            cursor = self.db.execute(
                "INSERT INTO health_outbox (ts, payload, synced, mono, boot) VALUES (?, '', ?, ?, ?)",
                [ts, int(synced), mono, self.boot],
            )
            seq = int(cursor.lastrowid or 0)
            self.db.execute(
                "UPDATE health_outbox SET payload = ? WHERE seq = ?",
                [payloads.telemetry(seq, ts, metrics, synced=synced), seq],
            )
        self._next_send_check = 0.0
        return seq

    def retime(self) -> int:
        """Once the clock is synchronised, give this boot's unsynced, unacknowledged samples
        their true time (from their monotonic time) and clear their flag; return how many."""
        if self.clock_state != "synced" or not self.boot:
            return 0
        rows = self.db.execute(
            "SELECT seq, payload, mono FROM health_outbox "
            "WHERE synced = 0 AND acked = 0 AND boot = ? AND mono IS NOT NULL",
            [self.boot],
        ).fetchall()
        if not rows:
            return 0
        fixed = retime_rows(rows, self.wall_clock(), self.monotonic())
        with transaction(self.db):
            self.db.conn.executemany(
                "UPDATE health_outbox SET ts = ?, payload = ?, synced = 1 WHERE seq = ?",
                [(ts, payload, seq) for seq, ts, payload in fixed],
            )
        for seq, _, _ in fixed:
            self._sent.pop(seq, None)  # what went out flagged goes out again, re-timed
        self._next_send_check = 0.0
        log.info("agent %s: clock synchronised; re-timed %d samples", self.device_id, len(fixed))
        return len(fixed)

    def _send(self, seq: int, payload: bytes, now: float) -> None:
        info = self.client.publish(self.topics.telemetry(self.device_id), payload, qos=1)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._sent[seq] = now

    def holding(self, now: float) -> bool:
        """Whether this boot's unsynced samples are held back: the clock is not synchronised
        yet and the connection is younger than HOLD_UNSYNCED_S (NTP may still come)."""
        return self.clock_state != "synced" and now - self._connected_at < HOLD_UNSYNCED_S

    def candidates(self, *, holding: bool) -> list[tuple[int, bytes]]:
        """(seq, payload) to send, in order: the newest unacknowledged sample, then the oldest
        WINDOW ones (the newest may come twice); held samples left out."""
        where = "acked = 0 AND NOT (synced = 0 AND boot = ?)" if holding else "acked = 0 AND ?"
        arg = self.boot if holding else 1
        newest = self.db.execute(
            f"SELECT seq, payload FROM health_outbox WHERE {where} ORDER BY seq DESC LIMIT 1",  # noqa: S608 - fixed
            [arg],
        ).fetchall()
        oldest = self.db.execute(
            f"SELECT seq, payload FROM health_outbox WHERE {where} ORDER BY seq LIMIT ?",  # noqa: S608
            [arg, WINDOW],
        ).fetchall()
        return [(int(seq), bytes(payload)) for seq, payload in newest + oldest]

    def send_pending(self) -> int:
        """Send the newest sample first, then the backlog oldest first, within the window."""
        now = self.monotonic()
        if not self.session.connected or now < self._next_send_check:
            return 0
        in_flight = sum(1 for t in self._sent.values() if now - t < self.resend_after)
        budget = min(BATCH, WINDOW - in_flight)
        if budget <= 0:
            self._next_send_check = min(self._sent.values()) + self.resend_after
            return 0
        holding = self.holding(now)
        sent = 0
        for seq, payload in self.candidates(holding=holding):
            if sent >= budget:
                break
            last = self._sent.get(seq)
            if last is None or now - last >= self.resend_after:
                self._send(seq, payload, now)
                sent += 1
        if sent < budget:
            # Everything unacknowledged is in flight: nothing to do until a sample, an
            # acknowledgement, a reconnect, or the oldest resend falls due.
            self._next_send_check = (
                min(self._sent.values()) + self.resend_after if self._sent else float("inf")
            )
            if holding:  # held samples go out flagged when the hold ends
                self._next_send_check = min(self._next_send_check,
                                            self._connected_at + HOLD_UNSYNCED_S)
        return sent

    def prune(self) -> bool:
        """Drop samples past retention, acknowledged or not: the outbox must not fill the SD card.

        Not while the clock is unknown (a clock years ahead would delete everything); returns
        whether it pruned.
        """
        if self.clock_state == "unknown":
            return False
        cutoff = self._now_ms() - self.config.agent.retention_hours * 3600 * 1000
        self.db.execute("DELETE FROM health_outbox WHERE ts < ?", [cutoff])
        return True

    # -- summaries -----------------------------------------------------------------------------
    def collect_summaries(self) -> dict[str, dict[str, summaries.Value]]:
        """Every provider's section, validated; a provider that fails is left out (and logged
        once), so one broken capability cannot silence the others."""
        sections: dict[str, dict[str, summaries.Value]] = {}
        for provider in self.providers:
            name = provider.spec.name
            try:
                sections[name] = provider.spec.validate(dict(provider.collect(self.config, self.db)))
            except Exception as exc:  # any capability's bug, reported once
                if name not in self._broken_providers:
                    self._broken_providers.add(name)
                    log.warning("agent %s: summary %r left out: %s", self.device_id, name,
                                getattr(exc, "reason", None) or repr(exc))
                continue
            self._broken_providers.discard(name)
        return sections

    def report_summary(self) -> bool:
        """Publish the summaries if they changed, after a connect, or every
        SUMMARY_EVERY_SAMPLES samples; True if published."""
        self._summary_due = False
        if not self.session.connected:
            return False
        sections = self.collect_summaries()
        if (sections == self._last_summary
                and self._samples_since_summary < SUMMARY_EVERY_SAMPLES) or not sections:
            return False
        body = summaries.build(self._now_ms(), self.clock_state == "synced", sections, self.specs)
        # Not retained: the console keeps the latest itself, and a retained copy would outlive
        # a removed device in the broker. Sent again after every connect instead.
        info = self.client.publish(self.topics.summary(self.device_id), body, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        self._last_summary = sections
        self._samples_since_summary = 0
        return True

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
                    self.retime()
                    self.clock.record_good_time()
                    self._samples_since_summary += 1
                    self._summary_due = True
                    # Skip missed ticks rather than bursting after a stall.
                    next_sample += interval * max(1, int((now - next_sample) // interval) + 1)
                if now >= next_prune:
                    next_prune = now + (3600 if self.prune() else 60)
                if self._summary_due:
                    self.report_summary()
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
