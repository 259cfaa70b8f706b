"""`appliance filter serve`: the classroom's DNS on port 53, UDP and TCP, IPv4 and IPv6.

The only module of the filter with sockets. Threads, each a blocking loop (measured faster than
an asyncio datagram endpoint for this work, see docs/performance.md):

- one receive loop per UDP socket: parse, decide, answer from the cache or send upstream;
- one receive loop per upstream (a connected UDP socket, so an unreachable upstream is an
  immediate ECONNREFUSED, answered SERVFAIL at once instead of after the timeout);
- one accept loop per TCP socket and one thread per TCP connection (RFC 7766 framing);
- housekeeping: upstream timeouts (SERVFAIL after `upstream_timeout`), policy/state/list/clock
  refresh once a second, statistics to SQLite, the systemd watchdog, and the addresses of the
  DoH resolvers clients asked for (names of the `doh` category, resolved by us although the
  client got NXDOMAIN) written to `doh_file` for the network's port-443 reject set, and the
  addresses of the walled-garden names written to `walled_file` (`appliance.network.dnssets`:
  the network helper loads both into its sets). A walled-garden answer with an address not
  yet published waits for `publish_walled` (file written, the helper asked to load it now):
  the phone connects right after its lookup, which must not meet the captive redirect.

A client sending more than `rate_limit` queries a second (after a burst of `rate_burst`) has the
rest dropped, so a flood from one device does not starve the others.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.config import FilterSection
from appliance.filter import wire
from appliance.filter.resolver import Forward, Resolver
from appliance.network import dnssets

log = logging.getLogger(__name__)

MAX_PENDING = 20000
DOH_REFRESH_S = 300.0  # a DoH name is resolved again at most this often
DOH_KEEP_S = 3600.0  # its addresses stay in the reject list at least this long
WALLED_KEEP_S = 86400.0  # a walled-garden address stays this long after upstream last gave it
TCP_IDLE_S = 10.0
TCP_MAX_CLIENTS = 64


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify, WatchdogSec=) something; nothing without $NOTIFY_SOCKET."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), path)


def parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class RateLimit:
    """A token bucket per client address."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, list[float]] = {}
        self.dropped = 0

    def allow(self, client: str, now: float) -> bool:
        b = self.buckets.get(client)
        if b is None:
            if len(self.buckets) > 100_000:
                self.buckets = {}
            self.buckets[client] = [self.burst - 1, now]
            return True
        tokens = min(self.burst, b[0] + (now - b[1]) * self.rate)
        b[1] = now
        if tokens < 1:
            b[0] = tokens
            self.dropped += 1
            return False
        b[0] = tokens - 1
        return True


@dataclass
class _Pending:
    fwd: Forward
    addr: tuple[str, int] | tuple[str, int, int, int]
    sock: socket.socket
    deadline: float
    upstream: int


class Server:
    """Serves `resolver` on the addresses of `section`. `start()` binds (raising OSError if a
    port is taken) and starts the threads; `stop()` ends them."""

    def __init__(self, section: FilterSection, resolver: Resolver, *,
                 on_tick: Callable[[], None] | None = None, doh_file: Path | None = None,
                 walled_file: Path | None = None,
                 publish_walled: Callable[[Path, dict[str, float]], None] | None = None) -> None:
        self.section = section
        self.resolver = resolver
        self.on_tick = on_tick
        self.upstreams = [parse_hostport(u) for u in section.upstreams]
        self.timeout = section.upstream_timeout
        self.limit = RateLimit(section.rate_limit, section.rate_burst)
        self.pending: dict[tuple[int, int], _Pending] = {}
        self._plock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.udp: list[socket.socket] = []
        self.tcp: list[socket.socket] = []
        self.up: list[socket.socket] = []
        self._down_until = [0.0] * len(self.upstreams)
        self.servfails = 0
        self._tcp_clients = threading.BoundedSemaphore(TCP_MAX_CLIENTS)
        self.doh_file = doh_file
        self.walled_file = walled_file
        self.publish_walled = publish_walled or (lambda path, addrs: dnssets.write(path, addrs))
        self._walled_written = 0.0
        self._walled_lock = threading.Lock()
        self.doh_addresses: dict[str, float] = {}  # address -> until (monotonic)
        self._doh_asked: dict[str, float] = {}  # name -> when last resolved
        self._doh_busy = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------
    def bind(self) -> None:
        for addr in self.section.listen:
            fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
            u = socket.socket(fam, socket.SOCK_DGRAM)
            t = socket.socket(fam, socket.SOCK_STREAM)
            for s in (u, t):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if self.section.workers > 1:  # several processes on one port
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if fam == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((addr, self.section.port))
            u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            t.listen(128)
            self.udp.append(u)
            self.tcp.append(t)
        for host, port in self.upstreams:
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.connect((host, port))
            s.settimeout(0.5)
            self.up.append(s)

    @property
    def port(self) -> int:
        return int(self.udp[0].getsockname()[1])

    def start(self) -> Server:
        if not self.udp:
            self.bind()
        for u in self.udp:
            self._spawn(self._udp_loop, u)
        for t in self.tcp:
            self._spawn(self._tcp_accept, t)
        for i in range(len(self.up)):
            self._spawn(self._upstream_loop, i)
        self._spawn(self._housekeeping)
        return self

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        th = threading.Thread(target=target, args=args, daemon=True,
                              name=f"filter-{target.__name__}")
        th.start()
        self._threads.append(th)

    def stop(self) -> None:
        self._stop.set()
        for s in (*self.udp, *self.tcp, *self.up):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for th in self._threads:
            th.join(timeout=2)

    # -- UDP -----------------------------------------------------------------------------------
    def _udp_loop(self, sock: socket.socket) -> None:
        resolver, limit, clock = self.resolver, self.limit, time.monotonic
        recv, send = sock.recvfrom, sock.sendto
        while not self._stop.is_set():
            try:
                data, addr = recv(4096)
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if not addr:  # the socket was shut down
                if self._stop.is_set():
                    return
                continue
            client = addr[0]
            if not limit.allow(client, clock()):
                continue
            try:
                out = resolver.answer(data, client)
            except Exception:  # a bug must cost one query, never the server
                log.exception("answering a query from %s", client)
                continue
            if out is None:
                continue
            if isinstance(out, bytes):
                with contextlib.suppress(OSError):
                    send(out, addr)
            else:
                self._forward(out, addr, sock)

    def _pick(self) -> int:
        now = time.monotonic()
        for i in range(len(self.up)):
            if self._down_until[i] <= now:
                return i
        return 0

    def _forward(self, fwd: Forward, addr: tuple[str, int] | tuple[str, int, int, int],
                 sock: socket.socket) -> None:
        i = self._pick()
        with self._plock:
            if len(self.pending) >= MAX_PENDING:
                return
            ident = secrets.randbits(16)
            while (i, ident) in self.pending:
                ident = secrets.randbits(16)
            self.pending[(i, ident)] = _Pending(fwd, addr, sock, time.monotonic() + self.timeout, i)
        try:
            self.up[i].send(struct.pack("!H", ident) + fwd.data[2:])
        except OSError:
            self._fail(i, ident)

    def _fail(self, i: int, ident: int) -> None:
        with self._plock:
            p = self.pending.pop((i, ident), None)
        if p is not None:
            self._reply(p, None)

    def _reply(self, p: _Pending, response: bytes | None) -> None:
        if response is None:
            self.servfails += 1
        try:
            out = self.resolver.complete(p.fwd, response)
            if self.resolver.walled_changed:
                self._walled_tick(time.monotonic())
        except Exception:
            log.exception("completing an upstream answer")
            return
        with contextlib.suppress(OSError):
            p.sock.sendto(out, p.addr)

    def _upstream_loop(self, i: int) -> None:
        sock = self.up[i]
        while not self._stop.is_set():
            try:
                data = sock.recv(65535)
            except TimeoutError:
                continue
            except ConnectionRefusedError:
                # Nothing listens there: every query waiting on it fails now, not at the timeout.
                self._down_until[i] = time.monotonic() + 2.0
                with self._plock:
                    gone = [k for k, p in self.pending.items() if p.upstream == i]
                    waiting = [self.pending.pop(k) for k in gone]
                for w in waiting:
                    self._reply(w, None)
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if len(data) < 12:
                continue
            ident = struct.unpack_from("!H", data)[0]
            with self._plock:
                p = self.pending.pop((i, ident), None)
            if p is not None:
                self._reply(p, data)

    # -- TCP -----------------------------------------------------------------------------------
    def _tcp_accept(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = sock.accept()
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if not self._tcp_clients.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._tcp_conn, args=(conn, addr[0]), daemon=True).start()

    def _tcp_conn(self, conn: socket.socket, client: str) -> None:
        try:
            conn.settimeout(TCP_IDLE_S)
            while not self._stop.is_set():
                head = _recv_exact(conn, 2)
                if head is None:
                    return
                data = _recv_exact(conn, struct.unpack("!H", head)[0])
                if data is None or not self.limit.allow(client, time.monotonic()):
                    return
                out = self.resolver.answer(data, client, tcp=True)
                if out is None:
                    return
                if not isinstance(out, bytes):
                    out = self.resolver.complete(out, self.query_upstream(out.data))
                    if self.resolver.walled_changed:
                        self._walled_tick(time.monotonic())
                conn.sendall(struct.pack("!H", len(out)) + out)
        except (OSError, ValueError):
            return
        finally:
            conn.close()
            self._tcp_clients.release()

    def query_upstream(self, data: bytes) -> bytes | None:
        """One query, waiting for its answer (UDP, then TCP if truncated): the TCP clients' path."""
        ident = secrets.randbits(16)
        msg = struct.pack("!H", ident) + data[2:]
        deadline = time.monotonic() + self.timeout
        for i, (host, port) in enumerate(self.upstreams):
            if self._down_until[i] > time.monotonic():
                continue
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            try:
                with socket.socket(fam, socket.SOCK_DGRAM) as s:
                    s.settimeout(max(0.05, deadline - time.monotonic()))
                    s.connect((host, port))
                    s.send(msg)
                    resp: bytes | None = None
                    while True:
                        resp = s.recv(65535)
                        if resp[:2] == msg[:2]:
                            break
                if resp is not None and len(resp) > 2 and resp[2] & 0x02:  # TC: ask again over TCP
                    with socket.create_connection((host, port), timeout=self.timeout) as t:
                        t.sendall(struct.pack("!H", len(msg)) + msg)
                        head = _recv_exact(t, 2)
                        resp = _recv_exact(t, struct.unpack("!H", head)[0]) if head else None
                return resp
            except ConnectionRefusedError:
                self._down_until[i] = time.monotonic() + 2.0
            except OSError:
                return None
        return None

    # -- housekeeping --------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        last_refresh = 0.0
        watchdog = bool(os.environ.get("WATCHDOG_USEC"))
        while not self._stop.wait(0.1):
            now = time.monotonic()
            with self._plock:
                late = [k for k, p in self.pending.items() if p.deadline <= now]
                expired = [self.pending.pop(k) for k in late]
            for p in expired:
                self._reply(p, None)
            self._walled_tick(now)
            if now - last_refresh >= 1.0:
                last_refresh = now
                try:
                    self.resolver.refresh()
                    if self.on_tick:
                        self.on_tick()
                except Exception:
                    log.exception("refreshing the policy")
                    continue
                self._doh_tick()
                if watchdog and all(t.is_alive() for t in self._threads
                                    if t.name != "filter-_housekeeping"):
                    sd_notify("WATCHDOG=1")


    def _walled_tick(self, now: float) -> None:
        r = self.resolver
        if self.walled_file is None or not (r.walled_changed or now - self._walled_written > 600):
            return
        with self._walled_lock:
            r.walled_changed = False
            self._walled_written = now
            r.walled_addresses = {a: t for a, t in r.walled_addresses.items()
                                  if now - t < WALLED_KEEP_S}
            try:
                self.publish_walled(self.walled_file, dict(r.walled_addresses))
            except OSError as exc:
                log.error("could not publish %s: %s", self.walled_file, exc)

    # -- DoH endpoints -------------------------------------------------------------------------
    def _doh_tick(self) -> None:
        """Resolve the DoH names clients asked for (in a thread of its own: upstream may be slow)
        and keep `doh_file` listing their addresses, for the network's reject set."""
        if self.doh_file is None or self._doh_busy.locked():
            return
        names, self.resolver.doh_names = self.resolver.doh_names, set()
        now = time.monotonic()
        due = [n for n in names if now - self._doh_asked.get(n, -1e9) > DOH_REFRESH_S]
        expired = [a for a, until in self.doh_addresses.items() if until <= now]
        if not due and not expired:
            return
        threading.Thread(target=self._doh_resolve, args=(due,), daemon=True).start()

    def _doh_resolve(self, names: list[str]) -> None:
        with self._doh_busy:
            now = time.monotonic()
            for name in names:
                self._doh_asked[name] = now
                for qtype in (wire.A, wire.AAAA):
                    query = wire.build(wire.Message(0, wire.RD, (wire.Question(name, qtype),)))
                    answer = self.query_upstream(query)
                    try:
                        msg = wire.parse(answer) if answer else None
                    except wire.WireError:
                        msg = None
                    for r in msg.answers if msg else ():
                        if r.rtype in (wire.A, wire.AAAA) and len(r.rdata) in (4, 16):
                            addr = str(ipaddress.ip_address(r.rdata))
                            self.doh_addresses[addr] = now + max(r.ttl, DOH_KEEP_S)
            self.doh_addresses = {a: u for a, u in self.doh_addresses.items() if u > now}
            assert self.doh_file is not None
            dnssets.write(self.doh_file, self.doh_addresses)


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
