"""Where the web assets live: `web/` beside the package in a checkout, or $APPLIANCE_WEB_DIR."""

from __future__ import annotations

import os
from pathlib import Path

from appliance.config import ConfigError


def web_dir() -> Path:
    override = os.environ.get("APPLIANCE_WEB_DIR")
    path = Path(override) if override else Path(__file__).resolve().parent.parent / "web"
    if not (path / "templates").is_dir():
        raise ConfigError(
            path, "APPLIANCE_WEB_DIR",
            "web assets (templates/, static/) not found here; install from a checkout "
            "(pip install -e .) or point APPLIANCE_WEB_DIR at the web/ folder",
        )
    return path


def templates(app: str) -> Path:
    return web_dir() / "templates" / app


def static(app: str) -> Path:
    return web_dir() / "static" / app
