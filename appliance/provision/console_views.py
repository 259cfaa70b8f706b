"""`POST /enroll` on the console: a Pi trades a one-time token and its CSR for a certificate.

JSON in: `{"device_id", "token", "csr"}`; JSON out: `{"certificate", "ca", "serial",
"not_after"}` (200), else `{"error"}` with 400 (malformed, bad CSR), 403 (token unknown,
expired or used), 429 (rate limited) or 503 (no CA yet). Served over HTTPS by the reverse proxy
in front of the console; `[console] proxy_hops` makes the client address the Pi's.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, request
from flask.blueprints import BlueprintSetupState

from appliance.config import Config
from appliance.provision import enrollment
from appliance.websecurity import csrf_exempt

bp = Blueprint("provision", __name__)


@bp.record_once
def _migrate(state: BlueprintSetupState) -> None:
    # Once at app start, like the console's own schema, so no request races a schema change.
    enrollment.open_console_db(state.app.config["APPLIANCE_CONFIG"]).conn.close()


@bp.post("/enroll")
# Exempt from the session CSRF check: a Pi has no session and no CSRF token, and CSRF is about a
# browser's ambient credentials (the session cookie), which this endpoint never reads. Each
# request authenticates itself with a one-time token in its body that a forged cross-site
# request cannot know.
@csrf_exempt
def enroll() -> Any:
    cfg: Config = current_app.config["APPLIANCE_CONFIG"]
    if (request.content_length or 0) > enrollment.MAX_REQUEST_BYTES:
        return {"error": "request too large"}, 413
    payload = request.get_json(silent=True)
    db = enrollment.open_console_db(cfg)
    try:
        answer = enrollment.handle(db, enrollment.ca_directory(cfg), payload,
                                   request.remote_addr or "unknown", time.time())
    finally:
        db.conn.close()
    return answer.body, answer.status
