"""The portal's Flask app factory and the blueprints it registers."""

from __future__ import annotations

from typing import Any

from flask import Flask

from appliance import paths
from appliance.config import Config
from appliance.content import portal_views as library_views
from appliance.filter import portal_views as filter_views
from appliance.i18n import install_i18n
from appliance.moodle import portal_views as moodle_views
from appliance.network import portal_views as network_views
from appliance.portal import landing
from appliance.websecurity import install_security

# Each capability of the portal is a blueprint; a new one is added to this list.
BLUEPRINTS = (landing.bp, library_views.bp, network_views.bp, moodle_views.bp, filter_views.bp)
# Languages the portal offers (each but English has a catalog in web/translations; docs/i18n.md).
LANGUAGES = ("en", "ru", "udm")


def create_app(config: Config, test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(
        __name__,
        template_folder=str(paths.templates("portal")),
        static_folder=str(paths.static("portal")),
        static_url_path="/static",
    )
    app.config.update(APPLIANCE_CONFIG=config)
    if test_config:
        app.config.update(test_config)
    # No sessions and no cookie; the one form (/captive/accept) checks its origin itself.
    install_security(app, csrf=False)
    # The language is a cookie set by the switch's links: still no session, nothing to forge.
    install_i18n(app, LANGUAGES)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app
