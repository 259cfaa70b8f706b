"""`appliance <subcommand>`: one entry point per service. Parses arguments, calls services."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import click

from appliance import __version__
from appliance import config as config_module
from appliance.config import Config, ConfigError

log = logging.getLogger("appliance")


def _load(ctx: click.Context) -> Config:
    cfg = config_module.load(ctx.obj["config_path"])  # a ConfigError ends in main(), status 2
    logging.basicConfig(
        level=cfg.appliance.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return cfg


def _stop_event() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


class WebSection(Protocol):
    """What [portal] and [console] share: where and how wide to serve."""

    @property
    def listen(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def workers(self) -> int: ...
    @property
    def threads(self) -> int: ...


def _serve(cfg: Config, create_app: Callable[[Config], Any], web: WebSection, name: str) -> None:
    from appliance.webserver import serve

    create_app(cfg)  # fail here, with one clear line, rather than inside every worker
    serve(lambda: create_app(cfg), host=web.listen, port=web.port,
          workers=web.workers, threads=web.threads, name=name)


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
    """Classroom Edge: run one service of an appliance or of the console.

    Each subcommand is a long-running service that systemd starts (see systemd/), except
    `check-config`, `set-password` and `lab`.
    """
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


@cli.command("check-config")
@click.option("--json", "as_json", is_flag=True, help="Print the validated configuration as JSON.")
@click.pass_context
def check_config(ctx: click.Context, as_json: bool) -> None:
    """Validate the configuration file and print what it resolves to."""
    cfg = _load(ctx)
    if as_json:
        import dataclasses

        data = dataclasses.asdict(cfg)
        data["source"] = str(cfg.source)
        click.echo(json.dumps(data, default=str, indent=2))
    else:
        click.echo(f"{cfg.source}: ok (appliance '{cfg.appliance.id}')")


@cli.command()
@click.pass_context
def portal(ctx: click.Context) -> None:
    """Serve the student portal (gunicorn) on [portal] listen:port."""
    from appliance.portal import create_app

    cfg = _load(ctx)
    _serve(cfg, create_app, cfg.portal, "appliance-portal")


@cli.command()
@click.pass_context
def agent(ctx: click.Context) -> None:
    """Collect health and report it to the console's broker over MQTT."""
    from appliance.fleet.agent import Agent
    from appliance.store import open_db

    cfg = _load(ctx)
    stop = _stop_event()
    Agent(cfg, open_db(cfg.database_path)).run(stop)


@cli.command()
@click.pass_context
def console(ctx: click.Context) -> None:
    """Serve the console web UI (gunicorn) on [console] listen:port."""
    from appliance.console import create_app

    cfg = _load(ctx)
    _serve(cfg, create_app, cfg.console, "appliance-console")


@cli.command()
@click.pass_context
def ingest(ctx: click.Context) -> None:
    """Subscribe to the fleet's messages and store them in the console database."""
    from appliance.console.ingest import Ingest
    from appliance.store import open_db

    cfg = _load(ctx)
    stop = _stop_event()
    Ingest(cfg, open_db(cfg.console_database_path)).run(stop)


@cli.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.pass_context
def set_password(ctx: click.Context, username: str, password_stdin: bool) -> None:
    """Create a console admin, or change their password."""
    from appliance.console.auth import UserError
    from appliance.console.auth import set_password as set_pw
    from appliance.console.schema import MIGRATIONS
    from appliance.store import migrate, open_db

    cfg = _load(ctx)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    database = open_db(cfg.console_database_path)
    migrate(database, "console", MIGRATIONS)
    try:
        set_pw(database, username, password)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"password set for '{username}'")


@cli.command()
@click.option("--appliances", "count", default=2, show_default=True,
              type=click.IntRange(1, 50), help="How many simulated appliances to run.")
@click.option("--dir", "directory", default=Path("lab"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Where the lab keeps configs, databases and logs.")
@click.option("--base-port", default=8800, show_default=True, type=click.IntRange(1024, 65000),
              help="Broker on BASE, console on BASE+1, appliance N's portal on BASE+10+N.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.5, 60),
              help="Seconds between health samples of each agent.")
def lab(count: int, directory: Path, base_port: int, interval: float) -> None:
    """Run a whole fleet on this machine: broker, console and N appliances, all on loopback.

    Prints the URLs, runs until Ctrl-C, then stops every process cleanly.
    """
    from appliance.lab import Lab, LabError

    logging.basicConfig(level="INFO", format="%(asctime)s lab: %(message)s", stream=sys.stderr)
    try:
        the_lab = Lab(directory.resolve(), count=count, base_port=base_port, interval=interval)
        the_lab.run(_stop_event(), out=click.echo)
    except LabError as exc:
        raise click.ClickException(str(exc)) from None


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
