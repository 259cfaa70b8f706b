"""The privileged helper (`appliance network helper`): the only process that changes the
session sets, flushes conntrack, reads hostapd's station list and reloads the classroom DNS.

It runs with CAP_NET_ADMIN only (systemd/appliance-network-helper.service), listens on
`[network.helper] socket`, and for every connection: reads the caller's uid and pid with
SO_PEERCRED, its systemd unit from /proc/<pid>/cgroup, parses the request (`verbs.parse`),
checks the verb's allowlist, and only then acts. A refusal is answered and logged once per
caller and reason. A client's MAC is always looked up here (neighbour table, leases), never
taken from the request.

A background loop every `TICK` seconds: deletes expired sessions from the database; puts back
into the kernel's sets any session missing there (after a start, a reboot, a ruleset reload);
adds new addresses (IPv6 privacy addresses) of accepted MACs; and switches the local answers
between online and offline when the uplink's carrier changes (then SIGHUPs dnsmasq).

When the filter answers the classroom's DNS (`[filter] enabled`), a second loop every
`WATCH_TICK` seconds loads the filter's address files (`dnssets`: DoH resolvers, walled garden)
into their sets when they change, and checks the filter's health once a second (a DNS query to
its port): after `HEALTH_FAILURES` unanswered checks in a row it points the port-53 redirect at
the baseline unbound, and back when the filter answers again. The verb `dns-fallback on` holds
the baseline until `dns-fallback off` (the filter's unit calls them at once: ExecStopPost,
ExecStartPost; an admin may too); while held, the health check does not switch back.

`usb-mount DEVICE` (the only use of CAP_SYS_ADMIN) checks the device (`usb`: allowlisted block
device, not mounted, not the root disk), mounts it with the first of `usb.FILESYSTEMS` that takes
it, read-only, nosuid, nodev, noexec, nosymfollow at `<socket folder>/usb` in the helper's own
mount namespace (systemd's PrivateMounts=), and answers with an O_RDONLY|O_DIRECTORY fd of the mount's root
attached (SCM_RIGHTS): the caller reads the drive as /proc/self/fd/N. That connection stays
open; the drive is unmounted (lazily, MNT_DETACH) when the caller sends another line (answered),
hangs up, or anyone allowed calls `usb-unmount`; also when the helper stops, and a leftover is
cleared when it starts. One drive at a time.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import signal
import socket
import socketserver
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.network import dnssets, leases, nft, render, sessions, usb, verbs
from appliance.network.answers import uplink_online
from appliance.network.verbs import Caller, Refused, Request

log = logging.getLogger("appliance.network.helper")
TICK = 2.0
WATCH_TICK = 0.25
HEALTH_EVERY = 1.0
HEALTH_TIMEOUT = 0.5
HEALTH_FAILURES = 2
# At most this many addresses a set takes from one file (a runaway file cannot fill the kernel).
MAX_SET_ADDRESSES = 20000
USB_VERBS = ("usb-mount", "usb-unmount")


def ensure_proxy_arp(interface: str, proc_sys: Path = Path("/proc/sys/net/ipv4/conf")) -> None:
    """Isolated clients reach each other only through the Pi: it answers their ARP for each
    other with its own MAC (proxy_arp_pvlan, RFC 3069) and must not tell them, by ICMP
    redirect, to go direct (they cannot). `apply` sets both; this repeats it (CAP_NET_ADMIN
    may write a network namespace's sysctls) so an opening works after a manual change too."""
    for key, value in (("proxy_arp_pvlan", "1"), ("send_redirects", "0")):
        try:
            path = proc_sys / interface / key
            if path.read_text().strip() != value:
                path.write_text(value)
        except OSError as exc:
            log.warning("could not set %s on %s: %s", key, interface, exc)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """temp file + fsync + rename: a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def health_query(name: str, ident: int) -> bytes:
    """A DNS query for `name` (type A, RD), built by hand: the network does not need the
    filter's wire module to ask whether something answers on a port."""
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.rstrip(".").split(".") if p)
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", 1, 1)


def dns_answers(host: str, port: int, name: str, timeout: float = HEALTH_TIMEOUT) -> bool:
    """Whether a DNS server on host:port answers a query for `name` (any answer counts)."""
    ident = int.from_bytes(os.urandom(2), "big")
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(health_query(name, ident), (host, port))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = sock.recv(4096)
                if len(data) >= 12 and int.from_bytes(data[:2], "big") == ident and data[2] & 0x80:
                    return True
        except OSError:
            return False
    return False


def hostapd_stations(ctrl_path: Path, timeout: float = 2.0) -> list[str]:
    """MACs of the stations hostapd has associated, via its control socket (STA-FIRST/NEXT).
    Raises OSError when hostapd does not answer within `timeout`."""
    found: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        # hostapd replies to the address it hears from. An abstract one (Linux autobind): a path
        # in our /tmp would be in the helper's PrivateTmp, out of hostapd's sight, and a file
        # hostapd (not root, not our user) may not write to.
        sock.bind("")
        sock.connect(str(ctrl_path))
        command = "STA-FIRST"
        while len(found) < 4096:
            sock.send(command.encode())
            reply = sock.recv(65536).decode(errors="replace")
            mac = reply.split("\n", 1)[0].strip().lower()
            if not mac or reply.startswith("FAIL"):
                break
            found.append(mac)
            command = f"STA-NEXT {mac}"
    return found


@dataclass(frozen=True)
class Drive:
    """The USB drive the helper has mounted: `serial` tells this mount from a later one, `fd`
    (the mount's root) is sent once and closed by the handler."""

    serial: int
    device: str
    filesystem: str
    pid: int
    fd: int


class Helper:
    """The verbs, carried out. Built from the configuration; `answer()` is the whole protocol
    (`handle()` for every verb but usb-mount, whose answer carries an fd)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.net = cfg.network
        self.dir = render.render_dir(cfg)
        self.db = sessions.open_sessions_db(cfg.database_path)
        self.lock = threading.Lock()
        self.logged: set[tuple[int, str | None, str]] = set()
        self.online: bool | None = None
        self.ports = render.filter_ports(cfg)
        if self.ports is not None and not ipaddress.ip_address(self.ports.health_host).is_loopback:
            # The unit allows loopback IP only (IPAddressAllow=localhost): said once, at start.
            log.warning("the filter does not listen on loopback ([filter] listen): under its unit "
                        "the helper's health check of %s fails and the classroom's DNS stays on "
                        "the baseline; add 127.0.0.1 to [filter] listen", self.ports.health_host)
        # The redirect's state as the helper last set or found it (None: not known yet).
        self.fallback: bool | None = None
        self.held = False  # `dns-fallback on` was asked for: stays until `dns-fallback off`
        self.failures = 0
        self.last_health = 0.0
        self.set_stamps: dict[str, float | None] = {}
        self.subnets = [ipaddress.ip_interface(self.net.ipv4).network]
        if self.net.ipv6:
            self.subnets.append(ipaddress.ip_interface(self.net.ipv6).network)
        self.usb_dir = self.net.helper.socket.parent / "usb"
        # Its own lock: mount(2) stuck on a failing stick must not hold up the portal's
        # session-accept behind `lock`.
        self.usb_lock = threading.Lock()
        self.drive: Drive | None = None
        self.drives = 0
        self._clear_leftover_mounts()

    # -- the protocol ---------------------------------------------------------------------------
    def handle(self, raw: bytes, caller: Caller) -> bytes:
        """The answer to one request line (a usb-mount is refused here: it needs `answer`,
        whose caller sends the drive's fd and holds the connection)."""
        data, drive = self.answer(raw, caller, fd_passing=False)
        assert drive is None
        return data

    def answer(self, raw: bytes, caller: Caller, *, fd_passing: bool = True) -> tuple[bytes, Drive | None]:
        """The answer line, and for a usb-mount the drive now mounted (its fd to send)."""
        try:
            request = verbs.parse(raw.strip())
            if not verbs.allowed(caller, request.verb, self.net.helper):
                raise Refused(f"caller may not call {request.verb}")
        except Refused as exc:
            self._log_once(caller, exc.reason)
            return verbs.error(exc.reason), None
        try:
            with self.usb_lock if request.verb in USB_VERBS else self.lock:
                if request.verb == "usb-mount":
                    if not fd_passing:
                        raise Refused("usb-mount needs a connection that can take an fd")
                    drive = self.usb_mount(request.args["device"], caller)
                    return verbs.ok({"device": drive.device, "filesystem": drive.filesystem,
                                     "serial": drive.serial}), drive
                return verbs.ok(self.dispatch(request)), None
        except Refused as exc:
            return verbs.error(exc.reason), None
        except (nft.NftError, OSError) as exc:
            log.error("%s failed: %s", request.verb, exc)
            return verbs.error(f"{request.verb} failed: {exc}"), None

    def _log_once(self, caller: Caller, reason: str) -> None:
        key = (caller.uid, caller.unit, reason)
        if key not in self.logged:
            self.logged.add(key)
            log.warning("refused uid %d (pid %d, unit %s): %s", caller.uid, caller.pid,
                        caller.unit or "-", reason)

    def dispatch(self, request: Request) -> Any:
        args = request.args
        if request.verb == "session-accept":
            return self.accept(args["ip"])
        if request.verb == "session-revoke":
            return self.revoke(args["mac"])
        if request.verb == "session-list":
            return self.list_sessions()
        if request.verb == "session-status":
            return self.status(args["ip"])
        if request.verb == "stations":
            return self.stations()
        if request.verb == "open-service":
            return self.open_service(args["from_mac"], args["to_mac"],
                                     verbs.parse_ports(request.verb, args["ports"]),
                                     int(args["seconds"]))
        if request.verb == "close-service":
            return self.close_service(args["from_mac"], args["to_mac"])
        if request.verb == "dns-fallback":
            self._filter_ports()
            self.held = args["state"] == "on"
            return self.dns_fallback(self.held)
        if request.verb == "dns-sets":
            return self.load_sets(force=True)
        if request.verb == "usb-unmount":
            if self.drive is None:
                raise Refused("usb-unmount: no USB drive is mounted")
            return {"unmounted": self._release(self.drive.serial)}
        return self.dns_reload()

    # -- USB drives (usb-mount / usb-unmount) ---------------------------------------------------
    def usb_mount(self, argument: str, caller: Caller) -> Drive:
        """Check and mount `argument` for `caller` (see the module docstring); under usb_lock."""
        if self.drive is not None:
            raise Refused(f"usb-mount: {self.drive.device} is mounted already (for pid "
                          f"{self.drive.pid}); one drive at a time, usb-unmount first")
        try:
            device = usb.inspect(usb.resolve(argument, self.net.helper.usb_devices))
            mounts = usb.mounted_numbers(Path("/proc/self/mountinfo").read_text())
            why = usb.problem(device, self.net.helper.usb_devices, mounts, usb.root_disk())
            if why is not None:
                raise usb.UsbError(why)
            self.usb_dir.mkdir(mode=0o700, exist_ok=True)
            gid = caller.gid if caller.gid is not None else caller.uid
            fstype = usb.mount(device.path, self.usb_dir, caller.uid, gid)
        except usb.UsbError as exc:
            raise Refused(f"usb-mount: {exc}") from None
        try:
            fd = os.open(self.usb_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            usb.unmount(self.usb_dir)
            raise
        self.drives += 1
        self.drive = Drive(self.drives, device.path, fstype, caller.pid, fd)
        log.info("USB drive %s (%s) mounted read-only for pid %d (uid %d)", device.path, fstype,
                 caller.pid, caller.uid)
        return self.drive

    def release_drive(self, serial: int | None = None) -> str | None:
        """Unmount the drive (only if it is still mount `serial`, when given); its device, or
        None if that mount was gone already."""
        with self.usb_lock:
            return self._release(serial)

    def _release(self, serial: int | None) -> str | None:
        drive = self.drive
        if drive is None or (serial is not None and drive.serial != serial):
            return None
        self.drive = None
        usb.unmount(self.usb_dir)
        log.info("USB drive %s unmounted", drive.device)
        return drive.device

    def _clear_leftover_mounts(self) -> None:
        # Without PrivateMounts= (tests, a hand-started helper) a killed helper's mount outlives it.
        try:
            points = usb.mount_points_under(Path("/proc/self/mountinfo").read_text(), str(self.usb_dir))
            for point in points:
                usb.unmount(Path(point))
                log.warning("unmounted a leftover USB mount at %s", point)
        except OSError as exc:
            log.error("could not clear leftover USB mounts under %s: %s", self.usb_dir, exc)

    # -- verbs ----------------------------------------------------------------------------------
    def _classroom(self, ip: str) -> bool:
        addr = ipaddress.ip_address(ip)
        return any(addr in net for net in self.subnets)

    def _addresses(self, mac: str, ip: str) -> tuple[str, ...]:
        known = leases.addresses_of(mac, interface=self.net.interface,
                                    lease_file=self.dir / render.LEASES)
        return tuple(a for a in dict.fromkeys((ip, *known)) if self._classroom(a))

    def accept(self, ip: str) -> dict[str, Any]:
        if not self._classroom(ip):
            raise Refused(f"{ip} is not a classroom address")
        mac = leases.lookup(ip, interface=self.net.interface, lease_file=self.dir / render.LEASES)
        if mac is None:
            raise Refused(f"no MAC known for {ip} (not on the classroom network?)")
        seconds = self.net.session_seconds
        session = sessions.accept(self.db, mac, ip, self._addresses(mac, ip), sessions.clock(), seconds)
        nft.run(nft.session_elements(mac, session.addresses, seconds))
        nft.flush_conntrack(session.addresses)
        log.info("session accepted: %s (%s) for %d s", mac, ", ".join(session.addresses), seconds)
        return {"mac": mac, "addresses": list(session.addresses), "seconds_remaining": seconds}

    def revoke(self, mac: str) -> dict[str, Any]:
        session = sessions.revoke(self.db, mac)
        if session is None:
            raise Refused(f"no session for {mac}")
        nft.run(nft.delete_elements(mac, session.addresses))
        nft.flush_conntrack(session.addresses)
        log.info("session revoked: %s", mac)
        return {"mac": mac, "revoked": True}

    def list_sessions(self) -> list[dict[str, Any]]:
        now = sessions.clock()
        return [{"mac": s.mac, "ip": s.ip, "addresses": list(s.addresses), "started": s.started,
                 "seconds_remaining": round(sessions.remaining(s, now, self.net.session_seconds))}
                for s in sessions.all_sessions(self.db)
                if sessions.remaining(s, now, self.net.session_seconds) > 0]

    def status(self, ip: str) -> dict[str, Any]:
        base = {"ip": ip, "mode": self.net.portal_mode, "can_extend": False}
        if self.net.portal_mode == "open":
            return {**base, "accepted": True, "seconds_remaining": None, "mac": None}
        mac = leases.lookup(ip, interface=self.net.interface, lease_file=self.dir / render.LEASES)
        if mac is not None and mac in self.net.trusted_macs:
            return {**base, "accepted": True, "seconds_remaining": None, "mac": mac}
        session = sessions.get(self.db, mac) if mac else sessions.by_address(self.db, ip)
        left = sessions.remaining(session, sessions.clock(), self.net.session_seconds) if session else 0
        if session is not None and left > 0 and mac is not None and ip not in session.addresses \
                and self._classroom(ip):
            # A new (privacy) address of an accepted phone: it is accepted too.
            sessions.add_addresses(self.db, mac, (ip,))
            nft.run(nft.session_elements(mac, (ip,), int(left)))
        return {**base, "accepted": left > 0, "seconds_remaining": round(left), "mac": mac}

    def stations(self) -> dict[str, Any]:
        if self.net.access_point == "external":
            return {"available": False, "reason": "external access point", "stations": []}
        try:
            found = hostapd_stations(Path("/run/hostapd") / self.net.interface)
        except OSError as exc:
            return {"available": False, "reason": f"hostapd control socket: {exc.strerror or exc}",
                    "stations": []}
        return {"available": True, "count": len(found), "stations": found}

    def dns_reload(self) -> dict[str, Any]:
        try:
            pid = int((self.dir / render.DNSMASQ_PID).read_text().strip())
        except (OSError, ValueError):
            raise Refused("dnsmasq is not running (no pid file)") from None
        os.kill(pid, signal.SIGHUP)
        return {"reloaded": True, "pid": pid}

    def _ipv4_of(self, mac: str) -> tuple[str, ...]:
        known = leases.addresses_of(mac, interface=self.net.interface,
                                    lease_file=self.dir / render.LEASES)
        return tuple(a for a in known if self._classroom(a) and ipaddress.ip_address(a).version == 4)

    def open_service(self, from_mac: str, to_mac: str, ports: tuple[tuple[str, int, int], ...],
                     seconds: int) -> dict[str, Any]:
        """Let `from_mac` reach `to_mac` on `ports` for `seconds` (renewing replaces the opening:
        the addresses are looked up afresh, here, never taken from the caller)."""
        if from_mac == to_mac:
            raise Refused("open-service: from_mac and to_mac are the same device")
        from_ips, to_ips = self._ipv4_of(from_mac), self._ipv4_of(to_mac)
        if not from_ips or not to_ips:
            missing = from_mac if not from_ips else to_mac
            raise Refused(f"no classroom IPv4 address known for {missing}")
        fwd, rev = nft.share_pairs(from_mac, from_ips, to_mac, to_ips, ports)
        old = sessions.get_share(self.db, from_mac, to_mac)
        # One transaction: the old opening (perhaps to a former address) goes, the new one comes.
        script = (nft.delete_share_elements(old.fwd, old.rev) if old else "") + \
            nft.share_elements(fwd, rev, seconds)
        ensure_proxy_arp(self.net.interface)
        nft.run(script)
        sessions.put_share(self.db, sessions.Share(from_mac, to_mac, fwd, rev), sessions.clock(),
                           seconds)
        log.info("service opened: %s -> %s (%s) for %d s", from_mac, to_mac,
                 ", ".join(f"{p}:{lo}" + (f"-{hi}" if hi != lo else "") for p, lo, hi in ports),
                 seconds)
        return {"from_mac": from_mac, "to_mac": to_mac, "from": list(from_ips), "to": list(to_ips),
                "elements": len(fwd), "seconds": seconds}

    def close_service(self, from_mac: str, to_mac: str) -> dict[str, Any]:
        share = sessions.get_share(self.db, from_mac, to_mac)
        if share is None:
            raise Refused(f"no opening from {from_mac} to {to_mac}")
        nft.run(nft.delete_share_elements(share.fwd, share.rev))
        sessions.delete_share(self.db, from_mac, to_mac)
        log.info("service closed: %s -> %s", from_mac, to_mac)
        return {"from_mac": from_mac, "to_mac": to_mac, "closed": True}
    def _filter_ports(self) -> render.FilterPorts:
        if self.ports is None:
            raise Refused("the filter does not answer the classroom's DNS ([filter] enabled = false)")
        return self.ports

    def dns_fallback(self, on: bool) -> dict[str, Any]:
        """Point the classroom's port 53 at the baseline unbound (`on`) or the filter."""
        ports = self._filter_ports()
        port = ports.baseline_port if on else ports.port
        nft.run(render.dns_fallback_script(self.net, port))
        if on != self.fallback:
            log.warning("classroom DNS -> %s (port %d)", "baseline unbound" if on else "filter", port)
        self.fallback = on
        self.failures = 0
        return {"fallback": on, "port": port, "held": self.held}

    def redirect_port(self) -> int | None:
        """The port the kernel's redirect points at now (None: no such chain)."""
        result = subprocess.run(["nft", "list", "chain", "inet", render.TABLE, render.DNS_CHAIN],
                                capture_output=True, text=True, timeout=10, check=False)
        if result.returncode != 0:
            return None
        ports = {int(p) for p in re.findall(r"dnat ip6? to \S+:(\d+)", result.stdout)}
        return ports.pop() if len(ports) == 1 else None

    def load_sets(self, force: bool = False) -> dict[str, Any]:
        """Load the filter's address files into their sets if they changed (or `force`)."""
        self._filter_ports()
        loaded: dict[str, Any] = {}
        for name, prefix in ((dnssets.DOH, "doh"), (dnssets.WALLED, "walled")):
            path = dnssets.path(self.cfg, name)
            try:
                stamp: float | None = path.stat().st_mtime_ns
            except OSError:
                stamp = None
            if not force and self.set_stamps.get(name, -1) == stamp:
                continue
            v4, v6 = dnssets.read(path)
            script = []
            for family, addrs in (("v4", v4), ("v6", v6)):
                script.append(f"flush set inet {render.TABLE} {prefix}_{family}")
                timeout = render.DOH_TIMEOUT if prefix == "doh" else render.WALLED_TIMEOUT
                items = ", ".join(f"{a} timeout {timeout}" for a in addrs[:MAX_SET_ADDRESSES])
                if items:
                    script.append(f"add element inet {render.TABLE} {prefix}_{family} {{ {items} }}")
            nft.run("\n".join(script) + "\n")
            self.set_stamps[name] = stamp
            loaded[prefix] = len(v4) + len(v6)
        return {"loaded": loaded}

    def watch(self, now: float) -> None:
        """One turn of the filter's loop (see the module docstring): address files, health."""
        if self.ports is None or not nft.table_exists():
            return
        with self.lock:
            if not nft.table_exists():
                return
            if self.fallback is None:
                self.fallback = self.redirect_port() == self.ports.baseline_port
            self.load_sets()
        if now - self.last_health < HEALTH_EVERY:
            return
        self.last_health = now
        alive = dns_answers(self.ports.health_host, self.ports.port, self.net.portal_name)
        with self.lock:
            self.failures = 0 if alive else self.failures + 1
            if alive and self.fallback and not self.held:
                self.dns_fallback(False)
            elif self.failures >= HEALTH_FAILURES and not self.fallback:
                self.dns_fallback(True)
            elif (self.held or not alive) and self.fallback and \
                    self.redirect_port() != self.ports.baseline_port:
                # A ruleset reload (`apply`) put the filter's port back meanwhile.
                self.dns_fallback(True)

    # -- the loop -------------------------------------------------------------------------------
    def tick(self) -> None:
        """One turn of the background loop (see the module docstring)."""
        with self.lock:
            now = sessions.clock()
            for over in sessions.expire(self.db, now, self.net.session_seconds):
                log.info("session expired: %s", over.mac)
            # The kernel already dropped these elements (their timeout); forget them here.
            for share in sessions.expire_shares(self.db, now):
                log.info("service opening expired: %s -> %s", share.from_mac, share.to_mac)
            if nft.table_exists():
                live = {elem for elem, _ in nft.list_set("accepted_v4") + nft.list_set("accepted_v6")}
                seen = {d.mac: d.ips for d in leases.devices(
                    interface=self.net.interface, lease_file=self.dir / render.LEASES)}
                for s in sessions.all_sessions(self.db):
                    left = int(sessions.remaining(s, now, self.net.session_seconds))
                    known = tuple(a for a in seen.get(s.mac, ()) if self._classroom(a))
                    fresh = tuple(a for a in known if a not in s.addresses)
                    if fresh:
                        sessions.add_addresses(self.db, s.mac, fresh)
                    wanted = tuple(dict.fromkeys((*s.addresses, *fresh)))
                    missing = tuple(a for a in wanted if f"{s.mac} . {a}" not in live)
                    if missing and left >= 2:
                        nft.run(nft.session_elements(s.mac, missing, left))
            online = uplink_online(self.net.uplink)
            if online != self.online:
                self.switch_answers(online)

    def switch_answers(self, online: bool) -> None:
        for f in render.answer_files(self.net, online=online):
            write_atomic(self.dir / f.name, f.text, f.mode)
        self.online = online
        log.info("uplink %s: local answers %s", "up" if online else "down",
                 "online" if online else "offline (probe hosts -> captured address)")
        try:
            self.dns_reload()
        except (Refused, OSError) as exc:
            log.warning("could not reload dnsmasq: %s", exc)


SYSTEM_SLICE = Path("/sys/fs/cgroup/system.slice")


def peer(sock: socket.socket) -> Caller:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    try:
        unit = verbs.unit_of(Path(f"/proc/{pid}/cgroup").read_text())
    except OSError:
        unit = unit_from_cgroups(pid)
    return Caller(pid, uid, unit, gid)


def unit_from_cgroups(pid: int) -> str | None:
    """The caller's unit when its /proc entry is hidden from us: under ProtectProc=invisible a
    process holding a capability the helper lacks (the portal's and the filter's
    CAP_NET_BIND_SERVICE) fails the kernel's ptrace check and is invisible, so every request of
    theirs was refused on a real Pi (seen booting the image in a VM). The cgroup tree is
    world-readable: the unit is the one whose cgroup.procs lists the pid."""
    procs: dict[str, str] = {}
    try:
        folders = list(SYSTEM_SLICE.glob("*.service"))
    except OSError:
        return None
    for folder in folders:
        with contextlib.suppress(OSError):
            procs[folder.name] = (folder / "cgroup.procs").read_text()
    return verbs.unit_by_membership(procs, pid)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.connection.settimeout(5)
        try:
            raw = self.rfile.readline(verbs.MAX_REQUEST + 1)
        except OSError:
            return
        helper = self.server.helper
        data, drive = helper.answer(raw, peer(self.connection))
        if drive is None:
            self.wfile.write(data)
            return
        try:
            try:
                socket.send_fds(self.connection, [data], [drive.fd])
            finally:
                os.close(drive.fd)  # the caller's copy keeps the root open, not ours
            # Held until the caller sends a line (answered) or hangs up: either ends the mount.
            self.connection.settimeout(None)
            line = self.rfile.readline(verbs.MAX_REQUEST + 1)
        except OSError:
            line = b""
        try:
            released = helper.release_drive(drive.serial)
        except OSError as exc:
            log.error("unmounting %s failed: %s", drive.device, exc)
            released = None
        if line:
            with contextlib.suppress(OSError):
                self.wfile.write(verbs.ok({"unmounted": released}))


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, helper: Helper) -> None:
        self.helper = helper
        super().__init__(path, _Handler)


def serve(cfg: Config, stop: threading.Event) -> None:
    """Run the helper until `stop` is set."""
    helper = Helper(cfg)
    path = cfg.network.helper.socket
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    server = _Server(str(path), helper)
    # Anyone local may connect; the allowlist, not the file mode, decides who is served.
    os.chmod(path, 0o666)  # noqa: S103 - the allowlist is the access control
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()
    log.info("network helper listening on %s", path)

    def watcher() -> None:
        while not stop.is_set():
            try:
                helper.watch(time.monotonic())
            except (nft.NftError, OSError, subprocess.SubprocessError) as exc:
                log.error("DNS watch failed: %s", exc)
            stop.wait(WATCH_TICK)

    threading.Thread(target=watcher, daemon=True, name="helper-dns-watch").start()
    try:
        while not stop.is_set():
            try:
                helper.tick()
            except (nft.NftError, OSError) as exc:
                log.error("background turn failed: %s", exc)
            stop.wait(TICK)
    finally:
        server.shutdown()
        server.server_close()
        path.unlink(missing_ok=True)
        try:
            helper.release_drive()
        except OSError as exc:
            log.error("unmounting the USB drive failed: %s", exc)
