"""The filter on the virtual classroom's Pi: what `scripts/lab --classroom` and the filter's
classroom tests run, so the lab's phones resolve through it.

`PiFilter` knows the configuration (`[filter] enabled`, so `appliance network apply` leaves DNS
to the filter; small category lists of its own, since the fake internet answers every name and
blocking is the filter's alone) and the processes in the Pi namespace: unbound on loopback
(`unbound_port`) forwarding to the fake internet's DNS (no DNSSEC validation: the fake zone is
not signed, the one line that differs from a Pi), the baseline unbound (`baseline_port`, where
the helper points port 53 while the filter is down) and `appliance filter serve` on port 53.
`FilterPart` turns them into the lab's `Service`s, after the network part built the classroom
(lab fact `classroom`).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from appliance import config
from appliance.filter import policy, service
from appliance.harness import fakeinternet as fi
from appliance.harness.netns import Namespace
from appliance.lab.parts import (
    STOP_APPLIANCE,
    LabContext,
    LabError,
    LabPart,
    Service,
    appliance_command,
    display_command,
)

# The lab's lists: names under `.example` the fake internet resolves like any other, so only the
# filter can be what blocks them.
LAB_LISTS: dict[str, tuple[str, ...]] = {
    "adult": ("adult.example", "porn.example"),
    "gambling": ("casino.example", "poker.example"),
    "social_networks": ("social.example",),
    "doh": ("doh.example",),
}
BLOCKED_NAME = "www.casino.example"
# Asked to see that the filter forwards (and that unbound and the fake internet answer): a name
# of no list and not the walled garden's, so asking it changes nothing.
READY_NAME = "ready.example"
# The processes of the filter on the Pi, in start order.
PROCESSES = ("unbound", "baseline", "filter")


# One query from inside a namespace: exit status 0 when the answer is NOERROR with an answer.
_ASK = """
import socket, sys
from appliance.filter import wire
server, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(1)
    s.sendto(wire.build(wire.Message(7, wire.RD, (wire.Question(name, wire.A),))), (server, port))
    m = wire.parse(s.recv(4096))
sys.exit(0 if m.rcode == wire.NOERROR and m.answers else 1)
"""


def resolves(ns: Namespace, server: str, name: str, port: int = 53) -> bool:
    """Whether `server` resolves `name` (NOERROR with an answer), asked from inside `ns`."""
    return ns.run(sys.executable, "-c", _ASK, server, str(port), name, check=False,
                  timeout=10).returncode == 0


def unbound_exe() -> str:
    return shutil.which("unbound") or "/usr/sbin/unbound"


@dataclass
class PiFilter:
    """The filter of a classroom Pi whose appliance state lives in `state_dir`; `lists_dir` takes
    the lab's list files; `block_page` is `[filter] block_page` (the portal's addresses)."""

    state_dir: Path
    lists_dir: Path
    block_page: tuple[str, ...] = ()
    forward: str = f"{fi.DNS4}@53"

    def section(self) -> dict[str, object]:
        """`[filter]` for the classroom (writes the list files it names)."""
        self.lists_dir.mkdir(parents=True, exist_ok=True)
        tables = []
        for category, names in LAB_LISTS.items():
            path = self.lists_dir / f"{category}.txt"
            path.write_text("".join(f"{n}\n" for n in names))
            tables.append({"category": category, "path": str(path)})
        students = policy.DEFAULT_GROUPS["students"]
        # The students also lose DoH resolvers (a category to add, docs/filter.md), so the lab
        # shows the port-443 reject set at work.
        return {"enabled": True, "lists": tables, "block_page": list(self.block_page),
                "upstream_timeout": 1.0,
                "groups": [{"name": "students",
                            "categories": sorted(students.categories | {"doh"})}]}

    @property
    def unbound_dir(self) -> Path:
        return self.state_dir / "unbound"

    def prepare(self, config_path: Path) -> None:
        """Compile the lists and render both unbound configurations (before anything starts)."""
        cfg = config.load(config_path)
        service.update_lists(cfg)
        self.unbound_dir.mkdir(parents=True, exist_ok=True)
        # unbound answers .example and .test itself (RFC 6761 defaults): let them through.
        extra = ('    local-zone: "example." nodefault', '    local-zone: "test." nodefault')
        (self.unbound_dir / "unbound.conf").write_text(service.unbound_config(
            cfg, baseline=False, trust_anchor=False, forward=(self.forward,), extra=extra))
        (self.unbound_dir / "baseline.conf").write_text(service.unbound_config(
            cfg, baseline=True, extra=extra))

    def commands(self, config_path: Path, appliance: list[str]) -> dict[str, list[str]]:
        """name -> command line, for PROCESSES (`appliance` runs our CLI)."""
        return {
            "unbound": [unbound_exe(), "-d", "-c", str(self.unbound_dir / "unbound.conf")],
            "baseline": [unbound_exe(), "-d", "-c", str(self.unbound_dir / "baseline.conf")],
            "filter": [*appliance, "--config", str(config_path), "filter", "serve"],
        }


class FilterPart(LabPart):
    """`scripts/lab --classroom`: the filter answers the classroom's DNS on the first slot's Pi,
    with the block page on the portal's addresses."""

    name = "filter"
    needs_root = True

    def __init__(self) -> None:
        self.pi_filter: PiFilter | None = None

    def enabled(self, ctx: LabContext) -> bool:
        return bool(ctx.options.get("classroom"))

    def configure(self, ctx: LabContext) -> None:
        room = ctx.fact("classroom")
        slot = ctx.slots[0]
        # The fleet part gives every slot its [appliance] section (state_dir included).
        state = Path(str(slot.sections.get("appliance", {}).get("state_dir",
                                                               slot.directory / "state")))
        self.pi_filter = PiFilter(state, slot.directory / "filter-lists",
                                  block_page=(room.gateway4, room.gateway6))
        slot.sections["filter"] = self.pi_filter.section()

    def prepare(self, ctx: LabContext) -> None:
        self._filter().prepare(ctx.slots[0].config_path)

    def services(self, ctx: LabContext) -> list[Service]:
        room = ctx.fact("classroom")
        slot = ctx.slots[0]
        commands = self._filter().commands(slot.config_path, appliance_command())
        found = [Service(f"{slot.id} filter {name}" if name != "filter" else f"{slot.id} filter",
                         commands[name], ctx.logs / f"{slot.id}-filter-{name}.log",
                         stop_order=STOP_APPLIANCE, netns=room.pi.name)
                 for name in PROCESSES]
        # The banner's commands resolve through it at once: ready when a forwarded name resolves.
        found[-1].ready = lambda: resolves(room.pi, room.gateway4, READY_NAME)
        return found

    def _filter(self) -> PiFilter:
        if self.pi_filter is None:
            raise LabError("the filter must be configured before it starts")
        return self.pi_filter

    def banner(self, ctx: LabContext) -> list[str]:
        room = ctx.fact("classroom")
        return [f"  filter    the classroom's DNS on {room.gateway4}:53 and [{room.gateway6}]:53 "
                f"(dnsmasq: DHCP and RAs only); unbound on 127.0.0.1:5335, baseline on :5336"]

    def hints(self, ctx: LabContext) -> list[str]:
        room = ctx.fact("classroom")
        phone = room.phones[0]
        config_path = ctx.slots[0].config_path
        mine = phone.addresses(4) or [f"<{phone.name}'s address>"]
        return [
            f"the filter, as a phone (a blocked name: the EDE says why; {BLOCKED_NAME} is gambling):",
            f"  ip netns exec {phone.name} dig {BLOCKED_NAME}",
            f"  {display_command()} --config {config_path} filter explain {BLOCKED_NAME} "
            f"--device {mine[0]}",
            f"  {display_command()} --config {config_path} network dns-fallback on   "
            "(port 53 to the baseline unbound; `off`, or the health check, puts it back)",
        ]
