"""The console's part of the lab: its config, the admin account, the web UI and the ingest worker.

Uses the fleet part's fact `mqtt` for its broker connection.
"""

from __future__ import annotations

import secrets
import subprocess

from appliance.lab.parts import STOP_CONSOLE, LabContext, LabError, LabPart, Service
from appliance.secretfiles import write_secret


class ConsolePart(LabPart):
    name = "console"

    def __init__(self) -> None:
        self.password = ""

    def port(self, ctx: LabContext) -> int:
        return ctx.base_port + 1

    def ports(self, ctx: LabContext) -> list[int]:
        return [self.port(ctx)]

    def configure(self, ctx: LabContext) -> None:
        base = ctx.console_config.parent
        ctx.console_sections.update({
            "appliance": {"id": ctx.fact("console_id"), "name": "Lab console",
                          "state_dir": str(base / "state")},
            "mqtt": ctx.fact("mqtt")(ctx.fact("ingest_identity")),
            "console": {"listen": ctx.host, "port": self.port(ctx), "workers": 1,
                        "cookie_secure": False, "offline_after": 6 * ctx.interval},
        })

    @property
    def password_file_name(self) -> str:
        return "console-admin-password"

    def prepare(self, ctx: LabContext) -> None:
        password_file = ctx.directory / "secrets" / self.password_file_name
        if password_file.exists():
            self.password = password_file.read_text().strip()
        else:
            self.password = secrets.token_urlsafe(12)
            write_secret(password_file, self.password)
        result = subprocess.run(
            [*ctx.command(ctx.console_config, "set-password", "admin", "--password-stdin")],
            input=self.password + "\n", text=True, capture_output=True, check=False,
        )
        if result.returncode != 0:
            raise LabError(f"could not create the console admin: {result.stderr.strip()}")

    def services(self, ctx: LabContext) -> list[Service]:
        cfg = ctx.console_config
        return [
            Service("ingest", ctx.command(cfg, "ingest"), ctx.logs / "ingest.log",
                    stop_order=STOP_CONSOLE),
            Service("console", ctx.command(cfg, "console"), ctx.logs / "console.log",
                    ready_url=f"http://{ctx.host}:{self.port(ctx)}/healthz",
                    stop_order=STOP_CONSOLE),
        ]

    def banner(self, ctx: LabContext) -> list[str]:
        return [
            f"  console   http://{ctx.host}:{self.port(ctx)}/   user: admin   "
            f"password: {self.password}",
            f"            (password kept in {ctx.directory / 'secrets' / self.password_file_name})",
        ]
