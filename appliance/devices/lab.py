"""The devices part of the lab: only with `--classroom` (the virtual classroom, root).

Each simulated appliance gets a `[devices]` section; the first one's spool is in the lab's run
folder (`/run/celab/dhcp-spool`: dnsmasq runs the hook as nobody, who may not enter the lab's
folder), its interface the classroom's `wlan0`. The service runs in the Pi's namespace, which
the network part's classroom provides (lab fact `classroom`: the `Classroom`).

A believable classroom: once the network part has given every phone its lease, this part's
`populate` (lab fact `after_leases`, called by the network part) makes the phones ask again
with their OS's real DHCP fingerprint (`CLASSROOM`: option 55 in order, vendor class, host
name; `appliance.harness.dhcpclient`), and adds a teacher's laptop, an AirPlay display and an
IPP printer, which announce themselves with python-zeroconf (`appliance.harness.mdnsdevice`)
from their own namespaces. `appliance devices list` then shows phones, a Chromebook, a laptop,
a display and a printer.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.lab.parts import STOP_APPLIANCE, LabContext, LabError, LabPart, Service, display_command

if TYPE_CHECKING:  # the harness is imported only when a classroom runs
    from appliance.harness.classroom import Classroom, Phone

# The network part's run folder (appliance.network.lab.LAB_RUN_DIR), world-traversable.
LAB_SPOOL = Path("/run/celab/dhcp-spool")


@dataclass(frozen=True)
class LabDevice:
    """One device of the lab's classroom: its namespace's short name (a phone of the classroom,
    or one this part adds with `mac`), its DHCP fingerprint and, for a display or printer, the
    mDNS service it announces."""

    short: str
    what: str
    prl: str
    vendor_class: str = ""
    hostname: str = ""
    mac: str | None = None
    service: tuple[str, str, int, tuple[str, ...]] | None = None  # type, name, port, TXT


# Option-55 lists as in ../shared/research/portal_mdns.md §3.4 (appliance.devices.fingerprint).
CLASSROOM: tuple[LabDevice, ...] = (
    LabDevice("phone1", "an Android phone", "1,3,6,15,26,28,51,58,59,43,114,108",
              "android-dhcp-14"),
    LabDevice("phone2", "an iPhone", "1,121,3,6,15,108,114,119,252", hostname="Student-iPhone"),
    LabDevice("phone3", "a Chromebook", "1,121,33,3,6,12,15,26,28,51,54,58,59,119,252",
              hostname="chromebook-3"),
    LabDevice("teacher", "the teacher's MacBook", "1,121,3,6,15,108,114,119,252,95,44,46",
              hostname="Teachers-MacBook-Air", mac="02:ce:00:00:00:21"),
    # Infrastructure keeps its real (global) MAC: its OUI names the vendor.
    LabDevice("display", "an Apple TV", "1,121,3,6,15,119,252", hostname="Room-101-Apple-TV",
              mac="f0:18:98:00:00:10",
              service=("_airplay._tcp", "Room 101 Display", 7000,
                       ("model=AppleTV6,2", "srcvers=540.31.41", "deviceid=f0:18:98:00:00:10"))),
    LabDevice("printer", "an HP printer", "1,3,6,15,44,47", "HP LaserJet", hostname="HP-LJ-M404",
              mac="3c:d9:2b:00:00:12",
              service=("_ipp._tcp", "HP LaserJet Pro M404dn", 631,
                       ("ty=HP LaserJet Pro M404dn", "note=Room 101", "pdl=application/pdf"))),
)


def populate(room: Classroom, workdir: Path, devices: tuple[LabDevice, ...] = CLASSROOM) -> dict[str, str]:
    """Give each device its fingerprinted lease (adding the namespaces the classroom lacks) and
    start the announcers (stopped by the classroom at close); return short name -> address."""
    workdir.mkdir(parents=True, exist_ok=True)
    phones = {p.short: p for p in room.phones}
    addresses: dict[str, str] = {}
    for device in devices:
        phone = phones.get(device.short)
        if phone is None:
            if device.mac is None:
                continue  # the classroom was built with fewer phones
            phone = room.add_phone(device.short, mac=device.mac)
        addresses[device.short] = _lease(phone, device)
        if device.service is not None:
            _announce(room, phone, addresses[device.short], device.service, workdir)
    return addresses


def _lease(phone: Phone, device: LabDevice) -> str:
    result = phone.run(sys.executable, "-m", "appliance.harness.dhcpclient", "--iface", phone.dev,
                       "--mac", phone.mac, "--prl", device.prl, "--vendor-class",
                       device.vendor_class, "--hostname", device.hostname, "--configure",
                       check=False, timeout=30)
    try:
        return str(json.loads(result.stdout.splitlines()[-1])["ip"])
    except (IndexError, KeyError, ValueError):
        raise LabError(f"{device.short}: no fingerprinted lease: {result.stdout[-300:]} "
                       f"{result.stderr[-300:]}") from None


def _announce(room: Classroom, phone: Phone, address: str,
              service: tuple[str, str, int, tuple[str, ...]], workdir: Path) -> None:
    type_, name, port, txt = service
    ready = workdir / f"{phone.short}-mdns.ready"
    ready.unlink(missing_ok=True)
    log = workdir / f"{phone.short}-mdns.log"
    proc = room.start_process(
        phone.ns, sys.executable, "-m", "appliance.harness.mdnsdevice", "announce", "--address",
        address, "--type", type_, "--name", name, "--host", phone.short, "--port", str(port),
        "--ready", str(ready), *(a for t in txt for a in ("--txt", t)), log=log)
    deadline = time.monotonic() + 15
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise LabError(f"{phone.short} did not announce {type_}: "
                           f"{log.read_text(errors='replace')[-500:] if log.exists() else ''}")
        time.sleep(0.1)


class DevicesPart(LabPart):
    name = "devices"
    needs_root = True

    def __init__(self) -> None:
        self.addresses: dict[str, str] = {}

    def enabled(self, ctx: LabContext) -> bool:
        return bool(ctx.options.get("classroom"))

    def configure(self, ctx: LabContext) -> None:
        for slot in ctx.slots:
            # The first appliance is the classroom's Pi: its dnsmasq runs the hook as nobody.
            spool = LAB_SPOOL if slot.n == 1 else slot.directory / "dhcp-spool"
            spool.mkdir(parents=True, exist_ok=True)
            spool.chmod(0o1777)
            slot.sections["devices"] = {"spool_dir": str(spool), "interface": "wlan0",
                                        "hostname": slot.id, "poll_interval": 0.5}
        logs = ctx.logs
        ctx.facts.setdefault("after_leases", []).append(
            lambda room: self.addresses.update(populate(room, logs)))

    def services(self, ctx: LabContext) -> list[Service]:
        classroom = ctx.facts.get("classroom")
        if classroom is None:
            return []
        slot = ctx.slots[0]  # one classroom: the first appliance is its Pi
        return [Service(f"{slot.id} devices", ctx.command(slot.config_path, "devices", "serve"),
                        ctx.logs / f"{slot.id}-devices.log", stop_order=STOP_APPLIANCE,
                        netns=classroom.pi.name)]

    def banner(self, ctx: LabContext) -> list[str]:
        if not self.addresses:
            return []
        known = {d.short: d for d in CLASSROOM}
        listed = ", ".join(f"{known[s].what} {ip}" for s, ip in self.addresses.items() if s in known)
        return [f"  devices   {listed}"]

    def hints(self, ctx: LabContext) -> list[str]:
        if not ctx.slots:
            return []
        config = ctx.slots[0].config_path
        teacher = next(d for d in CLASSROOM if d.short == "teacher")
        return [
            "the classroom's devices (fingerprints, the display, the printer):",
            f"  {display_command()} --config {config} devices list",
            "let the teacher's laptop find and reach the display (AirPlay) and the printer:",
            f"  {display_command()} --config {config} devices group {teacher.mac} staff",
            f"  ip netns exec celab-teacher {sys.executable} -m appliance.harness.mdnsdevice browse"
            f" --address {self.addresses.get('teacher', 'IP')} --type _airplay._tcp --seconds 4",
        ]
