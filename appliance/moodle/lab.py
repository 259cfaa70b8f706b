"""The Moodle mirror's part of the lab: the recorded school Moodle, replayed, and mirrored.

A replay of the recorded site (`replay`, the recordings of `data/moodle` beside the repository,
or the lab option `moodle_recording`) answers on loopback as the school's Moodle, for every
simulated appliance; each appliance's `[moodle]` points at it with the recorded sync account,
and the part runs `appliance moodle sync --now` for each before the portals start, so
`/moodle/` on every portal shows the mirrored courses at once. The replay runs in the lab's own
process (a thread) and stops with it. Without the recordings the part is off.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from appliance.lab.parts import LabContext, LabError, LabPart, display_command
from appliance.moodle.replay import ReplayMoodle

# The recorded site's sync account (data/moodle/README.md): a test account, not a secret.
USERNAME = "syncbot"
PASSWORD = "Sync#Bot2024"  # noqa: S105
DEFAULT_RECORDING = Path(__file__).resolve().parents[3] / "shared" / "data" / "moodle"


class MoodlePart(LabPart):
    name = "moodle"

    def __init__(self) -> None:
        self.replay: ReplayMoodle | None = None

    def recording(self, ctx: LabContext) -> Path:
        return Path(ctx.options.get("moodle_recording") or DEFAULT_RECORDING)

    def enabled(self, ctx: LabContext) -> bool:
        return (self.recording(ctx) / "state1" / "exchanges.jsonl").is_file()

    def port(self, ctx: LabContext) -> int:
        return ctx.base_port + 90

    def ports(self, ctx: LabContext) -> list[int]:
        return [self.port(ctx)]

    def url(self, ctx: LabContext) -> str:
        return f"http://{ctx.host}:{self.port(ctx)}"

    def configure(self, ctx: LabContext) -> None:
        secrets = ctx.directory / "secrets"
        secrets.mkdir(parents=True, exist_ok=True)
        password = secrets / "moodle-password"
        password.touch(mode=0o600)
        password.chmod(0o600)
        password.write_text(PASSWORD + "\n")
        for slot in ctx.slots:
            slot.sections["moodle"] = {"url": self.url(ctx), "username": USERNAME,
                                       "password_file": str(password), "min_free_mb": 0,
                                       "timeout": 10.0}

    def start(self, ctx: LabContext) -> None:
        self.replay = ReplayMoodle(self.recording(ctx) / "state1", host=ctx.host, port=self.port(ctx))
        self.replay.start()
        ctx.logs.mkdir(parents=True, exist_ok=True)
        for slot in ctx.slots:
            log = ctx.logs / f"{slot.id}-moodle-sync.log"
            with log.open("ab") as out:
                done = subprocess.run(ctx.command(slot.config_path, "moodle", "sync", "--now", "--quiet"),
                                      stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=120, check=False)
            if done.returncode != 0:
                raise LabError(f"{slot.id}: the Moodle sync failed; see {log}")

    def stop(self, ctx: LabContext) -> None:
        if self.replay is not None:
            self.replay.stop()
            self.replay = None

    def banner(self, ctx: LabContext) -> list[str]:
        lines = [f"  moodle    {self.url(ctx)}/   (the school's Moodle, replayed from the recordings)"]
        for slot in ctx.slots:
            portal = slot.sections.get("portal", {})
            if "port" in portal:
                lines.append(f"  mirror    http://{ctx.host}:{portal['port']}/moodle/   "
                             f"({slot.id}, the mirrored courses)")
        return lines

    def hints(self, ctx: LabContext) -> list[str]:
        if not ctx.slots:
            return []
        return [f"{display_command()} --config {ctx.slots[0].config_path} moodle status   "
                "each mirrored course's last sync"]
