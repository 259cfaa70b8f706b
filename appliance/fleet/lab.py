"""The fleet's part of the lab: the broker (mutual TLS, ACL from Topics) and each appliance's agent.

Offers the fact `mqtt`: a function from a client identity to its [mqtt] section (a certificate of
its own, whose CN is the identity), for the parts after it. Reads the fact `broker_hosts` (a list
of extra addresses, e.g. the virtual classroom's management link) at start, so any part may add
to it while it configures: the broker listens there too, and its certificate names them.
"""

from __future__ import annotations

from appliance.fleet.broker import BrokerTls, Mosquitto
from appliance.fleet.pki import CertificateAuthority
from appliance.fleet.topics import Topics
from appliance.lab.parts import STOP_AGENT, LabContext, LabError, LabPart, Service, display_command

CONSOLE_ID = "lab-console"


def ingest_identity() -> str:
    return f"console-ingest-{CONSOLE_ID}"


class FleetPart(LabPart):
    name = "fleet"

    def __init__(self) -> None:
        self.broker: Mosquitto | None = None
        self.ca: CertificateAuthority | None = None

    def broker_port(self, ctx: LabContext) -> int:
        return ctx.base_port

    def ports(self, ctx: LabContext) -> list[int]:
        return [self.broker_port(ctx)]

    def configure(self, ctx: LabContext) -> None:
        # Mutual TLS and the broker's ACL, as in production: each process has its own
        # certificate, whose CN is its identity.
        ca = CertificateAuthority.open(ctx.directory / "pki", name="Classroom Edge lab CA")
        self.ca = ca

        def mqtt(identity: str) -> dict[str, object]:
            pair = ca.issue(identity)
            return {"host": ctx.host, "port": self.broker_port(ctx), "tls": True, "keepalive": 5,
                    "ca_file": str(ca.ca_file), "cert_file": str(pair.cert),
                    "key_file": str(pair.key)}

        ctx.facts["mqtt"] = mqtt
        ctx.facts["console_id"] = CONSOLE_ID
        ctx.facts["ingest_identity"] = ingest_identity()
        for slot in ctx.slots:
            slot.sections["appliance"] = {"id": slot.id, "name": f"Lab school {slot.n}",
                                          "state_dir": str(slot.directory / "state")}
            slot.sections["mqtt"] = mqtt(slot.id)
            # A development machine's kernel may never report NTP sync: trust its clock.
            slot.sections["agent"] = {"interval": ctx.interval, "backoff_max": 5.0,
                                      "clock_source": "host"}

    def start(self, ctx: LabContext) -> None:
        if self.ca is None:
            raise LabError("the lab must be prepared before it starts")
        extra = tuple(ctx.facts.get("broker_hosts", ()))
        server = self.ca.issue("broker", server_names=(ctx.host, "localhost", *extra))
        tls = BrokerTls(self.ca.ca_file, server.cert, server.key,
                        acl=Topics().broker_acl([ingest_identity()]))
        self.broker = Mosquitto(ctx.directory / "broker", port=self.broker_port(ctx),
                                persistence=True, tls=tls, extra_hosts=extra).start()

    def services(self, ctx: LabContext) -> list[Service]:
        return [Service(f"{slot.id} agent", ctx.command(slot.config_path, "agent"),
                        ctx.logs / f"{slot.id}-agent.log", stop_order=STOP_AGENT)
                for slot in ctx.slots]

    def stop(self, ctx: LabContext) -> None:
        if self.broker is not None:
            self.broker.stop()

    def banner(self, ctx: LabContext) -> list[str]:
        extra = "".join(f", {h}" for h in ctx.facts.get("broker_hosts", ()))
        lines = [f"  broker    mqtts://{ctx.host}:{self.broker_port(ctx)}{extra}   "
                 f"(mutual TLS; certificates in {ctx.directory / 'pki'})"]
        for slot in ctx.slots:
            lines.append(f"  agent     {slot.id}; agent pid {ctx.service(f'{slot.id} agent').pid}")
        return lines

    def hints(self, ctx: LabContext) -> list[str]:
        return ["kill an agent's pid and watch the console mark it offline; start it again with",
                f"  {display_command()} --config {ctx.slots[0].config_path} agent"]
