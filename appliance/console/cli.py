"""The console's commands: `appliance console` (web UI), `appliance ingest`, `appliance set-password`."""

from __future__ import annotations

import sys

import click

from appliance.command import pass_config, stop_on_signal
from appliance.config import Config


@click.command("console")
@pass_config
def console(cfg: Config) -> None:
    """Serve the console web UI (gunicorn) on [console] listen:port."""
    from appliance.console.app import create_app
    from appliance.webserver import serve_app

    serve_app(lambda: create_app(cfg), cfg.console, "appliance-console")


@click.command("ingest")
@pass_config
def ingest(cfg: Config) -> None:
    """Subscribe to the fleet's messages and store them in the console database."""
    from appliance.console.ingest import Ingest
    from appliance.store import open_db

    stop = stop_on_signal()
    Ingest(cfg, open_db(cfg.console_database_path)).run(stop)


@click.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_config
def set_password(cfg: Config, username: str, password_stdin: bool) -> None:
    """Create a console admin, or change their password."""
    from appliance.console import db
    from appliance.console.auth import UserError
    from appliance.console.auth import set_password as set_pw

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        set_pw(db.open_migrated(cfg), username, password)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"password set for '{username}'")


COMMANDS: tuple[click.Command, ...] = (console, ingest, set_password)
