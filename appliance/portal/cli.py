"""`appliance portal`: the student portal service (the systemd unit runs it by this name)."""

from __future__ import annotations

import click

from appliance.command import pass_config
from appliance.config import Config


@click.command("portal")
@pass_config
def portal(cfg: Config) -> None:
    """Serve the student portal (gunicorn) on [portal] listen:port."""
    from appliance.portal import create_app
    from appliance.webserver import serve_app

    serve_app(lambda: create_app(cfg), cfg.portal, "appliance-portal")


COMMANDS: tuple[click.Command, ...] = (portal,)
