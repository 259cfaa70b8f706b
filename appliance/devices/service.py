"""`appliance devices serve`: the long-running inventory service, built from (Config, db).

It takes the DHCP hook's spool every `[devices] poll_interval` (committing each file's events
before deleting it), runs mDNS on the classroom interface (`mdns.Mdns`), and deletes devices
unseen for `retention_days` at start and every hour, and every `SHARE_EVERY` seconds asks the
network helper to open (and close) the firewall from `share_to` devices to shared services
(`sharing`; with `[devices] open_firewall`). The OUI table (aiooui, bundled with the
package, memory-mapped) is loaded once; nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import aiooui
import sqlite_utils

from appliance.config import Config
from appliance.devices import inventory, schema, sharing
from appliance.devices.events import parse_line
from appliance.devices.inventory import ServiceRecord
from appliance.devices.spool import Spool
from appliance.network.client import call
from appliance.store import migrate, transaction

log = logging.getLogger(__name__)
EXPIRE_EVERY = 3600.0
# How often the helper's openings are made to match the inventory (a staff laptop reaches a
# newly announced display within this).
SHARE_EVERY = 5.0
# Services whose address no lease or neighbour names yet, kept to retry after the next DHCP
# events (a service running when this one starts answers within ms; the spool's first file is
# read a second later). Bounded: the oldest goes.
MAX_PENDING = 256


def vendor_of(mac: str) -> str | None:
    """The OUI vendor of a MAC (None when unknown or the table is not loaded)."""
    return aiooui.get_vendor(mac) if aiooui.is_loaded() else None


def neighbour_mac(ip: str, table: Path = Path("/proc/net/arp")) -> str | None:
    """The MAC the kernel's neighbour table holds for `ip` (devices with a static address)."""
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) >= 4 and parts[0] == ip and parts[3] != "00:00:00:00:00:00":
            return parts[3].lower()
    return None


class DevicesService:
    def __init__(self, config: Config, db: sqlite_utils.Database) -> None:
        self.config = config
        self.section = config.devices
        self.db = db
        self.spool = Spool(self.section.spool_dir)
        self.events = 0
        self.bad_lines = 0
        self.unmatched_services = 0
        self.pending: dict[tuple[str, str], ServiceRecord] = {}
        self.openings = sharing.Openings(self._helper)

    def _helper(self, verb: str, args: dict[str, str]) -> object:
        return call(self.config.network.helper.socket, verb, args)

    def wanted_openings(self, now: float | None = None) -> dict[tuple[str, str], str]:
        """(share_to device, service device) -> ports, from the inventory now."""
        return sharing.wanted(self.db, self.section.share_to, self.section.share_types,
                              time.time() if now is None else now)

    # -- DHCP ----------------------------------------------------------------------------------
    def drain_spool(self, now: float | None = None) -> int:
        """Take the spool and apply every ready file's events; return how many were applied."""
        self.spool.take()
        applied = 0
        for path in self.spool.ready(now):
            for batch in self.spool.batches(path):
                with transaction(self.db):
                    for raw in batch:
                        event = parse_line(raw)
                        if event is None:
                            self.bad_lines += 1
                            continue
                        inventory.apply_dhcp(self.db, event, max_devices=self.section.max_devices,
                                             vendor=vendor_of)
                        applied += 1
            self.spool.done(path)
        self.events += applied
        if applied and self.pending:
            waiting, self.pending = self.pending, {}
            for record in waiting.values():
                self.on_service(record)
        return applied

    # -- mDNS ----------------------------------------------------------------------------------
    def mac_of(self, ip: str | None) -> str | None:
        if not ip:
            return None
        return inventory.mac_for_ip(self.db, ip) or neighbour_mac(ip)

    def on_service(self, record: ServiceRecord) -> None:
        mac = self.mac_of(record.address)
        if mac is None:
            key = (record.type, record.name)
            if key not in self.pending:
                self.unmatched_services += 1
            self.pending[key] = record
            while len(self.pending) > MAX_PENDING:
                del self.pending[next(iter(self.pending))]
            return
        inventory.apply_service(self.db, mac, record, max_devices=self.section.max_devices,
                                vendor=vendor_of)

    def on_removed(self, type_: str, name: str) -> None:
        self.pending.pop((type_, name), None)
        inventory.remove_service(self.db, type_, name)

    def may_see_shared(self, ip: str) -> bool:
        mac = self.mac_of(ip)
        if mac is None:
            return False
        row = self.db.execute("SELECT grp FROM device_inventory WHERE mac = ?", [mac]).fetchone()
        return bool(row) and row[0] in self.section.share_to

    # -- running -------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        migrate(self.db, schema.COMPONENT, schema.MIGRATIONS)
        self.section.spool_dir.mkdir(parents=True, exist_ok=True)
        await aiooui.async_load()
        mdns = None
        if self.section.mdns:
            from appliance.devices.mdns import Advert, Mdns

            name = self.section.hostname or self.config.appliance.id
            mdns = Mdns(self.section.interface,
                        Advert(name, self.config.appliance.id,
                               self.config.appliance.name or self.config.portal.title,
                               self.config.portal.port),
                        self.section.share_types, self.on_service, self.on_removed,
                        self.may_see_shared)
            await mdns.start()
        last_expiry = last_share = 0.0
        try:
            while not stop.is_set():
                if self.section.open_firewall and time.monotonic() - last_share > SHARE_EVERY:
                    # The helper's socket calls block: off the loop that answers mDNS (the
                    # database is read here, on the loop's thread).
                    await asyncio.to_thread(self.openings.sync, self.wanted_openings())
                    last_share = time.monotonic()
                if time.monotonic() - last_expiry > EXPIRE_EVERY:
                    gone = inventory.expire(self.db, self.section.retention_days)
                    if gone:
                        log.info("expired %d devices unseen for %d days", gone,
                                 self.section.retention_days)
                    last_expiry = time.monotonic()
                try:
                    self.drain_spool()
                except OSError as exc:
                    log.warning("spool %s: %s", self.section.spool_dir, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.section.poll_interval)
        finally:
            if mdns is not None:
                await mdns.close()
