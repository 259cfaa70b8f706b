"""Capability summaries: a few named figures per capability, reported by the agent, shown by the
console. Specs, the registry and the `summary` message (schema version 1). No I/O.

A capability declares its summary in `appliance/<capability>/summary.py`:

    SUMMARY = SummarySpec("network", "Network", (Field("clients", "Clients", "count"), ...))
    def collect(config: Config, db: sqlite_utils.Database) -> dict[str, Value]: ...

and adds that module's path to `SUMMARIES`. The agent calls every `collect` and publishes the
sections; the console validates each section against the same spec and renders it from the
spec (labels, formatting by kind). Nothing else in either needs to change.

Message on `<root>/dev/<id>/summary`:

    {"v":1,"ts":1767225600123,"clock":"synced","s":{"agent":{"backlog":0,...},"network":{...}}}

Parsing is strict per section: a section with an unknown field, a value of the wrong type or out
of bounds is rejected (and the others kept); a section this console has no spec for is ignored,
so a newer appliance works with an older console.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Literal, get_args

from appliance.fleet.payloads import MAX_PAYLOAD_BYTES, PayloadError, encode, load

if TYPE_CHECKING:
    import sqlite_utils

    from appliance.config import Config

# Module paths of the summary providers, in the order the console shows them. A capability
# adds its `appliance.<capability>.summary` here; nothing else.
SUMMARIES: tuple[str, ...] = (
    "appliance.fleet.summary", "appliance.network.summary", "appliance.filter.summary",
    "appliance.moodle.summary", "appliance.devices.summary", "appliance.content.summary",
)

Kind = Literal["count", "bytes", "seconds", "timestamp", "text", "bool", "pct"]
KINDS: tuple[str, ...] = get_args(Kind)
Value = int | float | str | bool | None

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
MAX_TEXT = 200
MAX_FIELDS = 64
MAX_SECTIONS = 32
# Integers a JSON reader anywhere (the browser included) holds exactly.
MAX_INT = 2**53 - 1
# Default bounds per numeric kind; a field may narrow them. Timestamps are ms since the epoch.
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "count": (0, MAX_INT),
    "bytes": (0, MAX_INT),
    "seconds": (0, 100 * 365 * 86400.0),
    "timestamp": (0, MAX_INT),
    "pct": (0.0, 100.0),
}
INTEGER_KINDS = ("count", "bytes", "timestamp")


def N_(message: str) -> str:
    """Mark a spec's title or label for translation (extracted by pybabel; the console
    translates it where it shows it). The identity: the agent needs no translation machinery."""
    return message


@dataclass(frozen=True)
class Field:
    """One figure of a summary. `low`/`high` narrow the kind's bounds (numeric kinds only).

    Every value may also be None (null): "not known" or "none yet", shown as a dash.
    """

    key: str
    label: str
    kind: Kind
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if not NAME_PATTERN.fullmatch(self.key):
            raise ValueError(f"summary field key {self.key!r} must match {NAME_PATTERN.pattern}")
        if self.kind not in KINDS:
            raise ValueError(f"summary field {self.key!r}: kind must be one of {', '.join(KINDS)}")
        if self.kind not in DEFAULT_BOUNDS and (self.low is not None or self.high is not None):
            raise ValueError(f"summary field {self.key!r}: a {self.kind} field has no bounds")
        low, high = self.bounds
        if low > high:
            raise ValueError(f"summary field {self.key!r}: low is above high")

    @property
    def bounds(self) -> tuple[float, float]:
        low, high = DEFAULT_BOUNDS.get(self.kind, (0, 0))
        return (low if self.low is None else self.low, high if self.high is None else self.high)

    def check(self, value: object) -> Value:
        """The value if it fits this field, else PayloadError naming the field."""
        if value is None:
            return None
        if self.kind == "text":
            if not isinstance(value, str) or len(value) > MAX_TEXT:
                raise PayloadError(f"bad text field '{self.key}'")
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise PayloadError(f"bad bool field '{self.key}'")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PayloadError(f"bad {self.kind} field '{self.key}'")
        if self.kind in INTEGER_KINDS and not isinstance(value, int):
            raise PayloadError(f"bad {self.kind} field '{self.key}'")
        if not math.isfinite(value):
            raise PayloadError(f"bad {self.kind} field '{self.key}'")
        low, high = self.bounds
        if not low <= value <= high:
            raise PayloadError(f"field '{self.key}' out of range")
        return value


@dataclass(frozen=True)
class SummarySpec:
    """A capability's summary: its section name (an id), the panel's title and its fields."""

    name: str
    title: str
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        if not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"summary name {self.name!r} must match {NAME_PATTERN.pattern}")
        keys = [f.key for f in self.fields]
        if len(set(keys)) != len(keys):
            raise ValueError(f"summary {self.name!r}: field keys must be unique")
        if not 1 <= len(keys) <= MAX_FIELDS:
            raise ValueError(f"summary {self.name!r}: 1-{MAX_FIELDS} fields")

    def validate(self, values: object) -> dict[str, Value]:
        """Every field of the spec, in spec order (missing ones None); PayloadError if anything
        is not a known field or does not fit it."""
        if not isinstance(values, dict):
            raise PayloadError("not an object")
        by_key = {f.key: f for f in self.fields}
        for key in values:
            if key not in by_key:
                raise PayloadError(f"unknown field '{str(key)[:40]}'")
        return {f.key: f.check(values.get(f.key)) for f in self.fields}


@dataclass(frozen=True)
class Provider:
    """A summary module: its spec and its Pi-side `collect(config, db)`."""

    spec: SummarySpec
    collect: Callable[[Config, sqlite_utils.Database], Mapping[str, Value]]


@cache
def providers(modules: tuple[str, ...] = SUMMARIES) -> tuple[Provider, ...]:
    """Import the summary modules (once) and return their specs and collectors, in order.

    Imported lazily so that importing this module pulls in no capability.
    """
    found = []
    for path in modules:
        module = importlib.import_module(path)
        spec = getattr(module, "SUMMARY", None)
        collect = getattr(module, "collect", None)
        if not isinstance(spec, SummarySpec) or not callable(collect):
            raise TypeError(f"{path} must define SUMMARY (a SummarySpec) and collect(config, db)")
        found.append(Provider(spec, collect))
    names = [p.spec.name for p in found]
    if len(set(names)) != len(names):
        raise ValueError(f"summary names must be unique: {names}")
    return tuple(found)


def specs(modules: tuple[str, ...] = SUMMARIES) -> dict[str, SummarySpec]:
    """The registered specs by name, in the registry's order."""
    return {p.spec.name: p.spec for p in providers(modules)}


@dataclass(frozen=True)
class Summary:
    """A parsed `summary` message. `sections` passed their spec; `rejected` maps a known
    section to why it failed; `unknown` are sections this console has no spec for."""

    ts: int
    synced: bool
    sections: dict[str, dict[str, Value]]
    rejected: dict[str, str] = field(default_factory=dict)
    unknown: tuple[str, ...] = ()


def build(ts_ms: int, synced: bool, sections: Mapping[str, Mapping[str, Value]],
          known: Mapping[str, SummarySpec]) -> bytes:
    """Encode a summary; every section is validated first (PayloadError: a provider's bug)."""
    body = {name: known[name].validate(dict(values)) for name, values in sections.items()}
    raw = encode({"ts": ts_ms, "clock": "synced" if synced else "unsynced", "s": body})
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadError("too large")
    return raw


def parse(raw: bytes, known: Mapping[str, SummarySpec]) -> Summary:
    """Parse a summary. PayloadError for a bad envelope; bad sections are in `rejected`."""
    obj = load(raw)
    ts = obj.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= MAX_INT:
        raise PayloadError("bad or missing 'ts'")
    clock = obj.get("clock")
    if clock not in ("synced", "unsynced"):
        raise PayloadError("bad or missing 'clock'")
    body = obj.get("s")
    if not isinstance(body, dict) or len(body) > MAX_SECTIONS:
        raise PayloadError("bad or missing 's'")
    sections: dict[str, dict[str, Value]] = {}
    rejected: dict[str, str] = {}
    unknown: list[str] = []
    for name, values in body.items():
        spec = known.get(name)
        if spec is None:
            unknown.append(name[:40])
            continue
        try:
            sections[name] = spec.validate(values)
        except PayloadError as exc:
            rejected[name] = exc.reason
    return Summary(ts=ts, synced=clock == "synced", sections=sections, rejected=rejected,
                   unknown=tuple(unknown))


def dumps(values: Mapping[str, Value]) -> str:
    """A validated section as stored by the console (compact JSON)."""
    return json.dumps(values, separators=(",", ":"))

