"""The portal's part of the lab: each simulated appliance's student portal on its own port."""

from __future__ import annotations

from appliance.lab.parts import STOP_APPLIANCE, LabContext, LabPart, Service, Slot


class PortalPart(LabPart):
    name = "portal"

    def port(self, ctx: LabContext, slot: Slot) -> int:
        return ctx.base_port + 10 + slot.n

    def ports(self, ctx: LabContext) -> list[int]:
        return [ctx.base_port + 10 + n for n in range(1, ctx.count + 1)]

    def configure(self, ctx: LabContext) -> None:
        for slot in ctx.slots:
            slot.sections["portal"] = {"listen": ctx.host, "port": self.port(ctx, slot), "workers": 1}

    def services(self, ctx: LabContext) -> list[Service]:
        return [Service(f"{slot.id} portal", ctx.command(slot.config_path, "portal"),
                        ctx.logs / f"{slot.id}-portal.log",
                        ready_url=f"http://{ctx.host}:{self.port(ctx, slot)}/healthz",
                        stop_order=STOP_APPLIANCE)
                for slot in ctx.slots]

    def banner(self, ctx: LabContext) -> list[str]:
        return [f"  portal    http://{ctx.host}:{self.port(ctx, slot)}/   ({slot.id})"
                for slot in ctx.slots]
