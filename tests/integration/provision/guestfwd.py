"""QEMU's `guestfwd=...-cmd:` end of one guest connection: copies this process's stdin and
stdout to and from a TCP port on the host's loopback, until either side closes.

Run by QEMU once per connection the VM opens to a forwarded address (test_vm_boot.py), so the
VM reaches the test's console and broker and nothing else (user networking with restrict=on)."""

from __future__ import annotations

import os
import socket
import sys
import threading


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    upstream = socket.create_connection((host, port), timeout=10)
    upstream.settimeout(None)

    def to_upstream() -> None:
        while data := os.read(0, 65536):
            upstream.sendall(data)
        upstream.shutdown(socket.SHUT_WR)

    threading.Thread(target=to_upstream, daemon=True).start()
    while data := upstream.recv(65536):
        os.write(1, data)


if __name__ == "__main__":
    main()
