"""`appliance <command>`: the one entry point. Registers each capability's commands; no logic.

Each capability's `cli.py` exports `COMMANDS`, a tuple of click commands (a new capability's is
one group, `appliance <capability> ...`; the foundation's long-running services keep the
top-level names the systemd units call). What every command shares (loading the configuration,
`--json`, stopping on SIGTERM) lives in `appliance.command`.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from appliance import __version__
from appliance import config as config_module
from appliance.command import Output, json_option, pass_config
from appliance.config import Config, ConfigError
from appliance.console import cli as console_cli
from appliance.fleet import cli as fleet_cli
from appliance.lab import cli as lab_cli
from appliance.network import cli as network_cli
from appliance.portal import cli as portal_cli

# Every capability's commands, in the order `appliance --help` lists them; a new capability adds
# its `COMMANDS` here, as the apps add a blueprint to `BLUEPRINTS`.
GROUPS: tuple[tuple[click.Command, ...], ...] = (
    portal_cli.COMMANDS,
    fleet_cli.COMMANDS,
    console_cli.COMMANDS,
    network_cli.COMMANDS,
    lab_cli.COMMANDS,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Configuration file [env {config_module.ENV_VAR}; default {config_module.DEFAULT_PATH}]",
)
@click.version_option(__version__, prog_name="appliance")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Classroom Edge: the services and tools of an appliance and of the console.

    Long-running services (portal, agent, console, ingest) are started by systemd (see
    systemd/); every other command does one thing and returns. Commands that print state take
    --json.
    """
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


@cli.command("check-config")
@json_option
@pass_config
def check_config(cfg: Config, out: Output) -> None:
    """Validate the configuration file and print what it resolves to."""
    data = dataclasses.asdict(cfg)
    data["source"] = str(cfg.source)
    out.emit(data, lambda _: f"{cfg.source}: ok (appliance '{cfg.appliance.id}')")


for _commands in GROUPS:
    for _command in _commands:
        cli.add_command(_command)


def main() -> None:
    """Console-script entry point: configuration problems found after start-up (a secret file
    readable by others, a missing certificate) end with one line naming file and key, not a
    traceback."""
    try:
        cli(prog_name="appliance")
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
