"""The devices part of the lab: only with `--classroom` (the virtual classroom, root).

Each simulated appliance gets a `[devices]` section whose spool is `<slot>/dhcp-spool` and
whose interface is the classroom's `wlan0`. The service runs in the Pi's namespace, which the
network part's classroom provides (lab fact `classroom`: the `Classroom`); that part also
starts dnsmasq with our hook (`appliance.devices.spool.HOOK`, `DEVICES_SPOOL` set to the slot's
spool) and the phones, display and printer. Without that fact the part only configures.
"""

from __future__ import annotations

from appliance.lab.parts import STOP_APPLIANCE, LabContext, LabPart, Service


class DevicesPart(LabPart):
    name = "devices"
    needs_root = True

    def enabled(self, ctx: LabContext) -> bool:
        return bool(ctx.options.get("classroom"))

    def configure(self, ctx: LabContext) -> None:
        for slot in ctx.slots:
            spool = slot.directory / "dhcp-spool"
            spool.mkdir(parents=True, exist_ok=True)
            spool.chmod(0o777)  # the hook runs as dnsmasq's dhcp-scriptuser (nobody in the lab)
            slot.sections["devices"] = {"spool_dir": str(spool), "interface": "wlan0",
                                        "hostname": slot.id, "poll_interval": 0.5}

    def services(self, ctx: LabContext) -> list[Service]:
        classroom = ctx.facts.get("classroom")
        if classroom is None:
            return []
        slot = ctx.slots[0]  # one classroom: the first appliance is its Pi
        return [Service(f"{slot.id} devices", ctx.command(slot.config_path, "devices", "serve"),
                        ctx.logs / f"{slot.id}-devices.log", stop_order=STOP_APPLIANCE,
                        netns=classroom.pi.name)]

    def hints(self, ctx: LabContext) -> list[str]:
        if not ctx.slots:
            return []
        return [f"appliance --config {ctx.slots[0].config_path} devices list   "
                "devices in the classroom"]
