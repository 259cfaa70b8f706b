"""The portal's Flask app factory and the blueprints it registers."""

from __future__ import annotations

from typing import Any

from flask import Flask

from appliance import paths
from appliance.config import Config
from appliance.content import portal_views as library_views
from appliance.content import search_page
from appliance.filter import portal_views as filter_views
from appliance.i18n import install_i18n
from appliance.moodle import portal_views as moodle_views
from appliance.network import portal_views as network_views
from appliance.portal import landing
from appliance.secretfiles import ensure_secret
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
    if config.moodle.signin_used:
        # The one session: a pupil signed in to Moodle courses. `__Host-` and Secure keep the
        # cookie on the HTTPS origin only; it ends `signin_minutes` after sign-in, not later.
        app.config.update(
            SECRET_KEY=ensure_secret(config.appliance.state_dir / "secrets" / "portal-secret-key",
                                     "appliance.state_dir"),
            SESSION_COOKIE_NAME="__Host-portal_signin",
            SESSION_COOKIE_SECURE=True,
            SESSION_COOKIE_HTTPONLY=True,
            SESSION_COOKIE_SAMESITE="Lax",
            SESSION_REFRESH_EACH_REQUEST=False,
            PERMANENT_SESSION_LIFETIME=config.moodle.signin_minutes * 60,
        )
    if test_config:
        app.config.update(test_config)
    # No global CSRF check: the captive form (/captive/accept) checks its origin itself and has
    # no session; the Moodle sign-in form checks its session's token (`verify_csrf`).
    install_security(app, csrf=False)
    # The language is a cookie set by the switch's links: still no session, nothing to forge.
    install_i18n(app, LANGUAGES)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    # The search page's hot path (content/search_page.py) takes requests on the portal's own
    # host only: those the filter's block page leaves alone.
    search_page.install(app, own_host=lambda host: not config.filter.block_page
                        or filter_views.is_own_host(host, config.network.portal_name))
    return app
