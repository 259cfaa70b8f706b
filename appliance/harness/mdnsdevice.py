"""A device on the classroom Wi-Fi that speaks mDNS (python-zeroconf), for tests and the lab.

    python -m appliance.harness.mdnsdevice announce --address IP --type _airplay._tcp \
        --name "Room 101" --port 7000 --txt model=AppleTV6,2 --ready FILE   # until killed
    python -m appliance.harness.mdnsdevice browse --address IP --type _airplay._tcp --seconds 5
    python -m appliance.harness.mdnsdevice flood --address IP --rate 10000 --seconds 10

`browse` prints the instance names it found as one JSON list. `flood` multicasts bogus
responses (random types, instances, huge TXT), `--rate` records a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path

from zeroconf import IPVersion, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf._dns import DNSPointer, DNSService, DNSText
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf


async def announce(args: argparse.Namespace) -> None:
    zc = AsyncZeroconf(interfaces=[args.address], ip_version=IPVersion.V4Only)
    type_ = f"{args.type}.local."
    props = dict(item.split("=", 1) for item in args.txt)
    info = ServiceInfo(type_, f"{args.name}.{type_}", addresses=[socket.inet_aton(args.address)],
                       port=args.port, properties=props, server=f"{args.host}.local.")
    await zc.async_register_service(info)
    if args.ready:
        Path(args.ready).write_text("ready\n")
    try:
        while True:
            await asyncio.sleep(3600)
    finally:
        await zc.async_close()


async def browse(args: argparse.Namespace) -> None:
    zc = AsyncZeroconf(interfaces=[args.address], ip_version=IPVersion.V4Only)
    found: set[str] = set()

    def handler(zeroconf: Zeroconf, service_type: str, name: str,
                state_change: ServiceStateChange) -> None:
        if state_change is not ServiceStateChange.Removed:
            found.add(name)

    browser = AsyncServiceBrowser(zc.zeroconf, f"{args.type}.local.", handlers=[handler])
    await asyncio.sleep(args.seconds)
    await browser.async_cancel()
    await zc.async_close()
    print(json.dumps(sorted(found)), flush=True)


def flood(args: argparse.Namespace) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(args.address))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    sock.bind((args.address, 5353))
    per_packet = 20
    end = time.monotonic() + args.seconds
    sent = 0
    while time.monotonic() < end:
        started = time.monotonic()
        for _ in range(max(1, args.rate // per_packet // 10)):
            out = DNSOutgoing(0x8400, multicast=True)
            for _ in range(per_packet // 4):
                tag = os.urandom(6).hex()
                type_ = f"_x{tag[:6]}._tcp.local."
                name = f"{'junk' * 10}{tag}.{type_}"
                out.add_answer_at_time(DNSPointer("_services._dns-sd._udp.local.", 12, 1, 4500,
                                                  type_), 0)
                out.add_answer_at_time(DNSPointer(type_, 12, 1, 4500, name), 0)
                out.add_answer_at_time(DNSService(name, 33, 0x8001, 120, 0, 0, 9,
                                                  f"h{tag}.local."), 0)
                out.add_answer_at_time(DNSText(name, 16, 0x8001, 4500,
                                               b"\x40" + b"\x01<script>" * 6 + os.urandom(3)), 0)
            for packet in out.packets():
                sock.sendto(packet, ("224.0.0.251", 5353))
                sent += per_packet
        time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
    print(json.dumps({"records": sent}), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="an mDNS device for the virtual classroom")
    sub = p.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("announce")
    a.add_argument("--address", required=True)
    a.add_argument("--type", required=True)
    a.add_argument("--name", required=True)
    a.add_argument("--host", default="device")
    a.add_argument("--port", type=int, default=9)
    a.add_argument("--txt", action="append", default=[])
    a.add_argument("--ready", default="")
    b = sub.add_parser("browse")
    b.add_argument("--address", required=True)
    b.add_argument("--type", required=True)
    b.add_argument("--seconds", type=float, default=5)
    f = sub.add_parser("flood")
    f.add_argument("--address", required=True)
    f.add_argument("--rate", type=int, default=10000)
    f.add_argument("--seconds", type=float, default=10)
    args = p.parse_args(argv)
    if args.mode == "announce":
        asyncio.run(announce(args))
    elif args.mode == "browse":
        asyncio.run(browse(args))
    else:
        flood(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
