"""`appliance portal`: the student portal service (the systemd unit runs it by this name)."""

from __future__ import annotations

import click

from appliance.command import pass_config
from appliance.config import Config


@click.command("portal")
@pass_config
def portal(cfg: Config) -> None:
    """Serve the student portal (gunicorn) on [portal] listen:port, and the library's archive
    content on [content] archive_port (its own origin)."""
    from appliance.content.origin import Dispatch, create_archive_app
    from appliance.portal.app import create_app
    from appliance.webserver import serve_app

    def factory() -> Dispatch:
        return Dispatch(create_app(cfg), create_archive_app(cfg), cfg.content.archive_port)

    serve_app(factory, cfg.portal, "appliance-portal", extra_ports=(cfg.content.archive_port,))


COMMANDS: tuple[click.Command, ...] = (portal,)
