"""The capability summaries on the device page: one panel per registered spec, drawn from the
spec alone (labels, formatting by kind), and `/api/device/<id>/summaries` for its refresh.

The console knows a capability only through its summary module (`appliance.fleet.summaries`
imports it); `summaries.js` formats values by the same rules as `text()` here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint

from appliance.config import ID_PATTERN
from appliance.console import records
from appliance.console.auth import login_required
from appliance.console.db import get_db
from appliance.fleet import summaries
from appliance.i18n import gettext

bp = Blueprint("summaries", __name__)

DASH = "\u2013"  # an en dash, as the rest of the page shows a missing value


def _number(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{_number(value)} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _seconds(value: float) -> str:
    if value < 90:
        return f"{_number(value)} s"
    minutes = int(value // 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 36:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def when(seconds: float | None) -> str:
    """A time as the server renders it (UTC); summaries.js shows the browser's local time."""
    if seconds is None:
        return gettext("never")
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def text(kind: str, value: summaries.Value) -> str:
    """A summary value as the page shows it, by its field's kind; a dash when None."""
    if value is None:
        return DASH
    if kind == "bool":
        return gettext("yes") if value else gettext("no")
    if kind == "text":
        return str(value)
    assert isinstance(value, int | float)
    if kind == "count":
        return f"{int(value):,}"
    if kind == "bytes":
        return _bytes(value)
    if kind == "seconds":
        return _seconds(value)
    if kind == "pct":
        return f"{_number(value)} %"
    if kind == "timestamp":
        return when(value / 1000)
    raise ValueError(f"unknown kind {kind!r}")


def panels(device_id: str) -> list[dict[str, Any]] | None:
    """The device's summary sections with each field's `text` added; None if it is unknown."""
    if not ID_PATTERN.fullmatch(device_id):
        return None
    entries = records.device_summaries(get_db(), device_id, summaries.specs())
    for entry in entries or ():
        for f in entry["fields"]:
            f["text"] = text(f["kind"], f["value"])
    return entries


@bp.get("/api/device/<path:device_id>/summaries")
@login_required
def api(device_id: str) -> Any:
    found = panels(device_id)
    if found is None:
        return {"error": "unknown device"}, 404
    return {"device": device_id, "sections": found}
