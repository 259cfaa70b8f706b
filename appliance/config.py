"""Typed configuration: one TOML file per appliance (or console), validated once at start.

Every key lives here and nowhere else; `docs/configuration.md` documents each one. Errors name the
file, the section and the key, so an IT admin can fix the file without reading code.

Only the standard library is used (tomllib), so loading a config has no side effects.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

DEFAULT_PATH = Path("/etc/appliance/appliance.toml")
ENV_VAR = "APPLIANCE_CONFIG"

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # use with fullmatch()


class ConfigError(Exception):
    """A configuration problem a person can fix: names the file and, where known, the key."""

    def __init__(self, path: Path | str | None, key: str | None, message: str) -> None:
        self.path = Path(path) if path else None
        self.key = key
        self.message = message
        where = str(self.path) if self.path else "<config>"
        if key:
            where += f": {key}"
        super().__init__(f"{where}: {message}")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _port(value: int) -> None:
    _check(1 <= value <= 65535, "must be a TCP port from 1 to 65535")


def _positive(value: float) -> None:
    _check(value > 0, "must be greater than 0")


def _id(value: str) -> None:
    _check(
        bool(ID_PATTERN.fullmatch(value)),
        "must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit "
        "(it becomes an MQTT topic level and a file name)",
    )


def _nonempty(value: str) -> None:
    _check(bool(value.strip()), "must not be empty")


def _rule(check: typing.Callable[[Any], None]) -> dict[str, Any]:
    return {"check": check}


@dataclass(frozen=True)
class ApplianceSection:
    """Who this machine is and where it keeps its state."""

    id: str = field(metadata=_rule(_id))
    name: str = ""
    state_dir: Path = Path("/var/lib/appliance")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class PortalSection:
    """The student-facing web portal."""

    listen: str = field(default="0.0.0.0", metadata=_rule(_nonempty))  # noqa: S104 - students reach it
    port: int = field(default=80, metadata=_rule(_port))
    workers: int = field(default=2, metadata=_rule(_positive))
    threads: int = field(default=8, metadata=_rule(_positive))
    content_dir: Path = Path("/var/lib/appliance/content")
    title: str = field(default="Classroom library", metadata=_rule(_nonempty))


@dataclass(frozen=True)
class MqttSection:
    """How the agent and the console's ingest worker reach the broker."""

    host: str = field(default="localhost", metadata=_rule(_nonempty))
    port: int = field(default=8883, metadata=_rule(_port))
    tls: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str = ""
    password_file: Path | None = None
    keepalive: int = field(
        default=30, metadata=_rule(lambda v: _check(2 <= v <= 600, "must be 2-600 seconds"))
    )
    topic_root: str = field(
        default="edge/v1",
        metadata=_rule(
            lambda v: _check(
                bool(re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", v)),
                "must be topic levels of letters, digits, '-' and '_' separated by '/'",
            )
        ),
    )


@dataclass(frozen=True)
class AgentSection:
    """Health collection and reporting on the appliance."""

    interval: float = field(
        default=60.0, metadata=_rule(lambda v: _check(0.5 <= v <= 3600, "must be 0.5-3600 seconds"))
    )
    retention_hours: int = field(default=168, metadata=_rule(_positive))
    backoff_max: float = field(default=120.0, metadata=_rule(_positive))


@dataclass(frozen=True)
class ConsoleSection:
    """The central console: web UI and ingest."""

    listen: str = field(default="127.0.0.1", metadata=_rule(_nonempty))
    port: int = field(default=8080, metadata=_rule(_port))
    workers: int = field(default=2, metadata=_rule(_positive))
    threads: int = field(default=16, metadata=_rule(_positive))
    secret_key_file: Path | None = None
    offline_after: float = field(default=180.0, metadata=_rule(_positive))
    history_days: int = field(default=30, metadata=_rule(_positive))
    cookie_secure: bool = True
    proxy_hops: int = field(
        default=0, metadata=_rule(lambda v: _check(0 <= v <= 5, "must be 0-5"))
    )


@dataclass(frozen=True)
class Config:
    """The whole validated configuration. Build it with `load()` or `from_dict()`."""

    appliance: ApplianceSection
    portal: PortalSection = field(default_factory=PortalSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    agent: AgentSection = field(default_factory=AgentSection)
    console: ConsoleSection = field(default_factory=ConsoleSection)
    source: Path | None = field(default=None, compare=False)

    @property
    def database_path(self) -> Path:
        return self.appliance.state_dir / "appliance.db"

    @property
    def console_database_path(self) -> Path:
        return self.appliance.state_dir / "console.db"


SECTIONS: dict[str, type] = {
    "appliance": ApplianceSection,
    "portal": PortalSection,
    "mqtt": MqttSection,
    "agent": AgentSection,
    "console": ConsoleSection,
}


def resolve_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config file to use: an explicit flag, else $APPLIANCE_CONFIG, else the default."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a config file; raise ConfigError naming the file and key on any problem."""
    resolved = resolve_path(path)
    try:
        raw = resolved.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            resolved, None, f"no such file (pass --config or set ${ENV_VAR})"
        ) from None
    except OSError as exc:
        raise ConfigError(resolved, None, f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(resolved, None, "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(resolved, None, f"is not valid TOML: {exc}") from None
    return from_dict(data, source=resolved)


def from_dict(data: dict[str, Any], source: Path | None = None) -> Config:
    """Validate an already-parsed mapping (what tests and the lab build)."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            source, unknown[0], f"unknown section; expected one of {', '.join(SECTIONS)}"
        )
    if "appliance" not in data:
        raise ConfigError(source, "appliance", "section is required (it holds at least 'id')")
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(source, name, "must be a table ([section])")
        sections[name] = _build_section(cls, name, value, source)
    config = Config(**sections, source=source)
    _check_cross_rules(config, source)
    return config


def _build_section(cls: type, section: str, values: dict[str, Any], source: Path | None) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            source,
            f"{section}.{unknown[0]}",
            f"unknown key; [{section}] accepts {', '.join(fields)}",
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{section}.{name}"
        if name not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(source, key, "is required")
            continue
        try:
            value = _coerce(values[name], hints[name])
            check = f.metadata.get("check")
            if check is not None:
                check(value)
        except ValueError as exc:
            raise ConfigError(source, key, f"{exc} (got {values[name]!r})") from None
        kwargs[name] = value
    return cls(**kwargs)


def _coerce(value: Any, hint: Any) -> Any:
    """Turn a TOML value into the annotated type, or raise ValueError saying what was expected."""
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if value == "" and type(None) in get_args(hint):
            return None
        return _coerce(value, options[0])
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be a whole number")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ValueError("must be a non-empty path string")
        return Path(value)
    raise TypeError(f"unsupported config type {hint!r}")  # a bug in this module, not in the file


def _check_cross_rules(config: Config, source: Path | None) -> None:
    mqtt = config.mqtt
    if (mqtt.cert_file is None) != (mqtt.key_file is None):
        raise ConfigError(source, "mqtt.key_file", "cert_file and key_file go together")
    if mqtt.password_file is not None and not mqtt.username:
        raise ConfigError(source, "mqtt.username", "is required when password_file is set")
    if not mqtt.tls and (mqtt.ca_file or mqtt.cert_file):
        raise ConfigError(source, "mqtt.tls", "is false but TLS files are set; set tls = true")
