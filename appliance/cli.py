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
from appliance.console import schema as console_schema
from appliance.content import cli as content_cli
from appliance.content import schema as content_schema
from appliance.devices import cli as devices_cli
from appliance.devices import schema as devices_schema
from appliance.filter import cli as filter_cli
from appliance.filter import schema as filter_schema
from appliance.fleet import cli as fleet_cli
from appliance.fleet import schema as fleet_schema
from appliance.lab import cli as lab_cli
from appliance.moodle import cli as moodle_cli
from appliance.moodle import schema as moodle_schema
from appliance.network import cli as network_cli
from appliance.network import schema as network_schema
from appliance.portal import cli as portal_cli
from appliance.provision import cli as provision_cli
from appliance.provision import schema as provision_schema

# Every capability's commands, in the order `appliance --help` lists them; a new capability adds
# its `COMMANDS` here, as the apps add a blueprint to `BLUEPRINTS`.
GROUPS: tuple[tuple[click.Command, ...], ...] = (
    portal_cli.COMMANDS,
    fleet_cli.COMMANDS,
    console_cli.COMMANDS,
    provision_cli.COMMANDS,
    network_cli.COMMANDS,
    moodle_cli.COMMANDS,
    devices_cli.COMMANDS,
    content_cli.COMMANDS,
    filter_cli.COMMANDS,
    lab_cli.COMMANDS,
)

# Every capability's schema (COMPONENT, DATABASE, MIGRATIONS), for `appliance migrations`.
SCHEMAS = (fleet_schema, console_schema, provision_schema, network_schema, moodle_schema,
           devices_schema, content_schema, filter_schema)


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


@cli.command("migrations")
@click.option("--pending", "only_pending", is_flag=True,
              help="List only what would run; never writes (opens the databases read-only).")
@json_option
@pass_config
def migrations(cfg: Config, out: Output, only_pending: bool) -> None:
    """List each component's schema migrations: applied, or pending (what would run next)."""
    from appliance.store import MigrationError, open_db, pending

    databases = {"appliance": cfg.database_path, "console": cfg.console_database_path}
    rows = []
    for schema in SCHEMAS:
        path = databases[schema.DATABASE]
        if path.exists():
            db = open_db(path, readonly=True)
            try:
                waiting = {m.version for m in pending(db, schema.COMPONENT, schema.MIGRATIONS)}
            except MigrationError as exc:
                raise click.ClickException(f"{path}: {exc}") from None
            finally:
                db.conn.close()
        else:
            waiting = {m.version for m in schema.MIGRATIONS}
        rows += [{"database": str(path), "component": schema.COMPONENT, "version": m.version,
                  "name": m.name, "state": "pending" if m.version in waiting else "applied"}
                 for m in schema.MIGRATIONS if not only_pending or m.version in waiting]

    def text(items: list[dict[str, object]]) -> str:
        if not items:
            return "nothing pending" if only_pending else "no migrations"
        return "\n".join(f"{r['state']:8} {r['component']} {r['version']:>3} {r['name']}  "
                         f"({r['database']})" for r in items)

    out.emit(rows, text)


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
