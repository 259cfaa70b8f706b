"""An MQTT connection that keeps itself up: jittered reconnects, fresh Will per attempt, one thread.

paho's own reconnect loop has deterministic backoff and fixes the Will at the first CONNECT; we
drive `Client.loop()` ourselves so every attempt gets a new session counter in its Will and a
delay with full jitter. Everything runs on the caller's thread: no callback races with our state.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from appliance.config import ConfigError, MqttSection
from appliance.fleet.backoff import Backoff
from appliance.secretfiles import check_private, read_secret

log = logging.getLogger(__name__)

# Queued commands survive a short outage of the device; bounded so a dead device's queue expires.
SESSION_EXPIRY_S = 3600


def tls_context(mqtt_config: MqttSection) -> ssl.SSLContext:
    """Verify the broker against `ca_file` (or the system CAs); present our certificate if set."""
    try:
        context = ssl.create_default_context(
            cafile=str(mqtt_config.ca_file) if mqtt_config.ca_file else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(mqtt_config.ca_file, "mqtt.ca_file", f"cannot load CA certificate: {exc}") from None
    if mqtt_config.cert_file and mqtt_config.key_file:
        check_private(mqtt_config.key_file, "mqtt.key_file")
        try:
            context.load_cert_chain(str(mqtt_config.cert_file), str(mqtt_config.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                mqtt_config.cert_file, "mqtt.cert_file",
                f"cannot load client certificate and key: {getattr(exc, 'strerror', None) or exc}",
            ) from None
    return context


def make_client(mqtt_config: MqttSection, client_id: str) -> mqtt.Client:
    """A paho client (MQTT 5) with TLS and credentials from the config; not yet connected."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    # An exception in one of our callbacks must not kill the connection.
    client.suppress_exceptions = True
    client.max_queued_messages_set(1000)
    if mqtt_config.tls:
        client.tls_set_context(tls_context(mqtt_config))
    if mqtt_config.username:
        password = (
            read_secret(mqtt_config.password_file, "mqtt.password_file")
            if mqtt_config.password_file
            else None
        )
        client.username_pw_set(mqtt_config.username, password)
    return client


class MqttSession:
    """Owns one client's connection life cycle. Call `poll()` from one thread, often."""

    def __init__(
        self,
        client: mqtt.Client,
        mqtt_config: MqttSection,
        *,
        on_connected: Callable[[], None] = lambda: None,
        before_connect: Callable[[], None] = lambda: None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "mqtt",
    ) -> None:
        self.client = client
        self.config = mqtt_config
        self.on_connected = on_connected
        self.before_connect = before_connect
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.name = name
        self.connected = False
        self.connects = 0
        self.failures = 0
        self._socket_open = False
        self._retry_at = 0.0
        self._last_reason = ""
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect

    # paho callbacks (run inside client.loop(), i.e. on our thread)
    def _handle_connect(self, client: mqtt.Client, userdata: object, flags: object,
                        reason_code: object, properties: object) -> None:
        if getattr(reason_code, "is_failure", False):
            self._drop(f"broker refused the connection: {reason_code}")
            return
        self.connected = True
        self.connects += 1
        if self.failures:
            log.info("%s: connected to %s:%s after %d failed attempts",
                     self.name, self.config.host, self.config.port, self.failures)
        else:
            log.info("%s: connected to %s:%s", self.name, self.config.host, self.config.port)
        self.failures = 0
        self._last_reason = ""
        self.backoff.reset()
        self.on_connected()

    def _handle_disconnect(self, client: mqtt.Client, userdata: object, flags: object,
                           reason_code: object, properties: object) -> None:
        if self.connected:
            self._drop(f"disconnected: {reason_code}")  # logged with the retry
        else:
            # Closed before CONNACK: with TLS 1.3 this is how a refused client certificate looks.
            self._drop("closed by the broker before accepting us: check the client certificate "
                       "or credentials")

    def _drop(self, reason: str) -> None:
        if not self._socket_open:
            return  # this attempt already failed and has its retry scheduled
        self.connected = False
        self._socket_open = False
        self._schedule_retry(reason)

    def _schedule_retry(self, reason: str) -> None:
        delay = min(self.backoff.next_delay(), 10.0 * self.config.keepalive)
        self._retry_at = self.clock() + delay
        self.failures += 1
        # Loud when something new happens, quiet while the same outage goes on: a Pi whose
        # uplink is down for a week must not fill its SD card with the same line.
        loud = reason != self._last_reason or self.failures % 100 == 1
        self._last_reason = reason
        log.log(logging.WARNING if loud else logging.DEBUG,
                "%s: broker %s:%s unreachable (%s); retrying in %.1f s (attempt %d)",
                self.name, self.config.host, self.config.port, reason, delay, self.failures)

    def poll(self, timeout: float = 0.5) -> None:
        """Connect if due, then process network traffic for up to `timeout` seconds."""
        if not self._socket_open:
            wait = self._retry_at - self.clock()
            if wait > 0:
                time.sleep(min(wait, timeout))
                return
            self._try_connect()
            if not self._socket_open:
                return
        rc = self.client.loop(timeout=timeout)
        if rc != mqtt.MQTT_ERR_SUCCESS and self._socket_open:
            self._drop(f"connection lost: {mqtt.error_string(rc)}")

    def _try_connect(self) -> None:
        self.before_connect()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        # Open before connect(): paho may already report a disconnect from inside connect().
        self._socket_open = True
        try:
            if self.connects == 0:
                # Never a clean start, not even after a restart of this process: the broker
                # keeps what arrived for us meanwhile (up to the session expiry).
                self.client.connect(
                    self.config.host,
                    self.config.port,
                    keepalive=self.config.keepalive,
                    clean_start=False,
                    properties=properties,
                )
            else:
                self.client.reconnect()
        except (OSError, ssl.SSLError) as exc:
            self._socket_open = False
            self._schedule_retry(_describe(exc))

    def close(self) -> None:
        """Disconnect cleanly (the broker then discards our Will); no reconnect after this."""
        if self._socket_open:
            self.client.on_disconnect = None
            self.client.disconnect()
            self.client.loop(timeout=0.2)
        self.connected = False
        self._socket_open = False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate is not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
