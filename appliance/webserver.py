"""Run a Flask app factory under gunicorn, in-process, so systemd runs `appliance portal` directly."""

from __future__ import annotations

import errno
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import TConn, ThreadWorker


@dataclass(frozen=True)
class TLS:
    """One listener of the server that speaks HTTPS: its port, certificate chain and key."""

    port: int
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        """The server context (TLS 1.2+, Python's default ciphers); raises OSError/SSLError
        when the files are missing, unreadable or do not match."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


# Set in the master before the workers fork (they inherit it); gunicorn's own TLS settings
# would make every listener HTTPS, the plain portal and the archive origin too.
_tls: TLS | None = None
_contexts: dict[int, ssl.SSLContext] = {}


class _TLSConn(TConn):  # type: ignore[misc]
    sock: Any
    server: Any
    initialized: bool
    parser: Any

    def init(self) -> None:
        # In the worker thread (the handshake must not block the accept loop), once.
        if not self.initialized and self.parser is None and _tls is not None \
                and self.server[1] == _tls.port:
            context = _contexts.get(_tls.port)
            if context is None:
                context = _contexts[_tls.port] = _tls.context()
            # A client that never finishes its handshake frees the thread after 10 s.
            self.sock.settimeout(10)
            self.sock = context.wrap_socket(self.sock, server_side=True)
            self.sock.setblocking(True)
        super().init()


class TLSThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker whose connections to `_tls.port` are wrapped in TLS."""

    def accept(self, listener: Any) -> None:
        # The base class's accept(), building our connection class.
        try:
            client_sock, client_addr = listener.accept()
            self.nr_conns += 1
            client_sock.setblocking(True)
            self.enqueue_req(_TLSConn(self.cfg, client_sock, client_addr, listener.getsockname()))
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise


class SchemeByPort:
    """WSGI middleware: requests that came in on the TLS port are `https` (gunicorn, not doing
    the TLS itself, would call them `http`, and Flask's `request.is_secure` reads this)."""

    def __init__(self, app: Any, port: int) -> None:
        self.app = app
        self.port = str(port)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("SERVER_PORT") == self.port:
            environ["wsgi.url_scheme"] = "https"
        result: Iterable[bytes] = self.app(environ, start_response)
        return result


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
    tls: TLS | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT. Threads let long-lived streams (SSE) share a worker.
    `extra_ports` are further listeners on the same address (the app tells them apart by the
    WSGI SERVER_PORT, which gunicorn takes from the listening socket). With `tls`, its port is
    one more listener, speaking HTTPS, and the app sees `wsgi.url_scheme` "https" there."""
    global _tls
    ports = (port, *extra_ports)
    app_factory = factory
    if tls is not None:
        tls.context()  # a missing or wrong certificate or key fails here, once, clearly
        _tls = tls
        ports = (*ports, tls.port)

        def app_factory() -> Any:
            return SchemeByPort(factory(), tls.port)

    _Server(
        app_factory,
        {
            "bind": [f"[{host}]:{p}" if ":" in host else f"{host}:{p}" for p in ports],
            "workers": workers,
            "threads": threads,
            "worker_class": "appliance.webserver.TLSThreadWorker" if tls else "gthread",
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
              extra_ports: tuple[int, ...] = (), tls: TLS | None = None) -> None:
    """Build the app once here (a bad config fails with one clear line, not inside every
    worker), then serve it under gunicorn on the section's address."""
    factory()
    serve(factory, host=web.listen, port=web.port, workers=web.workers, threads=web.threads,
          name=name, extra_ports=extra_ports, tls=tls)
