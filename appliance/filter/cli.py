"""`appliance filter ...`: the DNS filter's commands. Each calls one function of `service`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from appliance.command import Output, json_option, pass_config, stop_on_signal
from appliance.config import Config
from appliance.filter import service
from appliance.filter.lists import ListError
from appliance.filter.policy import PolicyError


@click.group("filter")
def group() -> None:
    """The classroom's DNS filter: serve, exam mode, overrides, explain, lists."""


@group.command("serve")
@pass_config
def serve(cfg: Config) -> None:
    """Answer the classroom's DNS on [filter] port (UDP and TCP), filtered per group."""
    try:
        service.serve(cfg, stop_on_signal())
    except OSError as exc:
        raise click.ClickException(f"cannot serve DNS on port {cfg.filter.port}: {exc}") from None


@group.group("exam")
def exam() -> None:
    """Exam mode: only the exam allowlist resolves, for a group or the whole building."""


def _scope(group_name: str | None, building: bool) -> str | None:
    if bool(group_name) == building:
        raise click.UsageError("give --group GROUP or --building")
    return group_name


@exam.command("start")
@click.option("--group", "group_name", help="The group in exam mode (e.g. students).")
@click.option("--building", is_flag=True, help="Every group of the building.")
@click.option("--until", required=True, help="End time: HH:MM today, or YYYY-MM-DDTHH:MM.")
@click.option("--allow", multiple=True, help="A domain the exam needs (repeatable).")
@json_option
@pass_config
def exam_start(cfg: Config, out: Output, group_name: str | None, building: bool, until: str,
               allow: tuple[str, ...]) -> None:
    """Start exam mode until a time; in force for every client within 60 s."""
    try:
        data = service.start_exam(cfg, _scope(group_name, building), until, allow)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    out.emit(data, lambda d: f"exam mode for {d['scope']} until {d['until_local']}")


@exam.command("stop")
@click.option("--group", "group_name", help="The group whose exam ends.")
@click.option("--building", is_flag=True, help="The building-wide exam.")
@json_option
@pass_config
def exam_stop(cfg: Config, out: Output, group_name: str | None, building: bool) -> None:
    """End exam mode now."""
    try:
        data = service.stop_exam(cfg, _scope(group_name, building))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    out.emit(data, lambda d: f"exam for {d['scope']} " + ("stopped" if d["stopped"] else "was not running"))


@group.group("override")
def override() -> None:
    """Timed overrides: unblock a site for a group for a while."""


@override.command("add")
@click.argument("domain")
@click.option("--group", "group_name", required=True, help="The group the site is unblocked for.")
@click.option("--for", "duration", required=True, help="How long: 30m, 2h, 90s.")
@json_option
@pass_config
def override_add(cfg: Config, out: Output, domain: str, group_name: str, duration: str) -> None:
    """Unblock DOMAIN (and its subdomains) for a group; blocked again when the time is up."""
    try:
        data = service.add_override(cfg, domain, group_name, duration)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    out.emit(data, lambda d: f"{d['domain']} unblocked for {d['group']} until {d['until_local']}")


@group.command("explain")
@click.argument("domain")
@click.option("--device", help="The asking device: its IP address or MAC.")
@click.option("--group", "group_name", help="Or a group.")
@click.option("--at", help="At this time (HH:MM today or YYYY-MM-DDTHH:MM); default now.")
@json_option
@pass_config
def explain(cfg: Config, out: Output, domain: str, device: str | None, group_name: str | None,
            at: str | None) -> None:
    """Why DOMAIN is allowed or blocked: the decision and every reason for it."""
    if bool(device) == bool(group_name):
        raise click.UsageError("give --device IP|MAC or --group GROUP")
    try:
        data = service.explain(cfg, domain, device=device, group=group_name, at=at)
    except (ValueError, PolicyError) as exc:
        raise click.ClickException(str(exc)) from None

    def text(d: dict[str, object]) -> str:
        head = f"{d['domain']}: {d['action']}" + (f" ({d['category']})" if d["category"] else "")
        reasons = d["reasons"]
        assert isinstance(reasons, list)
        return "\n".join([head, *(f"  - {r}" for r in reasons)])

    out.emit(data, text)


@group.group("lists")
def lists_group() -> None:
    """The category lists: compile them, show what is loaded."""


@lists_group.command("update")
@json_option
@pass_config
def lists_update(cfg: Config, out: Output) -> None:
    """Read every [[filter.lists]] and compile them; a failure keeps the working lists."""
    try:
        data = service.update_lists(cfg)
    except ListError as exc:
        raise click.ClickException(f"{exc} (the working lists are kept)") from None
    out.emit(data, lambda d: f"{d['entries']} domains in {len(d['categories'])} categories "
                             f"compiled in {d['seconds']} s; bad lines: "
                             f"{sum(s['bad'] for s in d['sources'])}")


@lists_group.command("show")
@json_option
@pass_config
def lists_show(cfg: Config, out: Output) -> None:
    """The compiled lists: when built, domains and bad lines per source."""

    def text(d: dict[str, object]) -> str:
        rows = d["sources"]
        assert isinstance(rows, list)
        built = d["built_at"]
        when = (datetime.fromtimestamp(float(built)).isoformat(timespec="seconds")
                if isinstance(built, int | float) else "never")
        lines = [f"{d['entries']} domains, built {when} ({d['path']})"]
        lines += [f"  {s['category']:20} {s['domains']:>9} domains {s['bad']:>6} bad  {s['location']}"
                  for s in rows]
        return "\n".join(lines)

    out.emit(service.show_lists(cfg), text)


@group.command("unbound-config")
@click.option("--baseline", is_flag=True,
              help="The fallback's config: the baseline policy (canaries, SafeSearch, core adult "
                   "list, a running exam's allowlist).")
@click.option("--listen", multiple=True, help="Address to listen on (repeatable; default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default [filter] unbound_port).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here (atomically) instead of printing.")
@pass_config
def unbound_config(cfg: Config, baseline: bool, listen: tuple[str, ...], port: int | None,
                   output: Path | None) -> None:
    """Render unbound's configuration (DNSSEC validation on) for the filter's upstream."""
    try:
        text = service.unbound_config(cfg, baseline=baseline, listen=listen, port=port)
    except ListError as exc:
        raise click.ClickException(str(exc)) from None
    if output is None:
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text)
    tmp.replace(output)


COMMANDS = (group,)
