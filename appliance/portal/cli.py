"""`appliance portal`: the student portal service (the systemd unit runs it by this name)."""

from __future__ import annotations

import ssl

import click

from appliance.command import pass_config
from appliance.config import Config, ConfigError


@click.command("portal")
@pass_config
def portal(cfg: Config) -> None:
    """Serve the student portal (gunicorn) on [portal] listen:port, the library's archive
    content on [content] archive_port (its own origin) and, with [network] tls_cert and
    tls_key, the portal over HTTPS on [portal] https_port."""
    from appliance.content.origin import Dispatch, create_archive_app
    from appliance.portal.app import create_app
    from appliance.webserver import TLS, serve_app

    def factory() -> Dispatch:
        return Dispatch(create_app(cfg), create_archive_app(cfg), cfg.content.archive_port)

    net = cfg.network
    tls = None
    if net.tls_cert is not None and net.tls_key is not None:
        tls = TLS(cfg.portal.https_port, net.tls_cert, net.tls_key)
        try:
            tls.context()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(cfg.source, "network.tls_key",
                              f"cannot load the certificate and its key: {exc}") from None
    serve_app(factory, cfg.portal, "appliance-portal", extra_ports=(cfg.content.archive_port,), tls=tls)


COMMANDS: tuple[click.Command, ...] = (portal,)
