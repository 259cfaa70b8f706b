"""The address files a classroom DNS server hands the helper, for the ruleset's address sets.

A documented place others write to (the filter, which answers the classroom's DNS when
`[filter] enabled`) and the helper reads from; pure but for `read()`:

    from appliance.network import dnssets
    dnssets.path(cfg, dnssets.DOH)       # <state_dir>/filter/doh-addresses
    dnssets.write(path, ["192.0.2.53"])  # atomically, one address a line
    dnssets.publish(cfg, path, [...])    # write, then have the helper load it now

- `doh-addresses`: addresses of DNS-over-HTTPS resolvers. The helper puts exactly these into
  `doh_v4`/`doh_v6`, whose port 443 (TCP and UDP) the forward chain rejects for every client.
- `walled-addresses`: addresses the walled-garden names (`[network] walled_garden`) resolved to.
  The helper adds them to `walled_v4`/`walled_v6` (dnsmasq's `nftset=` does the same while it
  answers DNS itself); they leave the set a day after they were last added.

The helper re-reads a file within a quarter of a second of its change, and at once at its verb
`dns-sets` (what `publish()` calls: a walled-garden address must be in its set before the phone
that asked connects to it); a line that is not an address is skipped.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from appliance.config import Config
from appliance.network.client import HelperError, call

DOH = "doh-addresses"
WALLED = "walled-addresses"


def path(cfg: Config, name: str) -> Path:
    """Where the file `name` (DOH or WALLED) lives: `<state_dir>/filter/<name>`."""
    return cfg.appliance.state_dir / "filter" / name


def parse(text: str) -> tuple[list[str], list[str]]:
    """(IPv4, IPv6) addresses of a file's text, canonical, sorted, without duplicates."""
    v4: set[str] = set()
    v6: set[str] = set()
    for line in text.splitlines():
        try:
            addr = ipaddress.ip_address(line.split("#", 1)[0].strip())
        except ValueError:
            continue
        (v4 if addr.version == 4 else v6).add(str(addr))
    return sorted(v4), sorted(v6)


def read(file: Path) -> tuple[list[str], list[str]]:
    """`parse()` of the file; no file is no addresses."""
    try:
        return parse(file.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return [], []


def write(file: Path, addresses: Iterable[str]) -> None:
    """The file, rewritten atomically (a reader sees the old or the new list), world-readable:
    the helper runs as the same user on a Pi but as root in the lab."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.")
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, "".join(f"{a}\n" for a in sorted(set(addresses))).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, file)


def publish(cfg: Config, file: Path, addresses: Iterable[str], timeout: float = 1.0) -> bool:
    """`write()`, then ask the helper to load the files now (verb `dns-sets`). False if the
    helper did not (down, or the caller is not allowed): it still reloads within a second."""
    write(file, addresses)
    try:
        call(cfg.network.helper.socket, "dns-sets", timeout=timeout)
    except HelperError:
        return False
    return True
