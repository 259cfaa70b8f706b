"""Calling the privileged helper: one request, one answer, over its Unix socket.

    from appliance.network.client import call
    call(cfg.network.helper.socket, "session-status", {"ip": "10.42.0.23"})
    # -> {"accepted": False, "seconds_remaining": 0, ...}; HelperError if refused or down

    with usb_drive(cfg.network.helper.socket, "/dev/sda1") as drive:
        names = os.listdir(drive.root)  # the stick, read-only; unmounted when the block ends
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class HelperError(Exception):
    """The helper refused the request, or could not be reached."""


class HelperUnreachable(HelperError):
    """The helper's socket could not be reached (not started yet, or stopped)."""


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
        raise HelperUnreachable(f"network helper at {path} unreachable: {exc.strerror or exc}") from None
    try:
        answer = json.loads(data)
    except json.JSONDecodeError:
        raise HelperError("network helper sent no answer") from None
    if not answer.get("ok"):
        raise HelperError(str(answer.get("error", "refused")))
    return answer.get("result")


@dataclass(frozen=True)
class UsbDrive:
    """A drive the helper mounted for us: read it under `root` (/proc/self/fd/N, this process
    only) until the `usb_drive` block ends."""

    device: str
    filesystem: str
    root: Path
    fd: int


@contextlib.contextmanager
def usb_drive(path: Path, device: str, *, timeout: float = 30.0) -> Iterator[UsbDrive]:
    """Have the helper mount `device` (usb-mount) and yield it; on leaving the block, however it
    is left, the fd is closed and the helper unmounts the drive before this returns.
    HelperError if refused (the message says why) or the helper is down."""
    request = json.dumps({"verb": "usb-mount", "args": {"device": device}}).encode() + b"\n"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fds: list[int] = []
    mounted = False
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(request)
            data, fds, _flags, _addr = socket.recv_fds(sock, 65536, 1)
            while data and not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise HelperError(f"network helper at {path} unreachable: {exc.strerror or exc}") from None
        try:
            answer = json.loads(data)
        except json.JSONDecodeError:
            raise HelperError("network helper sent no answer") from None
        if not answer.get("ok"):
            raise HelperError(str(answer.get("error", "refused")))
        if len(fds) != 1:
            raise HelperError("network helper mounted the drive but sent no directory fd")
        result = answer["result"]
        mounted = True
        yield UsbDrive(result["device"], result["filesystem"], Path(f"/proc/self/fd/{fds[0]}"),
                       fds[0])
    finally:
        for fd in fds:
            os.close(fd)
        # Ask for the unmount and wait for its answer, so the drive is free once we return.
        if mounted:
            with contextlib.suppress(OSError):
                sock.sendall(b'{"verb": "usb-unmount"}\n')
                sock.recv(4096)
        sock.close()
