"""Fleet pages: the overview with live health, a JSON snapshot, and a server-sent event stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, render_template, stream_with_context

from appliance.console import records
from appliance.console.auth import login_required
from appliance.console.db import get_db
from appliance.console.live import FleetDiff
from appliance.store import open_db

bp = Blueprint("fleet", __name__)

STREAM_POLL_S = 1.0
# Short, so a closed tab frees its worker thread within seconds (only a write reveals it).
STREAM_KEEPALIVE_S = 2.0
# A browser reconnects on its own; bounding a stream frees the worker thread now and then.
STREAM_MAX_S = 300.0


def _snapshot(database: Any = None) -> dict[str, Any]:
    config = current_app.config["APPLIANCE_CONFIG"]
    return records.snapshot(
        database or get_db(), fallback_silent_after=config.console.offline_after
    )


@bp.get("/healthz")
def healthz() -> Any:
    return {"ok": True}


@bp.get("/")
@login_required
def index() -> Any:
    return render_template("fleet/index.html", fleet=_snapshot())


@bp.get("/api/fleet")
@login_required
def api_fleet() -> Any:
    return _snapshot()


@bp.get("/events")
@login_required
def events() -> Response:
    """Server-sent events: the snapshot, then patches as it changes; comments keep proxies open."""
    db_path = current_app.config["CONSOLE_DB"]
    config = current_app.config["APPLIANCE_CONFIG"]

    def stream() -> Iterator[str]:
        database = open_db(db_path)
        diff = FleetDiff()
        try:
            started = last_sent = time.monotonic()
            yield "retry: 2000\n\n"
            while time.monotonic() - started < STREAM_MAX_S:
                event = diff.update(records.snapshot(
                    database, fallback_silent_after=config.console.offline_after
                ))
                if event is not None:
                    last_sent = time.monotonic()
                    yield f"event: {event[0]}\ndata: {json.dumps(event[1])}\n\n"
                elif time.monotonic() - last_sent > STREAM_KEEPALIVE_S:
                    last_sent = time.monotonic()
                    yield ": keepalive\n\n"
                time.sleep(STREAM_POLL_S)
        finally:
            database.conn.close()

    return Response(
        stream_with_context(stream()),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
