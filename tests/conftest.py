"""Shared fixtures: a real Mosquitto, network namespaces, and our services on free ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.fleet.broker import Mosquitto, free_port
from appliance.harness.netns import Network
from appliance.harness.process import Process, wait_for, write_config

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# The test machine's clock is kept by its host, and its kernel may have no NTP state: without
# this every sample of the agents the tests start would be held back as "unsynced".
os.environ.setdefault("APPLIANCE_CLOCK_SOURCE", "host")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real Mosquitto on a free loopback port, stopped after the test."""
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def network() -> Iterator[Network]:
    """Namespaces the test creates with `network.add()`; all removed afterwards."""
    net = Network()
    yield net
    net.close()


def mqtt_section(port: int) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": port, "tls": False, "keepalive": 2}


@pytest.fixture
def appliance_config(tmp_path: Path, broker: Mosquitto):
    """Factory: write an appliance config pointing at the test broker; returns its path."""

    def make(ident: str = "test-school-1", *, interval: float = 0.5, **extra: dict[str, object]) -> Path:
        base = tmp_path / ident
        (base / "content").mkdir(parents=True, exist_ok=True)
        sections: dict[str, dict[str, object]] = {
            "appliance": {"id": ident, "name": ident.replace("-", " ").title(),
                          "state_dir": str(base / "state")},
            "portal": {"listen": "127.0.0.1", "port": free_port(), "workers": 1},
            "content": {"root": str(base / "content"), "archive_port": free_port()},
            "mqtt": mqtt_section(broker.port),
            "agent": {"interval": interval, "backoff_max": 1.0},
        }
        for key, value in extra.items():
            sections[key] = {**sections.get(key, {}), **value}
        return write_config(base / "appliance.toml", **sections)

    return make


@pytest.fixture
def console_config(tmp_path: Path, broker: Mosquitto) -> Path:
    base = tmp_path / "console"
    return write_config(
        base / "console.toml",
        appliance={"id": "test-console", "state_dir": str(base / "state")},
        mqtt=mqtt_section(broker.port),
        console={"listen": "127.0.0.1", "port": free_port(), "workers": 1,
                 "cookie_secure": False, "offline_after": 3.0},
    )


@pytest.fixture
def start(tmp_path: Path) -> Iterator:
    """Factory: start `appliance --config CFG COMMAND [ARGS...]`; every process is stopped afterwards."""
    procs: list[Process] = []

    def run(config: Path, *args: str, netns: str | None = None) -> Process:
        log = tmp_path / f"{config.parent.name}-{'-'.join(args)}-{len(procs)}.log"
        proc = Process(config, *args, log=log, netns=netns)
        procs.append(proc.start())
        return proc

    yield run
    for proc in procs:
        proc.stop()


__all__ = ["wait_for"]


@pytest.fixture
def runner():
    """A click CLI runner (commands run in-process, output captured)."""
    from click.testing import CliRunner

    return CliRunner()
