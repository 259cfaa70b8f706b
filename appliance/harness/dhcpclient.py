"""A DHCPv4 client that sends exactly the fingerprint it is given (option 55 in its order,
vendor class, host name): what busybox udhcpc cannot, since it sorts option 55.

    python -m appliance.harness.dhcpclient --iface wlan0 --mac 02:ce:00:00:00:01 \
        --prl 1,3,6,15,26,28,51,58,59,43,114,108 --vendor-class android-dhcp-14 [--configure]

Run inside a phone's namespace. It sends DISCOVER, takes the first OFFER, sends REQUEST and
prints the ACK's lease as one JSON line (`{"ip": ..., "server": ..., "lease": ...}`); with
`--configure` it also puts the address on the interface. `--count N` takes N leases for N MACs
counted up from `--mac` (the bench: one namespace, many devices; replies are broadcast, since
the interface has none of those MACs). Packets are built and parsed by pure functions.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import time

MAGIC = b"\x63\x82\x53\x63"
DISCOVER, OFFER, REQUEST, ACK, NAK = 1, 2, 3, 5, 6


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def build(kind: int, xid: int, mac: str, *, prl: tuple[int, ...] = (), vendor_class: str = "",
          hostname: str = "", requested: str = "", server: str = "") -> bytes:
    """A BOOTREQUEST with the broadcast flag and options in this order: 53, 61, 50, 54, 12,
    60, 55, end (option 55 exactly as given)."""
    chaddr = mac_bytes(mac).ljust(16, b"\0")
    head = struct.pack("!BBBBIHH4s4s4s4s16s", 1, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4, b"\0" * 4,
                       b"\0" * 4, b"\0" * 4, chaddr)
    opts = bytes([53, 1, kind]) + bytes([61, 7, 1]) + mac_bytes(mac)
    if requested:
        opts += bytes([50, 4]) + socket.inet_aton(requested)
    if server:
        opts += bytes([54, 4]) + socket.inet_aton(server)
    for code, value in ((12, hostname.encode()), (60, vendor_class.encode()), (55, bytes(prl))):
        if value:
            opts += bytes([code, len(value)]) + value
    return head + b"\0" * 192 + MAGIC + opts + b"\xff"


def parse(packet: bytes) -> tuple[int, str, dict[int, bytes]] | None:
    """(xid, yiaddr, options) of a BOOTREPLY, or None."""
    if len(packet) < 240 or packet[0] != 2 or packet[236:240] != MAGIC:
        return None
    xid = struct.unpack("!I", packet[4:8])[0]
    yiaddr = socket.inet_ntoa(packet[16:20])
    options: dict[int, bytes] = {}
    i = 240
    while i < len(packet):
        code = packet[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(packet):
            break
        length = packet[i + 1]
        options[code] = packet[i + 2:i + 2 + length]
        i += 2 + length
    return xid, yiaddr, options


def _socket(iface: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    sock.bind(("0.0.0.0", 68))  # noqa: S104 - a DHCP client has no address yet
    return sock


def _wait(sock: socket.socket, xid: int, kinds: tuple[int, ...], timeout: float
          ) -> tuple[str, dict[int, bytes]] | None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            return None
        got = parse(data)
        if got and got[0] == xid and got[2].get(53, b"\0")[0] in kinds:
            return got[1], got[2]
    return None


def lease(sock: socket.socket, mac: str, *, prl: tuple[int, ...], vendor_class: str,
          hostname: str, timeout: float = 5.0) -> dict[str, object]:
    """DISCOVER, OFFER, REQUEST, ACK for `mac`; the lease, or ValueError naming the step."""
    xid = int.from_bytes(os.urandom(4), "big")
    for _ in range(3):
        sock.sendto(build(DISCOVER, xid, mac, prl=prl, vendor_class=vendor_class,
                          hostname=hostname), ("255.255.255.255", 67))
        offer = _wait(sock, xid, (OFFER,), timeout / 3)
        if offer:
            break
    else:
        raise ValueError(f"{mac}: no OFFER")
    ip, options = offer
    server = socket.inet_ntoa(options[54])
    sock.sendto(build(REQUEST, xid, mac, requested=ip, server=server, prl=prl,
                      vendor_class=vendor_class, hostname=hostname), ("255.255.255.255", 67))
    ack = _wait(sock, xid, (ACK, NAK), timeout)
    if ack is None or ack[1][53][0] != ACK:
        raise ValueError(f"{mac}: no ACK")
    seconds = struct.unpack("!I", ack[1][51])[0] if 51 in ack[1] else None
    return {"mac": mac, "ip": ack[0], "server": server, "lease": seconds}


def _nth_mac(mac: str, n: int) -> str:
    value = int(mac.replace(":", ""), 16) + n
    raw = value.to_bytes(6, "big").hex()
    return ":".join(raw[i:i + 2] for i in range(0, 12, 2))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--iface", required=True)
    p.add_argument("--mac", required=True)
    p.add_argument("--prl", default="1,3,6")
    p.add_argument("--vendor-class", default="")
    p.add_argument("--hostname", default="")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=6.0)
    p.add_argument("--configure", action="store_true")
    args = p.parse_args(argv)
    prl = tuple(int(x) for x in args.prl.split(",") if x)
    sock = _socket(args.iface)
    failed = 0
    for n in range(args.count):
        try:
            got = lease(sock, _nth_mac(args.mac.lower(), n), prl=prl, vendor_class=args.vendor_class,
                        hostname=args.hostname, timeout=args.timeout)
        except ValueError as exc:
            print(json.dumps({"error": str(exc)}), flush=True)
            failed += 1
            continue
        print(json.dumps(got), flush=True)
        if args.configure:
            subprocess.run(["ip", "addr", "replace", f"{got['ip']}/24", "dev", args.iface],
                           check=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
