"""The virtual classroom: a Pi, its phones and a fake internet, in network namespaces.

    with Classroom() as room:                      # or Classroom(prefix="celab", offline=True)
        room.start_process(room.pi, "dnsmasq", ...)  # whatever serves the classroom
        lease = room.phones[0].dhcp()              # a real DHCP client (busybox udhcpc)
        room.phones[0].curl("http://captive.apple.com/hotspot-detect.html",
                            user_agent=USER_AGENTS["ios"])
        room.cut_uplink(); room.restore_uplink()

Topology (docs/architecture.md, "The virtual classroom", has the drawing):

- `<prefix>-pi`: `wlan0`, a bridge with one isolated port per phone (what `ap_isolate=1` does
  on a radio) carrying the classroom gateway (first host of `subnet4`, `<subnet6>::1`);
  `uplink0` (PI_UPLINK4/24, PI_UPLINK6/64, default routes to the fake internet); `mgmt0`, a /30
  to the machine's own namespace (`management`) so an agent reaches a broker there. Forwarding is
  on for IPv4 and IPv6, inside this namespace only. Nothing here serves DHCP, DNS or a portal:
  that is the caller's (the network capability's) job.
- `<prefix>-inet`: the fake internet (`appliance.harness.fakeinternet`): its `eth0` is the other
  end of the uplink; DNS on DNS4/DNS6, web on WEB4/WEB6 and the sentinels SENTINEL4/SENTINEL6.
  It routes the classroom's IPv6 prefix to the Pi (as a provider routes a delegated prefix) but
  not the IPv4 subnet: IPv4 from phones reaches it only when the Pi masquerades.
- `<prefix>-phone1..N`: `wlan0` with a locally administered MAC (02:ce:00:00:00:NN), SLAAC
  with privacy addresses, and `dhcp()`. Each phone's resolver is /etc/netns/<ns>/resolv.conf,
  written by our own udhcpc hook: the machine's resolver is never touched.

Needs root, `ip`, `bridge`, `busybox` (udhcpc), `curl` and `nft` (for `cut_uplink(silent=True)`).
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from appliance.fleet.pki import CertificateAuthority
from appliance.harness import fakeinternet as fi
from appliance.harness.netns import Link, Namespace, Network, Segment, remove_stale

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SUBNET4 = "192.0.2.0/24"
DEFAULT_SUBNET6 = "2001:db8:42::/64"
WLAN = "wlan0"
UPLINK = "uplink0"
MANAGEMENT = "mgmt0"
INET_DEV = "eth0"
MAC_PREFIX = "02:ce:00:00:00"  # locally administered (bit 1 of the first octet): a private MAC

# The udhcpc hook. udhcpc's own default script rewrites /etc/resolv.conf, the machine's: this one
# changes only the phone's namespace and the two files it is given. $1 is the event; udhcpc
# passes the lease as variables (ip, mask, subnet, router, dns, lease, opt<N>...).
UDHCPC_HOOK = r"""#!/bin/sh
set -u
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip addr replace "$ip/${mask:-24}" dev "$interface"
    if [ -n "${router:-}" ]; then
      set -- $router
      ip route replace default via "$1" dev "$interface"
    fi
    : > "$CLASSROOM_RESOLV.tmp"
    for server in ${dns:-}; do echo "nameserver $server" >> "$CLASSROOM_RESOLV.tmp"; done
    # Truncate and write in place: ip netns exec bind-mounts this very file (its inode).
    cat "$CLASSROOM_RESOLV.tmp" > "$CLASSROOM_RESOLV"
    rm -f "$CLASSROOM_RESOLV.tmp"
    env > "$CLASSROOM_LEASE.tmp" && mv "$CLASSROOM_LEASE.tmp" "$CLASSROOM_LEASE"
    ;;
  leasefail|nak)
    echo "$1" > "$CLASSROOM_LEASE.failed"
    ;;
esac
exit 0
"""


class ClassroomError(Exception):
    """The classroom could not be built or a phone's action failed (message says which)."""


@dataclass(frozen=True)
class Lease:
    """A DHCPv4 lease as udhcpc saw it."""

    address: str
    prefixlen: int
    router: str | None
    dns: tuple[str, ...]
    seconds: int | None
    variables: dict[str, str]  # every variable udhcpc gave the hook (opt114, domain, ...)


@dataclass(frozen=True)
class HttpResult:
    """One curl fetch. `status` is 0 when no HTTP answer came (see `exit_code`, `error`)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    exit_code: int
    error: str
    elapsed: float

    def header(self, name: str) -> str | None:
        """The last value of header `name` (case ignored), or None."""
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        return found[-1] if found else None


def curl(ns: Namespace, url: str, *, user_agent: str | None = None, method: str = "GET",
         headers: tuple[str, ...] = (), data: bytes | None = None, timeout: float = 5.0,
         resolve: tuple[str, ...] = (), family: int | None = None, cacert: Path | None = None,
         insecure: bool = False, extra: tuple[str, ...] = ()) -> HttpResult:
    """Fetch `url` with curl inside `ns`; never follows redirects.

    `headers` are "Name: value" strings, `resolve` curl's `host:port:address` pins, `family` 4
    or 6 forces the address family. Never raises for a failed fetch: see `exit_code`."""
    with tempfile.TemporaryDirectory(prefix="classroom-curl-") as tmp:
        head, body = Path(tmp) / "headers", Path(tmp) / "body"
        cmd = ["curl", "-sS", "--noproxy", "*", "-o", str(body), "-D", str(head),
               "-w", "%{http_code}", "--max-time", str(timeout), "-X", method]
        if user_agent is not None:
            cmd += ["-A", user_agent]
        for header in headers:
            cmd += ["-H", header]
        for pin in resolve:
            cmd += ["--resolve", pin]
        if family in (4, 6):
            cmd.append(f"-{family}")
        if cacert is not None:
            cmd += ["--cacert", str(cacert)]
        if insecure:
            cmd.append("-k")
        if data is not None:
            cmd += ["--data-binary", "@-"]
        cmd += [*extra, url]
        started = time.monotonic()
        proc = subprocess.run([*ns.exec_prefix(), *cmd], input=data, capture_output=True,
                              timeout=timeout + 10, env=_clean_env())
        elapsed = time.monotonic() - started
        code = proc.stdout.decode(errors="replace").strip()
        return HttpResult(
            status=int(code) if code.isdigit() else 0,
            headers=_parse_headers(head.read_bytes() if head.exists() else b""),
            body=body.read_bytes() if body.exists() else b"",
            exit_code=proc.returncode, error=proc.stderr.decode(errors="replace").strip(),
            elapsed=elapsed,
        )


def _parse_headers(raw: bytes) -> tuple[tuple[str, str], ...]:
    # -D writes every response's headers (100 Continue too): keep the last block.
    blocks = [b for b in raw.decode("iso-8859-1").split("\r\n\r\n") if b.strip()]
    if not blocks:
        return ()
    lines = blocks[-1].split("\r\n")[1:]
    return tuple((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines) if k)


def _clean_env() -> dict[str, str]:
    # No proxy variables, locale noise or the caller's resolver settings in our namespaces.
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}


def addresses_of(ns: Namespace, dev: str, *, link_local: bool = False,
                 tentative: bool = False) -> list[dict[str, object]]:
    """`ip -j addr` entries (family, local, prefixlen, scope, temporary, ...) of `dev` in `ns`."""
    out = ns.run("ip", "-j", "addr", "show", "dev", dev).stdout
    found = []
    for link in json.loads(out or "[]"):
        for entry in link.get("addr_info", []):
            if entry.get("scope") != "global" and not link_local:
                continue
            if entry.get("tentative") and not tentative:
                continue
            found.append(entry)
    return found


@dataclass
class Phone:
    """A phone on the classroom's Wi-Fi: namespace `ns`, interface `dev`, MAC `mac`."""

    classroom: Classroom
    short: str
    ns: Namespace
    mac: str
    dev: str = WLAN
    state: Path = field(default=Path())

    @property
    def name(self) -> str:
        return self.ns.name

    @property
    def resolv_conf(self) -> Path:
        return self.ns.etc / "resolv.conf"

    def run(self, *cmd: str, check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.ns.run(*cmd, check=check, timeout=timeout)

    def dhcp(self, *, timeout: float = 10.0, hostname: str | None = None,
             vendor_class: str | None = None, request: tuple[int, ...] = (),
             send: tuple[str, ...] = (), address: str | None = None) -> Lease:
        """Take a DHCPv4 lease with busybox udhcpc (one shot: it exits once bound, the address
        stays). `request` adds options to the parameter list (udhcpc orders it numerically),
        `send` adds `-x OPT:VAL`, `address` asks for that address (option 50; the server may
        give another). Raises ClassroomError if no lease came within `timeout`."""
        lease_file = self.state / "lease.env"
        for old in (lease_file, lease_file.with_suffix(".env.failed")):
            old.unlink(missing_ok=True)
        tries = max(2, int(timeout // 3))
        cmd = ["busybox", "udhcpc", "-f", "-q", "-n", "-t", str(tries), "-T", "3", "-A", "1",
               "-i", self.dev, "-s", str(self.classroom.udhcpc_hook)]
        if hostname:
            cmd += ["-x", f"hostname:{hostname}"]
        if vendor_class:
            cmd += ["-V", vendor_class]
        for option in request:
            cmd += ["-O", str(option)]
        for value in send:
            cmd += ["-x", value]
        if address:
            cmd += ["-r", address]
        env = {**_clean_env(), "CLASSROOM_RESOLV": str(self.resolv_conf),
               "CLASSROOM_LEASE": str(lease_file)}
        proc = subprocess.run([*self.ns.exec_prefix(), *cmd], capture_output=True, text=True,
                              timeout=timeout + 10, env=env)
        if proc.returncode != 0 or not lease_file.exists():
            raise ClassroomError(f"{self.short}: no DHCP lease within {timeout} s "
                                 f"(udhcpc exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        variables = dict(line.split("=", 1) for line in lease_file.read_text().splitlines()
                         if "=" in line)
        return Lease(
            address=variables["ip"], prefixlen=int(variables.get("mask", "24")),
            router=(variables.get("router") or "").split()[0] if variables.get("router") else None,
            dns=tuple((variables.get("dns") or "").split()),
            seconds=int(variables["lease"]) if variables.get("lease", "").isdigit() else None,
            variables=variables,
        )

    def release(self) -> None:
        """Forget the IPv4 lease locally (address and default route), as a phone leaving does."""
        self.run("ip", "-4", "addr", "flush", "dev", self.dev)

    def addresses(self, family: int | None = None, *, link_local: bool = False) -> list[str]:
        """The phone's usable addresses (global scope, duplicate detection done) on `dev`."""
        fam = {4: "inet", 6: "inet6"}.get(family or 0)
        return [str(e["local"]) for e in addresses_of(self.ns, self.dev, link_local=link_local)
                if fam is None or e.get("family") == fam]

    def privacy_addresses(self) -> list[str]:
        """The temporary (RFC 8981) IPv6 addresses, the ones a phone really talks from."""
        return [str(e["local"]) for e in addresses_of(self.ns, self.dev)
                if e.get("family") == "inet6" and e.get("temporary")]

    def wait_ipv6(self, timeout: float = 15.0, *, privacy: bool = True) -> list[str]:
        """Wait for SLAAC (and, with `privacy`, a temporary address); return the IPv6 ones."""
        deadline = time.monotonic() + timeout
        while True:
            v6 = self.addresses(6)
            if v6 and (not privacy or self.privacy_addresses()):
                return v6
            if time.monotonic() > deadline:
                raise ClassroomError(f"{self.short}: no SLAAC address within {timeout} s "
                                     "(is something sending router advertisements on wlan0?)")
            time.sleep(0.2)

    def curl(self, url: str, *, user_agent: str | None = None, method: str = "GET",
             headers: tuple[str, ...] = (), data: bytes | None = None, timeout: float = 5.0,
             resolve: tuple[str, ...] = (), family: int | None = None,
             cacert: Path | None = None, insecure: bool = False,
             extra: tuple[str, ...] = ()) -> HttpResult:
        """`curl(self.ns, url, ...)` from this phone; https trusts the fake internet's CA unless
        `cacert` names another."""
        if cacert is None and url.startswith("https:"):
            cacert = self.classroom.internet_ca
        return curl(self.ns, url, user_agent=user_agent, method=method, headers=headers,
                    data=data, timeout=timeout, resolve=resolve, family=family, cacert=cacert,
                    insecure=insecure, extra=extra)

    def ping(self, address: str, timeout: float = 2.0) -> bool:
        """True if `address` answers one echo request within `timeout` seconds."""
        cmd = ["ping", "-6" if ":" in address else "-4", "-c", "1", "-W", str(max(1, int(timeout))),
               address]
        return self.run(*cmd, check=False, timeout=timeout + 5).returncode == 0

    def lookup(self, name: str) -> list[str]:
        """Addresses `name` resolves to for this phone (its resolv.conf, i.e. its DHCP DNS)."""
        proc = self.run("getent", "ahosts", name, check=False, timeout=15)
        return sorted({line.split()[0] for line in proc.stdout.splitlines() if line.strip()})


class Classroom:
    """The virtual classroom (see the module docstring). A context manager; `start()` and
    `close()` for callers that manage the lifetime themselves (the lab).

    `prefix` names the namespaces `<prefix>-pi`, `<prefix>-inet`, `<prefix>-phoneN` (at most 10
    characters; random if None). Whatever a killed run with the same prefix left is removed at
    start, so a fixed prefix must belong to one run at a time (the lab holds its lock).
    `workdir` keeps logs, the hook, the CA and leases (a temporary folder, removed at close, if
    None)."""

    def __init__(self, prefix: str | None = None, *, phones: int = 3,
                 subnet4: str = DEFAULT_SUBNET4, subnet6: str = DEFAULT_SUBNET6,
                 offline: bool = False, management: bool = True,
                 workdir: Path | None = None) -> None:
        self.net = Network(prefix) if prefix else Network()
        self.prefix = self.net.prefix
        self.subnet4 = ipaddress.IPv4Network(subnet4)
        self.subnet6 = ipaddress.IPv6Network(subnet6)
        if self.subnet6.prefixlen != 64:
            raise ClassroomError(f"subnet6 {subnet6}: SLAAC needs a /64")
        if self.subnet4.overlaps(ipaddress.IPv4Network(fi.INET_NET4)) or \
                self.subnet6.overlaps(ipaddress.IPv6Network(fi.INET_NET6)):
            raise ClassroomError(f"classroom {subnet4} / {subnet6} overlaps the fake internet's "
                                 f"{fi.INET_NET4} / {fi.INET_NET6}")
        self.phone_count = phones
        self.start_offline = offline
        self.want_management = management
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"classroom-{self.prefix}-"))
        self.phones: list[Phone] = []
        self.management: Link | None = None
        self.uplink: Link | None = None
        self.wlan: Segment | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._online = True
        self._silent_cut = False
        self.internet_ca = self.workdir / "pki" / "ca.crt"
        self.udhcpc_hook = self.workdir / "udhcpc-hook"

    # -- lifetime ------------------------------------------------------------------------------
    def __enter__(self) -> Classroom:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> Classroom:
        """Build every namespace and start the fake internet; on failure nothing is left."""
        remove_stale(self.prefix)
        # A killed run's temporary workdir (a fixed prefix, like the lab's, finds it again).
        for stale in Path(tempfile.gettempdir()).glob(f"classroom-{self.prefix}-*"):
            if stale != self.workdir:
                shutil.rmtree(stale, ignore_errors=True)
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.udhcpc_hook.write_text(UDHCPC_HOOK)
            self.udhcpc_hook.chmod(0o755)
            self._build_pi_and_internet()
            self.wlan = self.net.segment(WLAN, owner="pi", isolated=True,
                                         subnet4=str(self.subnet4), subnet6=str(self.subnet6))
            for _ in range(self.phone_count):
                self.add_phone()
            if self.want_management:
                self.management = self.net.link_host("pi", dev=MANAGEMENT)
            self._start_internet()
            if self.start_offline:
                self.cut_uplink()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every process start_process() started (by pid), delete every namespace and
        /etc/netns folder, and the workdir if it is ours. Safe to call twice."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()
        self.net.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- namespaces ----------------------------------------------------------------------------
    @property
    def pi(self) -> Namespace:
        return self.net["pi"]

    @property
    def inet(self) -> Namespace:
        return self.net["inet"]

    @property
    def gateway4(self) -> str:
        """The Pi's classroom address (on wlan0): the phones' router and DNS."""
        return str(self.subnet4[1])

    @property
    def gateway6(self) -> str:
        return str(self.subnet6[1])

    @property
    def broker_host(self) -> str | None:
        """The machine's end of the management link: where a broker for the Pi's agent must
        listen (it is reachable from the Pi namespace only through `mgmt0`)."""
        return self.management.b_addrs[0].split("/")[0] if self.management else None

    @property
    def pi_management_address(self) -> str | None:
        return self.management.a_addrs[0].split("/")[0] if self.management else None

    def _write_resolv(self, ns: Namespace, *servers: str) -> None:
        # Every namespace of ours gets its own resolv.conf, so nothing in it ever reads (or
        # writes) the machine's resolver.
        ns.etc.mkdir(parents=True, exist_ok=True)
        (ns.etc / "resolv.conf").write_text(
            "# written by appliance.harness.classroom\n"
            + "".join(f"nameserver {s}\n" for s in servers))

    def _build_pi_and_internet(self) -> None:
        pi, inet = self.net.add("pi"), self.net.add("inet")
        self._write_resolv(pi, fi.DNS4, fi.DNS6)
        self._write_resolv(inet, fi.DNS4, fi.DNS6)
        pi.sysctl("net.ipv4.ip_forward", 1)
        pi.sysctl("net.ipv6.conf.all.forwarding", 1)
        # If the machine loaded br_netfilter, bridged frames would cross the Pi's IP hooks: a
        # real radio's frames never do.
        for key in ("call-iptables", "call-ip6tables", "call-arptables"):
            pi.run("sysctl", "-q", "-w", f"net.bridge.bridge-nf-{key}=0", check=False)
        self.uplink = self.net.link("pi", "inet", f"{fi.PI_UPLINK4}/24", f"{fi.INET_GATEWAY4}/24",
                                    a_dev=UPLINK, b_dev=INET_DEV)
        self.net.reserve(fi.INET_NET4, fi.INET_NET6)
        # A cut uplink (device down) must not flush the IPv6 addresses.
        pi.sysctl(f"net.ipv6.conf.{UPLINK}.keep_addr_on_down", 1)
        inet.sysctl(f"net.ipv6.conf.{INET_DEV}.keep_addr_on_down", 1)
        pi.run("ip", "addr", "add", f"{fi.PI_UPLINK6}/64", "dev", UPLINK, "nodad")
        inet.run("ip", "addr", "add", f"{fi.INET_GATEWAY6}/64", "dev", INET_DEV, "nodad")
        for address in (fi.DNS4, fi.WEB4, fi.SENTINEL4, fi.GARDEN4):
            inet.run("ip", "addr", "add", f"{address}/32", "dev", "lo")
        for address in (fi.DNS6, fi.WEB6, fi.SENTINEL6, fi.GARDEN6):
            inet.run("ip", "addr", "add", f"{address}/128", "dev", "lo")
        pi.run("ip", "route", "add", "default", "via", fi.INET_GATEWAY4, "dev", UPLINK)
        pi.run("ip", "-6", "route", "add", "default", "via", fi.INET_GATEWAY6, "dev", UPLINK)
        self._route_classroom_prefix()

    def _route_classroom_prefix(self) -> None:
        self.inet.run("ip", "-6", "route", "replace", str(self.subnet6), "via", fi.PI_UPLINK6,
                      "dev", INET_DEV)

    def add_phone(self, short: str | None = None, *, mac: str | None = None) -> Phone:
        """One more phone on wlan0 (isolated port); `mac` defaults to 02:ce:00:00:00:NN."""
        if self.wlan is None:
            raise ClassroomError("start() the classroom before adding phones")
        index = len(self.phones) + 1
        short = short or f"phone{index}"
        mac = mac or f"{MAC_PREFIX}:{index:02x}"
        ns = self.net.add(short)
        self._write_resolv(ns)
        state = self.workdir / short
        state.mkdir(parents=True, exist_ok=True)
        self.net.join(self.wlan, short, isolated=True, dev=WLAN, mac=mac)
        ns.sysctl(f"net.ipv6.conf.{WLAN}.accept_ra", 2)
        ns.sysctl(f"net.ipv6.conf.{WLAN}.autoconf", 1)
        ns.sysctl(f"net.ipv6.conf.{WLAN}.use_tempaddr", 2)
        phone = Phone(self, short, ns, mac, WLAN, state)
        self.phones.append(phone)
        return phone

    def dhcp_all(self, timeout: float = 10.0) -> list[Lease]:
        """Every phone takes a lease at once (threads); leases in the order of `phones`."""
        with concurrent.futures.ThreadPoolExecutor(max(1, len(self.phones))) as pool:
            return list(pool.map(lambda p: p.dhcp(timeout=timeout), self.phones))

    # -- processes -----------------------------------------------------------------------------
    def start_process(self, ns: Namespace, *cmd: str, log: Path | None = None,
                      env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Run `cmd` in `ns` (its output to `log`, default `<workdir>/<cmd>-<n>.log`); it is
        stopped by pid at close(). `ip netns exec` execs the command, so the pid is its own."""
        log = log or self.workdir / f"{Path(cmd[0]).name}-{len(self._procs)}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen([*ns.exec_prefix(), *cmd], stdout=out, stderr=subprocess.STDOUT,
                                    cwd=REPO, env=env or {**_clean_env(), "PYTHONUNBUFFERED": "1"},
                                    start_new_session=True)
        self._procs.append(proc)
        return proc

    @property
    def pids(self) -> list[int]:
        """Pids of the processes start_process() started that are still running."""
        return [p.pid for p in self._procs if p.poll() is None]

    def _start_internet(self) -> None:
        ca = CertificateAuthority.open(self.workdir / "pki", name="Fake internet CA")
        pair = ca.issue("fake-internet", server_names=(*fi.ALL_PROBE_HOSTS, fi.WEB4, fi.WEB6))
        python = [sys.executable, "-m", "appliance.harness.fakeinternet"]
        # cwd is the repository, so `-m appliance...` imports this very checkout.
        env = {**_clean_env(), "PYTHONUNBUFFERED": "1"}
        servers = {
            "dns": [*python, "dns", "--bind", fi.DNS4, "--bind", fi.DNS6],
            "web": [*python, "web", "--port", "80", "--tls-port", "443", "--cert", str(pair.cert),
                    "--key", str(pair.key),
                    *(a for addr in (fi.WEB4, fi.WEB6, fi.SENTINEL4, fi.SENTINEL6, fi.GARDEN4,
                                     fi.GARDEN6)
                      for a in ("--bind", addr))],
        }
        started = []
        for what, cmd in servers.items():
            ready = self.workdir / f"{what}.ready"
            proc = self.start_process(self.inet, *cmd, "--ready", str(ready),
                                      log=self.workdir / f"{what}.log", env=env)
            started.append((what, proc, ready))
        deadline = time.monotonic() + 15
        for what, proc, ready in started:
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise ClassroomError(f"fake internet {what} did not start: "
                                         f"{(self.workdir / f'{what}.log').read_text()[-800:]}")
                time.sleep(0.05)

    def internet_log(self, what: str = "dns") -> str:
        """What the fake internet's `dns` or `web` server logged (one line per query/request)."""
        path = self.workdir / f"{what}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def dns_queries(self) -> list[fi.DnsLogEntry]:
        """Every query the fake DNS received so far (transport, client, name, type, answers)."""
        return fi.parse_dns_log(self.internet_log("dns"))

    # -- the uplink ----------------------------------------------------------------------------
    @property
    def online(self) -> bool:
        return self._online

    def cut_uplink(self, *, silent: bool = False) -> None:
        """Take the internet away from the Pi. Default: the fake internet's end goes down, so
        the Pi's uplink0 loses carrier (a pulled cable). `silent`: the link stays up and the
        fake internet drops everything from it (a dead upstream), which the Pi sees only as
        timeouts. Either way the Pi's DNS forwarders and every probe fail."""
        if not self._online:
            return
        if silent:
            self.inet.run("nft", "-f", "-", input=(
                "table inet classroom_cut {\n"
                f"  chain input {{ type filter hook input priority -300; iifname \"{INET_DEV}\" drop; }}\n"
                f"  chain output {{ type filter hook output priority -300; oifname \"{INET_DEV}\" drop; }}\n"
                "}\n"))
        else:
            self.inet.run("ip", "link", "set", INET_DEV, "down")
        self._online, self._silent_cut = False, silent

    def restore_uplink(self) -> None:
        """Undo cut_uplink() (whichever way it cut)."""
        if self._online:
            return
        if self._silent_cut:
            self.inet.run("nft", "delete", "table", "inet", "classroom_cut")
        else:
            self.inet.run("ip", "link", "set", INET_DEV, "up")
            # A device going down takes its routes along; the connected ones come back alone.
            self._route_classroom_prefix()
        self._online = True

    # -- the lab's banner ----------------------------------------------------------------------
    def describe(self) -> dict[str, object]:
        """Names and addresses, for a banner or `--json`."""
        return {
            "prefix": self.prefix, "pi": self.pi.name, "inet": self.inet.name,
            "phones": {p.short: {"namespace": p.name, "mac": p.mac} for p in self.phones},
            "classroom": {"subnet4": str(self.subnet4), "subnet6": str(self.subnet6),
                          "gateway4": self.gateway4, "gateway6": self.gateway6,
                          "interface": WLAN},
            "uplink": {"interface": UPLINK, "address4": fi.PI_UPLINK4, "address6": fi.PI_UPLINK6,
                       "gateway4": fi.INET_GATEWAY4, "gateway6": fi.INET_GATEWAY6},
            "internet": {"dns": [fi.DNS4, fi.DNS6], "web": [fi.WEB4, fi.WEB6],
                         "sentinel": [fi.SENTINEL4, fi.SENTINEL6], "ca": str(self.internet_ca)},
            "management": {"interface": MANAGEMENT, "pi": self.pi_management_address,
                           "host": self.broker_host},
            "online": self.online,
        }

