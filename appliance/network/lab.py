"""The classroom network on the virtual classroom: what the tests of this capability and the
lab's `--classroom` run on the Pi of an `appliance.harness.classroom.Classroom`.

`PiNetwork` knows the configuration (the `[network]` section matching the classroom's
interfaces and subnets, the portal on port 80 of the Pi) and the processes: `appliance network
apply` (which starts dnsmasq, as root in "direct" mode), the privileged helper, the captive
responder and the portal, each in the Pi namespace. Tests call `start()`/`close()`;
`NetworkPart` (the lab) turns the same commands into the lab's `Service`s.

Everything runs as root inside the namespace, so the helper's allowlists name `root` for every
verb (on a real Pi they name the systemd units, see docs/network.md).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.harness import fakeinternet as fi
from appliance.harness.classroom import INET_DEV, UPLINK, WLAN, Classroom, ClassroomError
from appliance.harness.netns import Namespace
from appliance.harness.process import Process
from appliance.lab.parts import (
    STOP_APPLIANCE,
    LabContext,
    LabError,
    LabPart,
    Sections,
    Service,
    appliance_command,
    display_command,
    write_toml,
)
from appliance.network import probes
from appliance.network.apply import DirectRunner
from appliance.network.verbs import VERBS

PORTAL_NAME = "classroom.internal"
PORTAL_PORT = 80
CAPTIVE_PORT = 8081
# The lab's classroom namespaces: `celab-pi`, `celab-inet`, `celab-phone1..3`.
LAB_PREFIX = "celab"
# The lab's helper socket: a Unix socket path must stay under 108 bytes, which a lab folder
# deep in a home directory (or pytest's) does not.
LAB_RUN_DIR = Path("/run") / LAB_PREFIX
# Stopped after the agent (it may still ask the helper) and before the parts' own stop.
STOP_NETWORK = STOP_APPLIANCE + 5
# The processes of the network on the Pi, in start order: name -> `appliance` arguments.
COMMANDS: dict[str, tuple[str, ...]] = {
    "helper": ("network", "helper"),
    "captive": ("network", "captive"),
    "portal": ("portal",),
}


@dataclass
class PiNetwork:
    """The classroom network of `room`'s Pi, its files under `directory` (see the module
    docstring). `mode` and `session_hours` are the `[network]` keys of the same names."""

    room: Classroom
    directory: Path
    mode: str = "terms"
    session_hours: float = 1.0
    appliance_id: str = "classroom-pi"
    # The helper's socket folder; default `<directory>/run`. Tests that call the helper as an
    # unprivileged user put it where that user can reach it.
    run_dir: Path | None = None
    # More sections of the appliance's configuration (another capability on this Pi, e.g. the
    # filter's `[filter]`, which makes `apply` leave DNS to it).
    extra: Sections = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)

    # -- configuration -------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.directory / "appliance.toml"

    @property
    def render_dir(self) -> Path:
        return self.directory / "network"

    @property
    def socket(self) -> Path:
        return (self.run_dir or self.directory / "run") / "helper.sock"

    @property
    def spool_dir(self) -> Path:
        """The DHCP hook's spool: beside the helper's socket, since the hook runs as nobody,
        who may not enter a test's private folders (the run folder is made for other users)."""
        return (self.run_dir or self.directory) / "dhcp-spool"

    @property
    def pi(self) -> Namespace:
        return self.room.pi

    def network_section(self) -> dict[str, object]:
        """`[network]` for this classroom: an external access point on `wlan0` (the bridge),
        the uplink `uplink0`, dnsmasq run directly, every helper verb open to root."""
        hosts = list(self.room.subnet4.hosts())
        return {
            "access_point": "external", "interface": WLAN, "uplink": UPLINK,
            "ipv4": f"{self.room.gateway4}/{self.room.subnet4.prefixlen}",
            "ipv6": f"{self.room.gateway6}/64",
            "dhcp_first": str(hosts[99]), "dhcp_last": str(hosts[198]), "lease_minutes": 60,
            "portal_name": PORTAL_NAME, "portal_mode": self.mode,
            "session_hours": self.session_hours, "walled_garden": [fi.GARDEN_HOST],
            "captive_port": CAPTIVE_PORT, "services": "direct",
            "render_dir": str(self.render_dir),
            "helper": {"socket": str(self.socket),
                       **{key: ["root"] for _args, key in VERBS.values()}},
        }

    def portal_section(self) -> dict[str, object]:
        """The portal on port 80 of every address of the Pi (dual stack)."""
        return {"listen": "::", "port": PORTAL_PORT, "workers": 1}

    def sections(self) -> Sections:
        """A whole appliance configuration for tests (the lab adds these to its slot's)."""
        return {"appliance": {"id": self.appliance_id, "name": "Virtual classroom",
                              "state_dir": str(self.directory / "state")},
                "portal": self.portal_section(), "network": self.network_section(),
                # dnsmasq's DHCP hook (the device inventory's) writes its lines here.
                "devices": {"spool_dir": str(self.spool_dir)},
                "content": {"root": str(self.directory / "content")}, **self.extra}

    def write_config(self) -> Path:
        (self.directory / "content").mkdir(parents=True, exist_ok=True)
        write_toml(self.config, self.sections())
        return self.config

    # -- commands ------------------------------------------------------------------------------
    def appliance(self, *args: str, check: bool = True,
                  timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`appliance --config <config> ARGS` in the Pi namespace."""
        result = self.pi.run(*appliance_command(), "--config", str(self.config), *args,
                             check=False, timeout=timeout)
        if check and result.returncode != 0:
            raise ClassroomError(f"appliance {' '.join(args)} failed ({result.returncode}): "
                                 f"{result.stderr.strip()[-800:]}")
        return result

    def apply(self) -> dict[str, Any]:
        """`appliance network apply`: renders, loads the ruleset, (re)starts dnsmasq."""
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        done: dict[str, Any] = json.loads(self.appliance("network", "apply", "--json").stdout)
        return done

    def stop_dnsmasq(self) -> None:
        DirectRunner(self.render_dir).stop("dnsmasq")

    def ready(self, name: str) -> Callable[[], bool]:
        """A check that service `name` serves (the helper's socket, a port in the Pi)."""
        if name == "helper":
            return self.socket.exists
        port = CAPTIVE_PORT if name == "captive" else PORTAL_PORT
        code = (f"import socket; socket.create_connection(({self.room.gateway4!r}, {port}),"
                " timeout=1).close()")
        return lambda: self.pi.run(*appliance_command()[:1], "-c", code,
                                   check=False).returncode == 0

    # -- processes (tests) ---------------------------------------------------------------------
    def start(self, *names: str, timeout: float = 20) -> None:
        """Start `names` (default: every one of COMMANDS) in the Pi namespace, each waited for."""
        for name in names or tuple(COMMANDS):
            if name == "helper":
                self.socket.unlink(missing_ok=True)
            log = self.directory / f"{name}.log"
            proc = Process(self.config, *COMMANDS[name], log=log, netns=self.pi.name).start()
            self.processes[name] = proc
            deadline = time.monotonic() + timeout
            check = self.ready(name)
            while not check():
                if not proc.running or time.monotonic() > deadline:
                    raise ClassroomError(f"{name} did not start: {proc.output()[-1500:]}")
                time.sleep(0.05)

    def stop(self, *names: str) -> None:
        for name in names or tuple(reversed(COMMANDS)):
            proc = self.processes.pop(name, None)
            if proc is not None:
                proc.stop()

    def restart(self, *names: str) -> None:
        self.stop(*names)
        self.start(*names)

    def reconfigure(self, **keys: Any) -> None:
        """Change `mode` / `session_hours`, apply, and restart every running process."""
        for key, value in keys.items():
            setattr(self, key, value)
        running = [n for n in COMMANDS if n in self.processes]
        self.write_config()
        self.apply()
        self.restart(*running)

    def close(self) -> None:
        """Stop every process of ours and dnsmasq (the classroom is the caller's to close)."""
        self.stop()
        self.stop_dnsmasq()

    def helper_call(self, verb: str, **args: str) -> Any:
        """Call the helper from the Pi namespace (as root, like an admin)."""
        code = ("import json, sys; from appliance.network.client import call; "
                "print(json.dumps(call(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))))")
        result = self.pi.run(*appliance_command()[:1], "-c", code, str(self.socket), verb,
                             json.dumps(args), check=False)
        if result.returncode != 0:
            raise ClassroomError(f"helper {verb} failed: {result.stderr.strip()[-500:]}")
        return json.loads(result.stdout)


# -- the lab -----------------------------------------------------------------------------------
class NetworkPart(LabPart):
    """`scripts/lab --classroom [--offline]`: the first appliance's Pi in a virtual classroom.

    At configure it builds the classroom `LAB_PREFIX` (stale namespaces of a killed lab are
    removed first), gives the first slot its `[network]` section, moves its portal to port 80 of
    the Pi and its agent's broker to the management link, and offers the fact `broker_hosts`
    (the management link's machine end), which the fleet part adds to the broker's listeners
    and certificate. At start it applies the network (dnsmasq), then the helper, the captive
    responder, the portal and the agent run in the Pi namespace. At stop everything in it is
    stopped and every namespace removed.
    """

    name = "classroom"
    needs_root = True

    def __init__(self) -> None:
        self.room: Classroom | None = None
        self.pi_network: PiNetwork | None = None

    def enabled(self, ctx: LabContext) -> bool:
        return bool(ctx.options.get("classroom"))

    def configure(self, ctx: LabContext) -> None:
        slot = ctx.slots[0]
        directory = slot.directory / "classroom"
        self.room = Classroom(LAB_PREFIX, workdir=directory / "room").start()
        pi = PiNetwork(self.room, directory, mode=str(ctx.options.get("mode", "terms")),
                       appliance_id=slot.id, run_dir=LAB_RUN_DIR)
        self.pi_network = pi
        # Offered to the parts that run in the classroom's Pi (the device inventory).
        ctx.facts["classroom"] = self.room
        pi.socket.parent.mkdir(parents=True, exist_ok=True)
        (directory / "content").mkdir(parents=True, exist_ok=True)
        slot.sections["network"] = pi.network_section()
        slot.sections["portal"] = {**slot.sections.get("portal", {}), **pi.portal_section()}
        host = self.room.broker_host
        if host is None:  # pragma: no cover - the classroom is built with its management link
            raise LabError("the classroom has no management link for the agent")
        ctx.facts.setdefault("broker_hosts", []).append(host)
        mqtt = dict(slot.sections.get("mqtt", {}))
        if mqtt:
            mqtt["host"] = host
            slot.sections["mqtt"] = mqtt

    def services(self, ctx: LabContext) -> list[Service]:
        pi = self._pi()
        slot = ctx.slots[0]
        return [Service(f"{slot.id} network {name}", ctx.command(slot.config_path, *args),
                        ctx.logs / f"{slot.id}-network-{name}.log", stop_order=STOP_NETWORK,
                        netns=pi.pi.name)
                for name, args in COMMANDS.items() if name != "portal"]

    def start(self, ctx: LabContext) -> None:
        pi = self._pi()
        slot = ctx.slots[0]
        # The slot's config (written by the lab) is the one every process of the Pi reads.
        result = pi.pi.run(*ctx.command(slot.config_path, "network", "apply", "--json"),
                           check=False, timeout=60)
        if result.returncode != 0:
            raise LabError(f"network apply failed in the classroom: {result.stderr.strip()}")
        # Every phone takes its lease now, so the banner's commands work at once; then the parts
        # before this one that put devices in the classroom (fact `after_leases`: callables
        # taking the Classroom, e.g. the device inventory's fingerprints, display and printer).
        pi.room.dhcp_all(timeout=15)
        for after in ctx.facts.get("after_leases", []):
            after(pi.room)
        if ctx.options.get("offline"):
            pi.room.cut_uplink()
        mgmt = pi.room.pi_management_address
        for service in ctx.services:
            if service.name in (f"{slot.id} portal", f"{slot.id} agent"):
                service.netns = pi.pi.name
            if service.name == f"{slot.id} portal":
                # Reached from the machine over the management link.
                service.ready_url = f"http://{mgmt}:{PORTAL_PORT}/healthz"

    def stop(self, ctx: LabContext) -> None:
        if self.pi_network is not None:
            self.pi_network.stop_dnsmasq()
        if self.room is not None:
            self.room.close()
        shutil.rmtree(LAB_RUN_DIR, ignore_errors=True)

    def _pi(self) -> PiNetwork:
        if self.pi_network is None:
            raise LabError("the classroom must be configured before it starts")
        return self.pi_network

    def banner(self, ctx: LabContext) -> list[str]:
        pi = self._pi()
        room = pi.room
        phones = ", ".join(p.name for p in room.phones)
        return [f"  classroom {room.pi.name} (Pi: {room.gateway4}, {room.gateway6}), phones "
                f"{phones}, fake internet {room.inet.name}; uplink "
                f"{'up' if room.online else 'CUT (--offline)'}",
                f"  portal    http://{PORTAL_NAME}/captive/ for the phones, "
                f"http://{room.pi_management_address}/ from this machine ({ctx.slots[0].id})"]

    def hints(self, ctx: LabContext) -> list[str]:
        pi = self._pi()
        room = pi.room
        phone = room.phones[0]
        ios = shlex.quote(probes.USER_AGENTS["ios"])
        probe = "http://captive.apple.com/hotspot-detect.html"
        config = ctx.slots[0].config_path
        inet = f"ip netns exec {room.inet.name}"
        return [
            f"act as a phone ({phone.name} has a lease; every phone is at {phone.short}'s place):",
            f"  ip netns exec {phone.name} curl -si -A {ios} {probe}",
            f"  ip netns exec {phone.name} curl -si -X POST -H 'Origin: http://{PORTAL_NAME}' "
            f"http://{PORTAL_NAME}/captive/accept",
            f"  ip netns exec {phone.name} curl -si -A {ios} {probe}",
            f"  {display_command()} --config {config} network sessions list",
            "cut the uplink, and restore it:",
            f"  {inet} ip link set {INET_DEV} down",
            f"  {inet} ip link set {INET_DEV} up && {inet} ip -6 route replace {room.subnet6} "
            f"via {fi.PI_UPLINK6} dev {INET_DEV}",
        ]
