"""Run a Flask app factory under gunicorn, in-process, so systemd runs `appliance portal` directly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from gunicorn.app.base import BaseApplication


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, factory: Callable[[], Any], options: dict[str, Any]) -> None:
        self.factory = factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            # Settings newer gunicorns know and older ones do not are skipped, not fatal.
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Any:
        return self.factory()


def serve(
    factory: Callable[[], Any],
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    name: str,
    extra_ports: tuple[int, ...] = (),
) -> None:
    """Serve until SIGTERM/SIGINT. Threads let long-lived streams (SSE) share a worker.
    `extra_ports` are further listeners on the same address (the app tells them apart by the
    WSGI SERVER_PORT, which gunicorn takes from the listening socket)."""
    _Server(
        factory,
        {
            "bind": [f"[{host}]:{p}" if ":" in host else f"{host}:{p}" for p in (port, *extra_ports)],
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "proc_name": name,
            # Requests from students are not logged: no per-device browsing record by default.
            "accesslog": None,
            "errorlog": "-",
            "graceful_timeout": 5,
            "timeout": 60,
            "keepalive": 5,
            # The app is built in each worker, after fork: no shared SQLite connections.
            "preload_app": False,
            # gunicorn >= 24 opens a control socket in $HOME, shared by every instance: not ours.
            "control_socket_disable": True,
        },
    ).run()


class WebSection(Protocol):
    """What [portal] and [console] share: where and how wide to serve."""

    @property
    def listen(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def workers(self) -> int: ...
    @property
    def threads(self) -> int: ...


def serve_app(factory: Callable[[], Any], web: WebSection, name: str,
              extra_ports: tuple[int, ...] = ()) -> None:
    """Build the app once here (a bad config fails with one clear line, not inside every
    worker), then serve it under gunicorn on the section's address."""
    factory()
    serve(factory, host=web.listen, port=web.port, workers=web.workers, threads=web.threads,
          name=name, extra_ports=extra_ports)
