"""The landing page: who runs this network and what is on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, render_template

bp = Blueprint("landing", __name__)


@dataclass(frozen=True)
class Resource:
    title: str
    kind: str  # "archive" (ZIM) | "folder"
    size_mb: float


def list_resources(content_dir: Path) -> list[Resource]:
    """What the content folder holds, for the landing page. Missing folder: nothing yet."""
    try:
        entries = sorted(content_dir.iterdir(), key=lambda p: p.name.lower())
    except OSError:
        return []
    found = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix == ".zim":
            found.append(Resource(_title(entry.stem), "archive", entry.stat().st_size / 1e6))
        elif entry.is_dir():
            found.append(Resource(_title(entry.name), "folder", 0.0))
    return found


def _title(stem: str) -> str:
    return stem.replace("_", " ").replace("-", " ").strip().capitalize()


@bp.get("/")
def index() -> Any:
    config = current_app.config["APPLIANCE_CONFIG"]
    return render_template(
        "landing.html",
        title=config.portal.title,
        building=config.appliance.name or config.appliance.id,
        resources=list_resources(config.portal.content_dir),
    )


@bp.get("/healthz")
def healthz() -> Any:
    return {"ok": True}
