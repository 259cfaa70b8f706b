"""Where the web assets live: `web/` beside the package in a checkout, or $APPLIANCE_WEB_DIR."""

from __future__ import annotations

import os
from pathlib import Path


def web_dir() -> Path:
    override = os.environ.get("APPLIANCE_WEB_DIR")
    path = Path(override) if override else Path(__file__).resolve().parent.parent / "web"
    if not (path / "templates").is_dir():
        raise RuntimeError(
            f"web assets not found at {path}; install from a checkout (pip install -e .) "
            "or set APPLIANCE_WEB_DIR"
        )
    return path


def templates(app: str) -> Path:
    return web_dir() / "templates" / app


def static(app: str) -> Path:
    return web_dir() / "static" / app
