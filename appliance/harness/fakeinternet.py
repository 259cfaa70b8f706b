"""The fake internet of the virtual classroom: an authoritative DNS and a web server.

Both run in the classroom's "inet" namespace (see `appliance.harness.classroom`), started as
`python -m appliance.harness.fakeinternet dns|web --bind ADDR ...`. What they answer:

- DNS (UDP and TCP, port 53): every probe host of `appliance.network.probes` -> the web server's
  WEB4 / WEB6; `dns.msftncsi.com` -> what Microsoft really publishes (131.107.255.255,
  fd3e:4f5a:5b81::1); GARDEN_HOST -> GARDEN4 / GARDEN6 (a walled garden's own addresses); ANY
  other name -> the sentinel SENTINEL4 / SENTINEL6, so a test can tell
  that this server answered (and not the Pi's own local answers). Types other than A and AAAA
  get an empty NOERROR answer (NODATA). Malformed packets get FORMERR (or nothing, when not even
  the header parses); they never stop the server.
- Web (port 80, and 443 with a certificate of the classroom's own CA): each probe URL -> its exact
  online answer (the Android HTTPS probe on 443 too); a login trigger (Windows `/redirect`,
  Kindle `wifiredirect.html`) -> 302 to LOGIN_TRIGGER_LOCATION; any other URL -> 200
  `page_for(host)` ("fake internet: <host>"). The web server also listens on the garden's and the sentinel
  addresses, so any name the fake DNS resolves loads a page.

The DNS and HTTP logic is pure (`dns_answer`, `web_answer`); only `serve_*` and `main` touch
sockets. Each server logs one line per query or request to stderr (`dns udp <client> <name>
<type> -> <answers>`, `web <client> <host> <path> <status>`); `parse_dns_log` reads them back.
"""

from __future__ import annotations

import argparse
import http.server
import ipaddress
import socket
import socketserver
import ssl
import struct
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.network.probes import (
    MSFT_NCSI_DNS_ADDRESS,
    MSFT_NCSI_DNS_NAME,
    PROBES,
    Answer,
    online_answer,
)

# -- addresses (TEST-NET-3 and the documentation IPv6 range) --------------------------------------
INET_NET4 = "203.0.113.0/24"
INET_NET6 = "2001:db8:113::/48"
UPLINK_NET6 = "2001:db8:113:1::/64"   # the uplink link itself, inside INET_NET6
INET_GATEWAY4 = "203.0.113.1"        # the fake internet's end of the Pi's uplink
INET_GATEWAY6 = "2001:db8:113:1::1"
PI_UPLINK4 = "203.0.113.2"           # the Pi's end (uplink0), /24
PI_UPLINK6 = "2001:db8:113:1::2"     # /64
DNS4 = "203.0.113.53"
DNS6 = "2001:db8:113::53"
WEB4 = "203.0.113.80"
WEB6 = "2001:db8:113::80"
SENTINEL4 = "203.0.113.99"
SENTINEL6 = "2001:db8:113::99"
# A name with addresses of its own (neither a probe's nor the sentinel): a walled garden to put
# in front of a phone not yet accepted, without opening the sentinel that every other name gets.
GARDEN_HOST = "garden.example"
GARDEN4 = "203.0.113.44"
GARDEN6 = "2001:db8:113::44"
# What Microsoft publishes for its NCSI DNS check name (AAAA alongside the A of probes.py).
MSFT_NCSI_DNS_ADDRESS6 = "fd3e:4f5a:5b81::1"
# Where the fake internet sends a login trigger (the real ones redirect to a vendor's page).
LOGIN_TRIGGER_LOCATION = "http://www.example.com/"
TTL = 60

# Every host any probe (HTTP or HTTPS) uses: these resolve to the web server.
ALL_PROBE_HOSTS: tuple[str, ...] = tuple(sorted({p.host for p in PROBES}))

# -- DNS wire format (RFC 1035), just what an authoritative toy needs ----------------------------
TYPE_A, TYPE_AAAA, CLASS_IN = 1, 28, 1
RCODE_NOERROR, RCODE_FORMERR, RCODE_NOTIMP = 0, 1, 4
TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
              33: "SRV", 65: "HTTPS", 255: "ANY"}
_HEADER = struct.Struct("!HHHHHH")
_MAX_JUMPS = 16  # compression pointers followed before a name counts as malformed (loops)


class DnsFormatError(ValueError):
    """A query we cannot parse; `ident` and `flags` are set when the header was readable."""

    def __init__(self, message: str, ident: int | None = None, flags: int = 0) -> None:
        super().__init__(message)
        self.ident, self.flags = ident, flags


@dataclass(frozen=True)
class Query:
    """One parsed question. `question` is its raw bytes (name, type, class), echoed verbatim."""

    ident: int
    flags: int
    name: str          # lower case, no trailing dot ("" for the root)
    qtype: int
    qclass: int
    question: bytes

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at `offset` and the offset just after it (compression pointers followed)."""
    labels: list[str] = []
    end: int | None = None
    jumps = 0
    while True:
        if offset >= len(data):
            raise DnsFormatError("name runs past the packet")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise DnsFormatError("truncated compression pointer")
            jumps += 1
            if jumps > _MAX_JUMPS:
                raise DnsFormatError("compression pointer loop")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise DnsFormatError(f"bad label type {length:#x}")
        offset += 1
        if length == 0:
            break
        if offset + length > len(data):
            raise DnsFormatError("label runs past the packet")
        labels.append(data[offset:offset + length].decode("ascii", "replace").lower())
        offset += length
    name = ".".join(labels)
    if len(name) > 253:
        raise DnsFormatError("name longer than 253 characters")
    return name, end if end is not None else offset


def parse_query(data: bytes) -> Query:
    """Parse a query (one question). Raises DnsFormatError for anything else."""
    if len(data) < _HEADER.size:
        raise DnsFormatError("shorter than a DNS header")
    ident, flags, qdcount, _an, _ns, _ar = _HEADER.unpack_from(data)
    if flags & 0x8000:
        raise DnsFormatError("a response, not a query", ident, flags)
    if qdcount != 1:
        raise DnsFormatError(f"{qdcount} questions (want 1)", ident, flags)
    try:
        name, offset = _read_name(data, _HEADER.size)
    except DnsFormatError as exc:
        raise DnsFormatError(str(exc), ident, flags) from None
    if offset + 4 > len(data):
        raise DnsFormatError("question without type and class", ident, flags)
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    return Query(ident, flags, name, qtype, qclass, data[_HEADER.size:offset + 4])


def resolve(name: str, qtype: int) -> list[str]:
    """The addresses the fake internet answers for `name` (lower case) and type A or AAAA."""
    name = name.lower().rstrip(".")
    if qtype not in (TYPE_A, TYPE_AAAA):
        return []
    v4 = qtype == TYPE_A
    if name == MSFT_NCSI_DNS_NAME:
        return [MSFT_NCSI_DNS_ADDRESS if v4 else MSFT_NCSI_DNS_ADDRESS6]
    if name in ALL_PROBE_HOSTS:
        return [WEB4 if v4 else WEB6]
    if name == GARDEN_HOST:
        return [GARDEN4 if v4 else GARDEN6]
    return [SENTINEL4 if v4 else SENTINEL6]


def build_response(query: Query, addresses: Sequence[str], rcode: int = RCODE_NOERROR) -> bytes:
    """An authoritative answer to `query` with one A/AAAA record per address."""
    flags = 0x8000 | (query.opcode << 11) | 0x0400 | (query.flags & 0x0100) | rcode
    answers = b""
    for address in addresses:
        packed = ipaddress.ip_address(address).packed
        rtype = TYPE_A if len(packed) == 4 else TYPE_AAAA
        # 0xC00C: a pointer to the question's name, right after the header.
        answers += struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, TTL, len(packed)) + packed
    return _HEADER.pack(query.ident, flags, 1, len(addresses), 0, 0) + query.question + answers


def _error(ident: int, flags: int, rcode: int, question: bytes = b"") -> bytes:
    out_flags = 0x8000 | (flags & 0x7800) | (flags & 0x0100) | rcode
    return _HEADER.pack(ident, out_flags, 1 if question else 0, 0, 0, 0) + question


def dns_answer(data: bytes) -> tuple[bytes | None, Query | None]:
    """The reply to a packet (None: drop it) and the query it parsed to (None: malformed)."""
    try:
        query = parse_query(data)
    except DnsFormatError as exc:
        if exc.ident is None or exc.flags & 0x8000:
            return None, None  # no header, or a response: answering could loop
        return _error(exc.ident, exc.flags, RCODE_FORMERR), None
    if query.opcode != 0:
        return _error(query.ident, query.flags, RCODE_NOTIMP, query.question), query
    addresses = resolve(query.name, query.qtype) if query.qclass == CLASS_IN else []
    return build_response(query, addresses), query


# The name a log entry carries for a packet that did not parse.
MALFORMED = "<malformed>"


@dataclass(frozen=True)
class DnsLogEntry:
    transport: str   # "udp" or "tcp"
    client: str
    name: str        # MALFORMED for a packet that did not parse
    qtype: str
    answers: tuple[str, ...]


def parse_dns_log(text: str) -> list[DnsLogEntry]:
    """The queries a fake DNS log records (the lines `serve_dns` writes)."""
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[0] == "dns" and parts[5] == "->":
            entries.append(DnsLogEntry(parts[1], parts[2], parts[3], parts[4], tuple(parts[6:])))
    return entries


# -- HTTP ----------------------------------------------------------------------------------------
def page_for(host: str) -> bytes:
    """The body the fake internet serves for any URL of a host that is no probe."""
    return f"fake internet: {host}\n".encode()


def web_answer(host: str, path: str, *, https: bool = False) -> Answer:
    """What the fake internet answers for `GET http(s)://host/path` (path may carry a query)."""
    host = host.split(":", 1)[0].lower().rstrip(".") if not host.startswith("[") else host
    bare = path.split("?", 1)[0]
    for probe in PROBES:
        if probe.host == host and probe.path == bare and probe.https == https:
            if probe.login_trigger:
                return Answer(302, b"", "text/plain", (("Location", LOGIN_TRIGGER_LOCATION),))
            if https:
                return probe.online
    if not https:
        answer = online_answer(host, bare)
        if answer is not None:
            return answer
    return Answer(200, page_for(host), "text/plain; charset=utf-8")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    server_version = "fake-internet"
    sys_version = ""
    timeout = 30  # an idle keep-alive connection frees its thread after this

    def _answer(self, send_body: bool) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 1 << 20))
        host = self.headers.get("Host") or str(self.connection.getsockname()[0])
        https = isinstance(self.connection, ssl.SSLSocket)
        answer = web_answer(host, self.path, https=https)
        self.send_response(answer.status)
        if answer.content_type:
            self.send_header("Content-Type", answer.content_type)
        for key, value in answer.headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if send_body and answer.body:
            self.wfile.write(answer.body)
        sys.stderr.write(f"web {self.client_address[0]} {host} {self.path} {answer.status}\n")
        sys.stderr.flush()

    def do_GET(self) -> None:
        self._answer(True)

    def do_POST(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request from _answer instead of the default access log


class _WebServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: str, port: int, context: ssl.SSLContext | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._context = context
        super().__init__((address, port), _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # Not HTTPServer.server_bind: its getfqdn() sends reverse queries to our own DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])
        if self._context is not None:
            # The handshake runs in the request's thread (first read), never in accept().
            self.socket = self._context.wrap_socket(self.socket, server_side=True,
                                                    do_handshake_on_connect=False)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that resets or fails the handshake is the client's problem


def serve_web(binds: Sequence[str], port: int, tls_port: int | None = None,
              cert: Path | None = None, key: Path | None = None) -> list[threading.Thread]:
    """Listen on every address of `binds` (port, and tls_port with cert/key); return threads."""
    context = None
    if tls_port is not None and cert is not None and key is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
    servers = [_WebServer(a, port, None) for a in binds]
    if context is not None and tls_port is not None:
        servers += [_WebServer(a, tls_port, context) for a in binds]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    return threads


# -- DNS servers ---------------------------------------------------------------------------------
def _log_query(transport: str, client: str, query: Query | None, reply: bytes | None) -> None:
    if query is None:
        line = f"dns {transport} {client} {MALFORMED} - -> {'formerr' if reply else 'dropped'}"
    else:
        qtype = TYPE_NAMES.get(query.qtype, str(query.qtype))
        answers = " ".join(resolve(query.name, query.qtype)) if query.qclass == CLASS_IN else ""
        line = f"dns {transport} {client} {query.name or '.'} {qtype} -> {answers}".rstrip()
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _udp_loop(sock: socket.socket) -> None:
    while True:
        try:
            data, client = sock.recvfrom(4096)
        except OSError:
            continue
        try:
            reply, query = dns_answer(data)
            if reply is not None:
                sock.sendto(reply, client)
            _log_query("udp", client[0], query, reply)
        except Exception as exc:  # one bad packet must never stop the server
            sys.stderr.write(f"dns udp {client[0]} error {exc!r}\n")


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(10)
        client = self.client_address[0]
        try:
            while True:
                header = _recv_exact(sock, 2)
                if header is None:
                    return
                (length,) = struct.unpack("!H", header)
                data = _recv_exact(sock, length)
                if data is None:
                    return
                reply, query = dns_answer(data)
                _log_query("tcp", client, query, reply)
                if reply is None:
                    return
                sock.sendall(struct.pack("!H", len(reply)) + reply)
        except (OSError, ValueError):
            return


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str, port: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        super().__init__((address, port), _TcpHandler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def serve_dns(binds: Sequence[str], port: int = 53) -> list[threading.Thread]:
    """Answer DNS over UDP and TCP on every address of `binds`; return the serving threads."""
    threads = []
    for address in binds:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        udp = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        udp.bind((address, port))
        tcp = _TcpServer(address, port)
        threads += [threading.Thread(target=_udp_loop, args=(udp,), daemon=True),
                    threading.Thread(target=tcp.serve_forever, daemon=True)]
    for thread in threads:
        thread.start()
    return threads


# -- command line --------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.harness.fakeinternet")
    sub = parser.add_subparsers(dest="server", required=True)
    dns = sub.add_parser("dns", help="the authoritative DNS of the fake internet")
    web = sub.add_parser("web", help="the web server of the fake internet")
    for p in (dns, web):
        p.add_argument("--bind", action="append", required=True, help="an address (repeatable)")
        p.add_argument("--ready", type=Path, help="file to create once every socket listens")
    dns.add_argument("--port", type=int, default=53)
    web.add_argument("--port", type=int, default=80)
    web.add_argument("--tls-port", type=int)
    web.add_argument("--cert", type=Path)
    web.add_argument("--key", type=Path)
    args = parser.parse_args(argv)
    if args.server == "dns":
        threads = serve_dns(args.bind, args.port)
    else:
        threads = serve_web(args.bind, args.port, args.tls_port, args.cert, args.key)
    if args.ready:
        args.ready.write_text("ready\n")
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
