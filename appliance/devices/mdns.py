"""mDNS on the classroom interface (python-zeroconf): browse everything, advertise the portal,
and answer allowed groups with the shared services across client isolation.

The Pi is the classroom's one mDNS responder (no avahi beside it). `Mdns`:

- binds python-zeroconf to the first IPv4 address of `[devices] interface` only;
- registers `<hostname>._http._tcp.local.` (the portal, port `[portal] port`, server
  `<hostname>.local.` so that name answers too) and `<hostname>._classroom-edge._tcp.local.`
  whose TXT carries the appliance id and software version;
- keeps a browser on `_services._dns-sd._udp.local.` and starts one per service type it
  reports (at most MAX_TYPES), resolves each instance (at most MAX_PENDING waiting) and hands a
  `ServiceRecord` to `on_service`, or the goodbye to `on_removed`;
- bounds python-zeroconf's cache (MAX_CACHE_RECORDS): a flood of bogus records evicts the
  oldest non-shared records instead of growing memory;
- runs the `Gateway`: its own socket on 5353 that answers queries from devices whose group is
  in `[devices] share_to` for the `share_types`, by unicast to the asking device, with the
  records zeroconf cached. Clients are isolated from each other, so a display's announcements
  reach the Pi only, and only the Pi's unicast answer tells a staff laptop about it.

All queries we send are QM (multicast answers), so no unicast reply is split between
zeroconf's socket and the gateway's on the shared port.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from zeroconf import (
    DNSQuestionType,
    IPVersion,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
    current_time_millis,
)

# The packet classes are importable from `zeroconf` but not re-exported for type checkers; the
# modules they live in are the ones Home Assistant's mDNS tooling imports too.
from zeroconf._dns import DNSPointer, DNSQuestion, DNSRecord
from zeroconf._protocol.incoming import DNSIncoming
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from appliance import __version__
from appliance.devices.inventory import ServiceRecord

log = logging.getLogger(__name__)

META = "_services._dns-sd._udp.local."
OWN_TYPE = "_classroom-edge._tcp.local."
MDNS_ADDR = "224.0.0.251"
MDNS_PORT = 5353
MAX_TYPES = 64
MAX_PENDING = 256
MAX_CACHE_RECORDS = 4000
GUARD_SECONDS = 0.1
# zeroconf's browsers keep a refresh query scheduled for every pointer they ever saw, even one
# we evicted from the cache; a browser that lost pointers to eviction is replaced (which drops
# its schedule) at most this often.
RECYCLE_SECONDS = 5.0
RESOLVE_MS = 3000
TYPE_PTR, TYPE_TXT, TYPE_SRV, TYPE_A, TYPE_ANY = 12, 16, 33, 1, 255
CLASS_IN = 1
# A DNS response we send stays in one datagram of a common MTU.
MAX_ANSWER_BYTES = 1400


class MdnsError(Exception):
    """mDNS cannot start (the interface has no IPv4 address); the message says which."""


SIOCGIFADDR = 0x8915


def interface_address(name: str) -> str:
    """The (first) IPv4 address of interface `name`, or MdnsError. An ioctl on an AF_INET
    socket, not netlink: the systemd unit allows only AF_INET, AF_INET6 and AF_UNIX."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            answer = fcntl.ioctl(sock.fileno(), SIOCGIFADDR,
                                 struct.pack("256s", name.encode()[:15]))
        except OSError:
            raise MdnsError(f"[devices] interface {name!r} has no IPv4 address (is it up?)") from None
    return socket.inet_ntoa(answer[20:24])


def type_name(short: str) -> str:
    """`_ipp._tcp` -> `_ipp._tcp.local.`"""
    return short if short.endswith(".local.") else f"{short}.local."


@dataclass(frozen=True)
class Advert:
    """What the Pi announces about itself."""

    hostname: str
    appliance_id: str
    title: str
    portal_port: int


class Mdns:
    def __init__(self, interface: str, advert: Advert | None, share_types: tuple[str, ...],
                 on_service: Callable[[ServiceRecord], None],
                 on_removed: Callable[[str, str], None],
                 may_see_shared: Callable[[str], bool]) -> None:
        self.interface = interface
        self.advert = advert
        self.share_types = tuple(type_name(t) for t in share_types)
        self.on_service = on_service
        self.on_removed = on_removed
        self.may_see_shared = may_see_shared
        self.address = ""
        self.aiozc: AsyncZeroconf | None = None
        self.browsers: dict[str, AsyncServiceBrowser] = {}
        self.pending: asyncio.Queue[tuple[str, str]] = asyncio.Queue(MAX_PENDING)
        self.queued: set[tuple[str, str]] = set()
        self.tasks: list[asyncio.Task[None]] = []
        self.gateway: Gateway | None = None
        self.dropped = 0

    @property
    def zc(self) -> Zeroconf:
        assert self.aiozc is not None
        return self.aiozc.zeroconf

    async def start(self) -> None:
        self.address = interface_address(self.interface)
        self.aiozc = AsyncZeroconf(interfaces=[self.address], ip_version=IPVersion.V4Only)
        if self.advert is not None:
            await self._advertise(self.advert)
        self.browsers[META] = self._new_browser(META)
        for t in self.share_types:  # browse shared types even before anything lists them
            self._browse(t)
        self.tasks.append(asyncio.create_task(self._resolver()))
        self.tasks.append(asyncio.create_task(self._guard_cache()))
        self.gateway = Gateway(self.zc, self.address, self.share_types, self.may_see_shared)
        await self.gateway.start()
        log.info("mDNS on %s (%s)", self.interface, self.address)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.gateway is not None:
            self.gateway.close()
        for browser in self.browsers.values():
            await browser.async_cancel()
        if self.aiozc is not None:
            await self.aiozc.async_unregister_all_services()
            await self.aiozc.async_close()

    async def _advertise(self, a: Advert) -> None:
        server = f"{a.hostname}.local."
        address = socket.inet_aton(self.address)
        assert self.aiozc is not None
        for type_, port, props in (
            ("_http._tcp.local.", a.portal_port, {"path": "/"}),
            (OWN_TYPE, a.portal_port, {"id": a.appliance_id, "version": __version__,
                                       "title": a.title[:100]}),
        ):
            info = ServiceInfo(type_, f"{a.hostname}.{type_}", addresses=[address], port=port,
                               properties=props, server=server)
            await self.aiozc.async_register_service(info, allow_name_change=True)

    # -- browsing ------------------------------------------------------------------------------
    def _on_type(self, zeroconf: Zeroconf, service_type: str, name: str,
                 state_change: ServiceStateChange) -> None:
        # For the meta browser each "service" is a type such as `_airplay._tcp.local.`.
        if state_change is ServiceStateChange.Added:
            self._browse(name)

    def _browse(self, type_: str) -> None:
        if type_ in self.browsers or not type_.endswith(("._tcp.local.", "._udp.local.")):
            return
        if len(self.browsers) > MAX_TYPES:
            self.dropped += 1
            return
        self.browsers[type_] = self._new_browser(type_)

    def _new_browser(self, type_: str) -> AsyncServiceBrowser:
        handler = self._on_type if type_ == META else self._on_service
        return AsyncServiceBrowser(self.zc, type_, handlers=[handler],
                                   question_type=DNSQuestionType.QM)

    async def _recycle_browsers(self, types: set[str]) -> None:
        """Replace the browsers of `types` (which lost pointers to eviction) with fresh ones,
        and drop those of types no device announces any more, freeing MAX_TYPES slots that a
        flood of made-up types took."""
        for type_ in [t for t in self.browsers if t.lower() in types]:
            await self.browsers.pop(type_).async_cancel()
            keep = type_ == META or type_ in self.share_types or \
                bool(self.zc.cache.async_all_by_details(type_, TYPE_PTR, CLASS_IN))
            if keep:
                self.browsers[type_] = self._new_browser(type_)

    def _on_service(self, zeroconf: Zeroconf, service_type: str, name: str,
                    state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            self.on_removed(service_type, name)
            return
        key = (service_type, name)
        if key in self.queued:
            return
        try:
            self.pending.put_nowait(key)
            self.queued.add(key)
        except asyncio.QueueFull:
            self.dropped += 1  # a flood: this instance is resolved when it is announced again

    async def _resolver(self) -> None:
        while True:
            type_, name = await self.pending.get()
            try:
                await self._resolve(type_, name)
            except Exception:
                log.exception("resolving %r failed", name[:100])
            finally:
                self.queued.discard((type_, name))

    async def _resolve(self, type_: str, name: str) -> None:
        info = AsyncServiceInfo(type_, name)
        if not await info.async_request(self.zc, RESOLVE_MS, question_type=DNSQuestionType.QM):
            return
        addresses = info.parsed_addresses(IPVersion.V4Only)
        try:
            txt = info.decoded_properties
        except Exception:  # garbage TXT that does not decode: keep the service, not its TXT
            txt = {}
        self.on_service(ServiceRecord(type=type_, name=name, server=info.server, port=info.port,
                                      address=addresses[0] if addresses else None, txt=txt))

    async def _guard_cache(self) -> None:
        stale: set[str] = set()
        last_recycle = 0.0
        while True:
            # Often enough that a flood at line rate (~10k records/s) adds at most a quarter of
            # the limit between two passes; a pass over a few thousand records costs ~1 ms.
            await asyncio.sleep(GUARD_SECONDS)
            victims = prune_cache(self.zc, self.share_types, MAX_CACHE_RECORDS)
            stale.update(r.name.lower() for r in victims if r.type == TYPE_PTR)
            if stale and time.monotonic() - last_recycle >= RECYCLE_SECONDS:
                await self._recycle_browsers(stale)
                stale.clear()
                last_recycle = time.monotonic()


def prune_cache(zc: Zeroconf, keep_types: tuple[str, ...], limit: int) -> list[DNSRecord]:
    """Evict the oldest records not of `keep_types` until the cache holds at most limit/2
    records, once it holds more than `limit`; return the evicted records."""
    cache = zc.cache
    records = [r for entries in list(cache.cache.values()) for r in entries]
    if len(records) <= limit:
        return []
    keep = tuple(t.lower() for t in keep_types)
    victims = sorted((r for r in records if not r.name.lower().endswith(keep)),
                     key=lambda r: r.created)[: len(records) - limit // 2]
    cache.async_remove_records(victims)
    log.warning("mDNS cache held %d records; evicted %d (a flood?)", len(records), len(victims))
    return victims


class Gateway(asyncio.DatagramProtocol):
    """Answers mDNS queries for the shared service types from allowed devices only, by unicast,
    from zeroconf's cache (see the module docstring)."""

    def __init__(self, zc: Zeroconf, address: str, share_types: tuple[str, ...],
                 may_see_shared: Callable[[str], bool]) -> None:
        self.zc = zc
        self.address = address
        self.share_types = tuple(t.lower() for t in share_types)
        self.may_see_shared = may_see_shared
        self.transport: asyncio.DatagramTransport | None = None
        self.answered = 0

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("", MDNS_PORT))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                        socket.inet_aton(MDNS_ADDR) + socket.inet_aton(self.address))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.address))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, struct.pack("B", 0))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, sock=sock)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str | bytes | bytearray, int]) -> None:
        host, port = str(addr[0]), addr[1]
        if host == self.address or len(data) > 9000:
            return
        try:
            msg = DNSIncoming(data, (host, port))
        except Exception:
            return
        if not msg.valid or not msg.is_query():
            return
        wanted = [q for q in msg.questions if self._shared(q.name)]
        if not wanted or not self.may_see_shared(host):
            return
        packet = self.answer(wanted, msg.id if port != MDNS_PORT else 0)
        if packet is not None and self.transport is not None:
            self.transport.sendto(packet, (host, port))
            self.answered += 1

    def _shared(self, name: str) -> bool:
        lower = name.lower()
        return lower == META or lower.endswith(self.share_types)

    def answer(self, questions: list[DNSQuestion], query_id: int) -> bytes | None:
        """A response with the cached records answering `questions` (PTRs of shared types,
        their SRV/TXT and the hosts' addresses), or None when the cache has none."""
        out = DNSOutgoing(0x8400, multicast=False, id_=query_id)
        cache = self.zc.cache
        added: set[DNSRecord] = set()

        def add(record: DNSRecord, additional: bool = False) -> None:
            if record in added:
                return
            added.add(record)
            if additional:
                out.add_additional_answer(record)
            else:
                out.add_answer_at_time(record, 0)

        now = current_time_millis()
        for q in questions:
            name = q.name.lower()
            if name == META:
                for t in self.share_types:
                    if cache.entries_with_name(t):
                        add(DNSPointer(META, TYPE_PTR, CLASS_IN, 4500, t))
                continue
            for record in cache.entries_with_name(name):
                if record.is_expired(now):
                    continue
                add(record)
                alias = getattr(record, "alias", None)
                for extra in cache.entries_with_name(alias) if alias else ():
                    add(extra, additional=True)
                    server = getattr(extra, "server", None)
                    for address in cache.entries_with_name(server) if server else ():
                        if address.type == TYPE_A:
                            add(address, additional=True)
                server = getattr(record, "server", None)
                for address in cache.entries_with_name(server) if server else ():
                    if address.type == TYPE_A:
                        add(address, additional=True)
        if not added:
            return None
        packets = out.packets()
        return packets[0] if packets and len(packets[0]) <= 9000 else None
