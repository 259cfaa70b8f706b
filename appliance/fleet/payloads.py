"""Build and parse the JSON messages of the fleet contract (schema version 1). No I/O.

Parsing is strict: anything that is not exactly what we expect raises `PayloadError` with a short
reason, which the console counts and logs; nothing unparsed goes further.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024

# Health metrics a device may send, with the range that makes sense for each.
METRICS: dict[str, tuple[float, float]] = {
    "cpu_pct": (0.0, 100.0),
    "mem_pct": (0.0, 100.0),
    "disk_pct": (0.0, 100.0),
    "temp_c": (-60.0, 150.0),
    "load1": (0.0, 10_000.0),
    "uptime_s": (0.0, 10 * 365 * 86400.0),
}


class PayloadError(ValueError):
    """A message that does not follow the contract; `reason` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Status:
    """Presence: `online` birth or `offline` (will, shutdown). `session` orders them."""

    state: str
    session: int
    reason: str | None = None
    ts: int | None = None
    agent: str | None = None
    name: str | None = None
    interval: float | None = None


@dataclass(frozen=True)
class Telemetry:
    """One health sample. `seq` is monotonic per device database; metrics may be missing.

    `synced` is False when the device's clock was not known good when the sample was taken and
    could not be corrected since: `ts` may be anything. Old agents never flag a sample.
    """

    seq: int
    ts: int
    metrics: dict[str, float]
    synced: bool = True


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps({"v": SCHEMA_VERSION, **obj}, separators=(",", ":")).encode()


def birth(session: int, ts_ms: int, agent: str, name: str, interval: float) -> bytes:
    # The interval lets the console tell a silent (wedged) agent from a slow one.
    return encode({"state": "online", "session": session, "ts": ts_ms, "agent": agent,
                   "name": name, "interval": interval})


def will(session: int) -> bytes:
    # Fixed at CONNECT time, so it cannot carry a useful timestamp: the console stamps arrival.
    return encode({"state": "offline", "reason": "lwt", "session": session})


def goodbye(session: int, ts_ms: int, reason: str = "shutdown") -> bytes:
    return encode({"state": "offline", "reason": reason, "session": session, "ts": ts_ms})


def telemetry(seq: int, ts_ms: int, metrics: dict[str, float | None], *, synced: bool = True) -> bytes:
    body: dict[str, Any] = {"seq": seq, "ts": ts_ms,
                            "m": {k: v for k, v in metrics.items() if v is not None}}
    if not synced:
        # Only the exception is spelled out: a synced sample is byte for byte what it was.
        body["clock"] = "unsynced"
    return encode(body)


def load(raw: bytes) -> dict[str, Any]:
    """The JSON object of a payload of our schema version; PayloadError for anything else."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadError("too large")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PayloadError("not JSON") from None
    if not isinstance(obj, dict):
        raise PayloadError("not a JSON object")
    if obj.get("v") != SCHEMA_VERSION:
        raise PayloadError("unsupported schema version")
    return obj


def _int(obj: dict[str, Any], key: str, *, required: bool = True, minimum: int = 0) -> int | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PayloadError(f"bad or missing '{key}'")
    return value


def _str(obj: dict[str, Any], key: str, limit: int = 200) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise PayloadError(f"bad '{key}'")
    return value


def parse_status(raw: bytes) -> Status:
    obj = load(raw)
    state = obj.get("state")
    if state not in ("online", "offline"):
        raise PayloadError("bad or missing 'state'")
    session = _int(obj, "session")
    assert session is not None
    return Status(
        state=state,
        session=session,
        reason=_str(obj, "reason", 40),
        ts=_int(obj, "ts", required=False),
        agent=_str(obj, "agent", 40),
        name=_str(obj, "name"),
        interval=_interval(obj),
    )


def _interval(obj: dict[str, Any]) -> float | None:
    value = obj.get("interval")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.1 <= value <= 86400:
        raise PayloadError("bad 'interval'")
    return float(value)


def parse_telemetry(raw: bytes) -> Telemetry:
    obj = load(raw)
    seq = _int(obj, "seq")
    ts = _int(obj, "ts")
    assert seq is not None and ts is not None
    m = obj.get("m")
    if not isinstance(m, dict):
        raise PayloadError("bad or missing 'm'")
    metrics: dict[str, float] = {}
    for key, value in m.items():
        if key not in METRICS:
            continue  # newer agents may send more; ignoring keeps old consoles working
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise PayloadError(f"bad metric '{key}'")
        low, high = METRICS[key]
        if not low <= value <= high:
            raise PayloadError(f"metric '{key}' out of range")
        metrics[key] = float(value)
    clock = obj.get("clock", "synced")
    if clock not in ("synced", "unsynced"):
        raise PayloadError("bad 'clock'")
    return Telemetry(seq=seq, ts=ts, metrics=metrics, synced=clock == "synced")


MAX_ACK_RANGES = 500


def acks(seqs: list[int]) -> list[bytes]:
    """Acknowledge stored samples as [first, last] ranges, in as many messages as it takes."""
    ranges = to_ranges(seqs)
    return [
        encode({"seqs": ranges[i : i + MAX_ACK_RANGES]})
        for i in range(0, len(ranges), MAX_ACK_RANGES)
    ]


def to_ranges(seqs: list[int]) -> list[list[int]]:
    ranges: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return ranges


def parse_ack(raw: bytes) -> list[tuple[int, int]]:
    obj = load(raw)
    seqs = obj.get("seqs")
    if not isinstance(seqs, list) or len(seqs) > MAX_ACK_RANGES:
        raise PayloadError("bad or missing 'seqs'")
    ranges = []
    for item in seqs:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in item)
            or item[0] > item[1]
        ):
            raise PayloadError("bad range in 'seqs'")
        ranges.append((item[0], item[1]))
    return ranges
