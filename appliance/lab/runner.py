"""Run the lab: every capability's part, in order; stop everything in order when asked."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from appliance.config import load as load_config
from appliance.console.lab import ConsolePart
from appliance.content.lab import ContentPart
from appliance.devices.lab import DevicesPart
from appliance.filter.lab import FilterPart
from appliance.fleet.broker import port_open
from appliance.fleet.lab import FleetPart
from appliance.lab.parts import (
    HOST,
    LabContext,
    LabError,
    LabPart,
    PartFactory,
    Slot,
    display_command,
    write_toml,
)
from appliance.moodle.lab import MoodlePart
from appliance.network.lab import NetworkPart
from appliance.portal.lab import PortalPart

# Every capability's part, in start order (a part may use facts of the parts before it); a new
# capability adds its part here. The classroom comes last: it moves the first appliance's
# portal and agent into its Pi namespace, changing what the parts before it configured.
# The filter after the network: it uses the classroom the network part builds.
PARTS: tuple[PartFactory, ...] = (FleetPart, ConsolePart, PortalPart, ContentPart, MoodlePart,
                                   DevicesPart, NetworkPart, FilterPart)

__all__ = ["PARTS", "Lab", "LabError"]


@dataclass
class Lab:
    directory: Path
    count: int = 2
    base_port: int = 8800
    interval: float = 2.0
    options: dict[str, Any] = field(default_factory=dict)
    parts: list[LabPart] = field(default_factory=list)
    ctx: LabContext | None = None

    def __post_init__(self) -> None:
        self.ctx = LabContext(self.directory, self.count, self.base_port, self.interval,
                              options=dict(self.options))
        self.parts = [p for p in (factory() for factory in PARTS) if p.enabled(self.ctx)]

    @property
    def context(self) -> LabContext:
        assert self.ctx is not None
        return self.ctx

    def appliance_id(self, n: int) -> str:
        return f"lab-school-{n}"

    # -- set-up --------------------------------------------------------------------------------
    def check(self) -> None:
        ctx = self.context
        needs_root = [p.name for p in self.parts if p.needs_root]
        if needs_root and os.geteuid() != 0:
            raise LabError(f"{', '.join(needs_root)} need root (network namespaces); run as root")
        ports = [port for part in self.parts for port in part.ports(ctx)]
        busy = [p for p in ports if port_open(HOST, p)]
        if busy:
            raise LabError(
                f"port(s) {', '.join(map(str, busy))} on {HOST} are in use "
                "(another lab?); stop it or pass --base-port"
            )

    def prepare(self) -> None:
        """Every part adds its config; the configs are written and validated; parts prepare."""
        ctx = self.context
        ctx.slots = [Slot(n, self.appliance_id(n), self.directory / "appliances" / self.appliance_id(n))
                     for n in range(1, self.count + 1)]
        for part in self.parts:
            part.configure(ctx)
        write_toml(ctx.console_config, ctx.console_sections)
        for slot in ctx.slots:
            write_toml(slot.config_path, slot.sections)
        for path in [ctx.console_config, *(s.config_path for s in ctx.slots)]:
            load_config(path)  # the lab's own configs must pass the same validation
        for part in self.parts:
            part.prepare(ctx)
        ctx.services = [s for part in self.parts for s in part.services(ctx)]

    # -- running -------------------------------------------------------------------------------
    def start(self) -> None:
        ctx = self.context
        for part in self.parts:
            part.start(ctx)
        for service in ctx.services:
            service.log.parent.mkdir(parents=True, exist_ok=True)
            prefix = ["ip", "netns", "exec", service.netns] if service.netns else []
            with service.log.open("ab") as log:
                # Own session: Ctrl-C reaches the lab only, which then stops things in order.
                service.proc = subprocess.Popen(
                    [*prefix, *service.args], stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )
        deadline = time.monotonic() + 30
        for service in ctx.services:
            if service.ready_url is None and service.ready is None:
                continue
            while not (service.ready() if service.ready is not None
                       else _http_ok(str(service.ready_url))):
                if service.proc is not None and service.proc.poll() is not None:
                    raise LabError(f"{service.name} exited at start; see {service.log}")
                if time.monotonic() > deadline:
                    raise LabError(f"{service.name} did not answer "
                                   f"{service.ready_url or 'its readiness check'}; see {service.log}")
                time.sleep(0.1)

    def stop(self) -> None:
        ctx = self.context
        for order in sorted({s.stop_order for s in ctx.services}):
            procs = [s.proc for s in ctx.services
                     if s.stop_order == order and s.proc is not None and s.proc.poll() is None]
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for part in reversed(self.parts):
            part.stop(ctx)

    def run(self, stop: threading.Event, out: Callable[[str], None] = print) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = _lock(self.directory / "lab.lock")
        try:
            self.check()
            try:
                # Inside: a part may build things while it configures (the classroom's
                # namespaces), and stop() must undo them if anything later fails.
                self.prepare()
                self.start()
                out(self.banner())
                while not stop.wait(0.5):
                    self._report_exits(out)
            finally:
                out("lab: stopping every process ...")
                self.stop()
                out("lab: stopped")
        finally:
            lock.close()

    def _report_exits(self, out: Callable[[str], None]) -> None:
        for s in self.context.services:
            if s.proc is not None and s.proc.poll() is not None and not s.reported_exit:
                s.reported_exit = True
                out(f"lab: {s.name} exited with code {s.proc.returncode} (log: {s.log})")

    def banner(self) -> str:
        ctx = self.context
        lines = ["", "Classroom Edge lab is running (Ctrl-C stops it)."]
        for part in self.parts:
            lines += part.banner(ctx)
        lines += [f"  logs      {ctx.logs}", "", "Try:"]
        for part in self.parts:
            lines += [f"  {line}" for line in part.hints(ctx)]
        lines += [f"  {display_command()} --help   lists every command", ""]
        return "\n".join(lines)


def _lock(path: Path) -> IO[str]:
    handle = path.open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise LabError(f"another lab is running in {path.parent}") from None
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our loopback URL
            return bool(response.status == 200)
    except OSError:
        return False
