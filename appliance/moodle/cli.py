"""`appliance moodle ...`: sync the mirror, show its status, re-render after a sanitizer change."""

from __future__ import annotations

import dataclasses
import sys
import time

import click

from appliance.command import Output, json_option, pass_config
from appliance.config import Config


@click.group("moodle")
def group() -> None:
    """Mirror the school's Moodle courses onto this appliance ([moodle] in the config)."""


@group.command("sync")
@click.option("--course", "course", type=int, default=None, help="Sync only this course id.")
@click.option("--now", "now", is_flag=True,
              help="Run even outside [content] windows (the bandwidth cap still applies).")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
@json_option
@pass_config
def sync(cfg: Config, out: Output, course: int | None, now: bool, quiet: bool) -> None:
    """Mirror the enrolled courses (or one) as a job of the library's queue, under its bandwidth
    cap and windows: fetch only what changed; exit 1 on any error."""
    from appliance.moodle.service import build_client, open_database, run_queued

    client = build_client(cfg)
    db = open_database(cfg)

    def progress(line: str) -> None:
        if not quiet:
            click.echo(line, err=True)

    done = run_queued(cfg, db, client, course=course, windows=not now, progress=progress,
                      waiting=lambda: progress("waiting for the library's queue (a download is running)"))
    report = done.report
    if report is None:
        out.emit({"ok": True, "paused": done.paused, "job": done.job.id, "courses": []},
                 lambda d: f"not synced now: {d['paused']} (job {d['job']} waits in the queue)")
        return
    data = {"ok": report.ok, "error": report.error, "removed": report.removed, "job": done.job.id,
            "paused": None,
            "courses": [{**dataclasses.asdict(c), "changes": [dataclasses.asdict(x) for x in c.changes]}
                        for c in report.courses]}

    def text(d: dict[str, object]) -> str:
        lines = []
        for c in report.courses:
            state = "ok" if c.ok else f"ERROR {c.error}"
            lines.append(f"course {c.id} {c.name}: {state}; {c.fetched} fetched ({c.wire} bytes), "
                         f"{c.not_modified} unchanged on the server, {c.reused} reused, "
                         f"{len(c.changes)} changes")
        if report.removed:
            lines.append(f"removed (no longer enrolled or hidden): {', '.join(map(str, report.removed))}")
        if report.error:
            lines.append(f"sync stopped: {report.error}")
        return "\n".join(lines) or "nothing to sync"

    out.emit(data, text)
    if not report.ok:
        sys.exit(1)


@group.command("status")
@json_option
@pass_config
def status(cfg: Config, out: Output) -> None:
    """Each course's last sync, size and last error."""
    from appliance.moodle.mirror import status as read_status
    from appliance.moodle.service import open_database

    rows = read_status(open_database(cfg))

    def text(items: list[dict[str, object]]) -> str:
        if not items:
            return "no course synced yet (run: appliance moodle sync)"
        lines = []
        for r in items:
            when = r["last_sync"]
            stamp = (time.strftime("%Y-%m-%d %H:%M", time.localtime(float(when)))
                     if isinstance(when, int | float) else "never")
            lines.append(f"{r['course']:>5} {r['name']}: last sync {stamp}, {r['size']} bytes"
                         + (f", ERROR {r['error']}" if r["error"] else "")
                         + (", no longer enrolled" if r["missing_since"] else ""))
        return "\n".join(lines)

    out.emit(rows, text)


@group.command("rerender")
@json_option
@pass_config
def rerender(cfg: Config, out: Output) -> None:
    """Sanitize the mirrored HTML again from the kept raw copy (no download)."""
    from appliance.moodle.service import build_mirror, open_database

    count = build_mirror(cfg, open_database(cfg)).rerender()
    out.emit({"courses": count}, lambda d: f"{d['courses']} courses re-rendered")


COMMANDS: tuple[click.Command, ...] = (group,)
