"""The landing page: who runs this network and what is on it."""

from __future__ import annotations

from dataclasses import dataclass
from gettext import NullTranslations
from pathlib import Path
from typing import Any

from babel import Locale
from flask import Blueprint, current_app, render_template

from appliance import i18n

bp = Blueprint("landing", __name__)


@dataclass(frozen=True)
class Resource:
    title: str
    kind: str  # "archive" (ZIM) | "folder"
    size: int  # bytes (0 for folders)


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
            found.append(Resource(_title(entry.stem), "archive", entry.stat().st_size))
        elif entry.is_dir():
            found.append(Resource(_title(entry.name), "folder", 0))
    return found


def human_size(size: int, locale: Locale | str = "en", translations: NullTranslations | None = None) -> str:
    """340 MB, 1.2 GB, 12 kB: decimal units, as phones and file managers show them.

    Figures are written as `locale` writes them ("1,2 ГБ" in Russian); unit names come from
    `translations` (English without).
    """
    tr = translations or NullTranslations()
    if size < 1000:
        return tr.ngettext("%(num)s byte", "%(num)s bytes", size) % {"num": size}
    value, unit = float(size), "kB"
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            break
    pattern = "0.0" if unit in ("MB", "GB") and value < 10 else "0"
    # The unit templates are literal here so that extraction finds them.
    template = {"kB": tr.gettext("%(num)s kB"), "MB": tr.gettext("%(num)s MB"),
                "GB": tr.gettext("%(num)s GB")}[unit]
    return template % {"num": i18n.format_decimal(value, pattern, locale=locale)}


@bp.app_template_filter("human_size")
def _human_size_filter(size: int) -> str:
    return human_size(size, i18n.formatting_locale(), i18n.translations())


def _title(stem: str) -> str:
    # Upper-case the first letter only: capitalize() would flatten "PhysikFuerKlasse7".
    words = stem.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


@bp.get("/")
def index() -> Any:
    config = current_app.config["APPLIANCE_CONFIG"]
    return render_template(
        "landing/index.html",
        title=config.portal.title,
        building=config.appliance.name or config.appliance.id,
        resources=list_resources(config.portal.content_dir),
    )


@bp.get("/healthz")
def healthz() -> Any:
    return {"ok": True}
