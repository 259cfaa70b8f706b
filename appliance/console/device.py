"""One appliance's page: who it is, how it is now (same presence rules as the fleet), its history."""

from __future__ import annotations

import re
import time
from typing import Any

from flask import Blueprint, current_app, render_template, request

from appliance.config import ID_PATTERN
from appliance.console import records, summaries
from appliance.console.auth import login_required
from appliance.console.db import get_db
from appliance.i18n import N_, format_decimal, format_when, gettext

bp = Blueprint("device", __name__)

DEFAULT_HOURS = 24
# Ranges the page offers; the API takes any whole number of hours up to the maximum.
RANGES = ((1, N_("1 h")), (24, N_("24 h")), (168, N_("7 d")))
HOURS_ERROR = f"hours must be a whole number from 1 to {records.DEVICE_HISTORY_MAX_HOURS}"
# The current figures, in the order shown.
FIGURES = (
    ("cpu_pct", N_("CPU")), ("mem_pct", N_("Memory")), ("disk_pct", N_("Disk")),
    ("temp_c", N_("Temperature")), ("load1", N_("Load (1 min)")), ("uptime_s", N_("Uptime")),
)
# Charts: element id, caption, metric of the history points, y scale ("pct" is 0-100).
CHARTS = (
    ("cpu", N_("CPU %"), "cpu_pct", "pct"),
    ("mem", N_("Memory %"), "mem_pct", "pct"),
    ("disk", N_("Disk %"), "disk_pct", "pct"),
    ("temp", N_("Temperature °C"), "temp_c", "auto"),
)


def _valid_id(device_id: str) -> bool:
    return bool(ID_PATTERN.fullmatch(device_id))


def _when(ts: float | None) -> str:
    """Server-rendered time (UTC, the page's language); device.js replaces it with local time."""
    return format_when(ts)


def _interval(seconds: float | None) -> str:
    if not seconds:
        return gettext("not announced")
    if seconds < 120:
        return gettext("%(num)s s", num=format_decimal(seconds, "0.###"))
    return gettext("%(num)s min", num=format_decimal(seconds / 60, "0.###"))


def _hours(raw: str | None) -> int | None:
    """The `hours` query parameter, or None when it is not a whole number in range."""
    if raw is None:
        return DEFAULT_HOURS
    if not re.fullmatch(r"[0-9]{1,3}", raw):
        return None
    hours = int(raw)
    return hours if 1 <= hours <= records.DEVICE_HISTORY_MAX_HOURS else None


# `path:` so that anything under /device/ (a slash, "..") gets this 404 page, not Flask's.
@bp.get("/device/<path:device_id>")
@login_required
def page(device_id: str) -> Any:
    found = None
    if _valid_id(device_id):
        config = current_app.config["APPLIANCE_CONFIG"]
        found = records.device(
            get_db(), device_id, fallback_silent_after=config.console.offline_after
        )
    if found is None:
        return render_template("device/index.html", device=None, device_id=device_id), 404
    charts = [
        (key, label, records.DEVICE_HISTORY_METRICS.index(metric) + 1, scale)
        for key, label, metric, scale in CHARTS
        if metric != "temp_c" or found["has_temp"]
    ]
    return render_template(
        "device/index.html", device=found, ranges=RANGES, default_hours=DEFAULT_HOURS,
        figures=FIGURES, charts=charts, when=_when, interval=_interval,
        summaries=summaries.panels(device_id),
    )


@bp.get("/api/device/<path:device_id>/history")
@login_required
def history(device_id: str) -> Any:
    hours = _hours(request.args.get("hours"))
    if hours is None:
        return {"error": HOURS_ERROR, "parameter": "hours"}, 400
    found = None
    if _valid_id(device_id):
        found = records.device_history(get_db(), device_id, time.time(), hours)
    if found is None:
        return {"error": "unknown device"}, 404
    return found
