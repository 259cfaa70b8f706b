"""`appliance devices ...`: the inventory service and what it knows."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click

from appliance.command import Output, json_option, pass_config, stop_on_signal
from appliance.config import Config


@click.group("devices")
def devices() -> None:
    """The device inventory: DHCP fingerprints, mDNS services, displays and printers."""


def _db(cfg: Config) -> Any:
    from appliance.devices import schema
    from appliance.store import migrate, open_db

    db = open_db(cfg.database_path)
    migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    return db


@devices.command("serve")
@pass_config
def serve(cfg: Config) -> None:
    """Run the inventory service: read the DHCP hook's spool, browse and answer mDNS on
    [devices] interface, expire devices unseen for [devices] retention_days."""
    from appliance.devices.service import DevicesService

    stopped = stop_on_signal()
    service = DevicesService(cfg, _db(cfg))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def watch() -> None:
            while not stopped.is_set():
                await asyncio.sleep(0.2)
            stop.set()

        watcher = loop.create_task(watch())
        try:
            await service.run(stop)
        finally:
            watcher.cancel()

    asyncio.run(main())


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    s = max(0, int(time.time() - ts))
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def _text_list(data: dict[str, Any]) -> str:
    rows = data["devices"]
    c = data["counts"]
    lines = [f"{c['now']} devices here now ({c['known']} known), {c['new_today']} new MACs today, "
             f"{c['displays']} displays, {c['printers']} printers",
             "by kind: " + (", ".join(f"{k} {n}" for k, n in c["by_kind"].items()) or "-"),
             "by OS:   " + (", ".join(f"{k} {n}" for k, n in c["by_os"].items()) or "-"), ""]
    if rows:
        lines.append(f"{'MAC':17}  {'IP':15}  {'KIND':10}  {'OS':9}  {'MODEL':20}  {'SEEN':>5}  NAME")
    for d in rows:
        mac = d["mac"] + ("*" if d["randomized"] else " ")
        lines.append(f"{mac:18} {d['ip'] or '-':15}  {d['kind']:10}  {d['os']:9}  "
                     f"{(d['model'] or '-')[:20]:20}  {_ago(d['last_seen']):>5}  "
                     f"{(d['hostname'] or '-')[:40]}")
    if rows:
        lines.append("(* private, randomized MAC)")
    return "\n".join(lines)


@devices.command("list")
@click.option("--all", "everything", is_flag=True, help="Also devices not here now.")
@json_option
@pass_config
def list_(cfg: Config, out: Output, everything: bool) -> None:
    """List the devices here now (or --all known), with counts by kind and OS family."""
    from appliance.devices import inventory

    db = _db(cfg)
    data = {"counts": inventory.counts(db),
            "devices": inventory.devices(db, present_only=not everything)}
    out.emit(data, _text_list)


@devices.command("show")
@click.argument("mac")
@json_option
@pass_config
def show(cfg: Config, out: Output, mac: str) -> None:
    """Everything known about one MAC: lease, fingerprint, evidence, services."""
    from appliance.devices import inventory

    found = inventory.device(_db(cfg), mac)
    if found is None:
        raise click.ClickException(f"no device {mac!r} in the inventory")

    def text(d: dict[str, Any]) -> str:
        lines = [f"{k:18} {d[k]}" for k in ("mac", "randomized", "ip", "hostname", "vendor",
                                            "kind", "os", "os_version", "model", "score",
                                            "group", "present", "requested_options",
                                            "vendor_class")]
        lines += [f"{'first seen':18} {time.ctime(d['first_seen'])}",
                  f"{'last seen':18} {time.ctime(d['last_seen'])}", "evidence:"]
        lines += [f"  - {e}" for e in d["evidence"]] or ["  -"]
        lines.append("services:")
        lines += [f"  {s['type']}  {s['name']}  {s['address'] or '-'}:{s['port']}  {s['txt']}"
                  for s in d["services"]] or ["  -"]
        return "\n".join(lines)

    out.emit(found, text)


@devices.command("group")
@click.argument("mac")
@click.argument("group")
@pass_config
def group(cfg: Config, mac: str, group: str) -> None:
    """Put a device in a group (e.g. staff): devices of [devices] share_to groups are answered
    with the shared displays and printers. Use "" for no group."""
    from appliance.devices import inventory

    if not inventory.set_group(_db(cfg), mac.lower(), group):
        raise click.ClickException(f"no device {mac!r} in the inventory")
    click.echo(f"{mac.lower()}: group {group or '(none)'}")


COMMANDS: tuple[click.Command, ...] = (devices,)
