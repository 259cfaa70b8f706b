"""What every `appliance` command shares, as decorators: the configuration, `--json`, SIGTERM.

A capability's `cli.py` builds its click group from these, so each command loads and validates
the one TOML file the same way, prints state the same way, and stops the same way:

    @group.command("show")
    @json_option
    @pass_config
    def show(cfg: Config, out: Output) -> None:
        out.emit({"sessions": 3}, lambda d: f"{d['sessions']} sessions")
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import click

from appliance import config as config_module
from appliance.config import Config

P = ParamSpec("P")
R = TypeVar("R")


def load_config(ctx: click.Context) -> Config:
    """The validated configuration named by the root `--config` (a ConfigError ends in main(),
    status 2); logging is set up from it once."""
    root = ctx.find_root()
    root.ensure_object(dict)
    cached: Config | None = root.obj.get("config")
    if cached is not None:
        return cached
    cfg = config_module.load(root.obj.get("config_path"))
    logging.basicConfig(
        level=cfg.appliance.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    root.obj["config"] = cfg
    return cfg


def pass_config(f: Callable[..., R]) -> Callable[..., R]:
    """Give the command the validated `Config` as its first argument."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        return f(load_config(click.get_current_context()), *args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class Output:
    """Where a command prints state: JSON for scripts with `--json`, text for people otherwise."""

    as_json: bool

    def emit(self, data: Any, text: Callable[[Any], str]) -> None:
        if self.as_json:
            click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
        else:
            click.echo(text(data))


def json_option(f: Callable[..., R]) -> Callable[..., R]:
    """Add `--json`; the command receives an `Output` (after the config, if it takes one)."""

    @click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
    @functools.wraps(f)
    def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> R:
        return f(*args, Output(as_json), **kwargs)

    return wrapper


def stop_on_signal() -> threading.Event:
    """An event set by SIGTERM (systemd's stop) or SIGINT (Ctrl-C): long-running services loop
    until it is set, then stop cleanly."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
