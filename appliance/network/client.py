"""Calling the privileged helper: one request, one answer, over its Unix socket.

    from appliance.network.client import call
    call(cfg.network.helper.socket, "session-status", {"ip": "10.42.0.23"})
    # -> {"accepted": False, "seconds_remaining": 0, ...}; HelperError if refused or down
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


class HelperError(Exception):
    """The helper refused the request, or could not be reached."""


def call(path: Path, verb: str, args: dict[str, str] | None = None, *, timeout: float = 5.0) -> Any:
    """Send `verb` with `args`; return the helper's result or raise HelperError."""
    request = json.dumps({"verb": verb, "args": args or {}}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError as exc:
        raise HelperError(f"network helper at {path} unreachable: {exc.strerror or exc}") from None
    try:
        answer = json.loads(data)
    except json.JSONDecodeError:
        raise HelperError("network helper sent no answer") from None
    if not answer.get("ok"):
        raise HelperError(str(answer.get("error", "refused")))
    return answer.get("result")
