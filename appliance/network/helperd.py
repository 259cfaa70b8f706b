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
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import socketserver
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.network import leases, nft, render, sessions, verbs
from appliance.network.verbs import Caller, Refused, Request

log = logging.getLogger("appliance.network.helper")
TICK = 2.0
SYS_CLASS_NET = Path("/sys/class/net")


def uplink_online(uplink: str, sys_class_net: Path = SYS_CLASS_NET) -> bool:
    """Whether the uplink has carrier (a cable, a link partner); what decides online answers."""
    try:
        return (sys_class_net / uplink / "carrier").read_text().strip() == "1"
    except OSError:
        return False


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


def hostapd_stations(ctrl_path: Path, timeout: float = 2.0) -> list[str]:
    """MACs of the stations hostapd has associated, via its control socket (STA-FIRST/NEXT)."""
    local = Path(tempfile.gettempdir()) / f"appliance-hostapd-{os.getpid()}-{threading.get_ident()}"
    found: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.bind(str(local))
        try:
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
        finally:
            local.unlink(missing_ok=True)
    return found


class Helper:
    """The verbs, carried out. Built from the configuration; `handle()` is the whole protocol."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.net = cfg.network
        self.dir = render.render_dir(cfg)
        self.db = sessions.open_sessions_db(cfg.database_path)
        self.lock = threading.Lock()
        self.logged: set[tuple[int, str | None, str]] = set()
        self.online: bool | None = None
        self.subnets = [ipaddress.ip_interface(self.net.ipv4).network]
        if self.net.ipv6:
            self.subnets.append(ipaddress.ip_interface(self.net.ipv6).network)

    # -- the protocol ---------------------------------------------------------------------------
    def handle(self, raw: bytes, caller: Caller) -> bytes:
        try:
            request = verbs.parse(raw.strip())
            if not verbs.allowed(caller, request.verb, self.net.helper):
                raise Refused(f"caller may not call {request.verb}")
        except Refused as exc:
            self._log_once(caller, exc.reason)
            return verbs.error(exc.reason)
        try:
            with self.lock:
                return verbs.ok(self.dispatch(request))
        except Refused as exc:
            return verbs.error(exc.reason)
        except (nft.NftError, OSError) as exc:
            log.error("%s failed: %s", request.verb, exc)
            return verbs.error(f"{request.verb} failed: {exc}")

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
        return self.dns_reload()

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


def peer(sock: socket.socket) -> Caller:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    try:
        unit = verbs.unit_of(Path(f"/proc/{pid}/cgroup").read_text())
    except OSError:
        unit = None
    return Caller(pid, uid, unit)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.connection.settimeout(5)
        try:
            raw = self.rfile.readline(verbs.MAX_REQUEST + 1)
        except OSError:
            return
        self.wfile.write(self.server.helper.handle(raw, peer(self.connection)))


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
