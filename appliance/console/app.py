"""The console's Flask app factory and the blueprints it registers."""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from appliance import paths
from appliance.config import Config
from appliance.console import auth, db, device, fleet, presence, summaries
from appliance.i18n import install_i18n
from appliance.provision import console_views as provision_views
from appliance.secretfiles import ensure_secret
from appliance.websecurity import install_security

# Each area of the console is a blueprint; a new one is added to this list.
BLUEPRINTS = (auth.bp, fleet.bp, device.bp, summaries.bp, provision_views.bp)
# Languages the console offers (each but English has a catalog in web/translations; docs/i18n.md).
LANGUAGES = ("en", "ru")


def create_app(config: Config, test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(
        __name__,
        template_folder=str(paths.templates("console")),
        static_folder=str(paths.static("console")),
        static_url_path="/static",
    )
    secret_file = config.console.secret_key_file or (
        config.appliance.state_dir / "secrets" / "console-secret-key"
    )
    app.config.update(
        SECRET_KEY=ensure_secret(secret_file, "console.secret_key_file"),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.console.cookie_secure,
        SESSION_COOKIE_NAME="console_session",
        PERMANENT_SESSION_LIFETIME=12 * 3600,
        APPLIANCE_CONFIG=config,
    )
    if test_config:
        app.config.update(test_config)
    if config.console.proxy_hops:
        # Behind a reverse proxy the client address is in X-Forwarded-For; without this every
        # request would come from the proxy, and sign-in throttling would lock out everyone.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=config.console.proxy_hops, x_proto=config.console.proxy_hops
        )
    db.init_app(app, config.console_database_path)
    install_security(app, csrf=True)
    # States and reasons reach the scripts as data (English msgids), so their catalog needs them.
    install_i18n(app, LANGUAGES, js_extra=[*presence.STATES.values(), *presence.REASONS.values()])
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app
