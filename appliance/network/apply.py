"""Check and apply the classroom network: validate everything first, swap files in atomically,
reload what changed, and roll back to the previous files and ruleset if any step fails.

Every problem is a `ConfigError` naming a file and a key (the command exits with status 2), and
a failed check leaves the running network untouched. Services are (re)started through a
`Runner`: `systemctl` on a real Pi (`[network] services = "systemd"`), or processes this module
starts itself with pid files in `render_dir` (`"direct"`: the lab and the tests).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from appliance.config import Config, ConfigError
from appliance.network import nft, render
from appliance.network.answers import uplink_online
from appliance.network.helperd import write_atomic
from appliance.secretfiles import read_secret

SYS_NET = Path("/sys/class/net")


# -- what is checked before anything is touched ------------------------------------------------
def read_passphrase(cfg: Config) -> str | None:
    radio = cfg.network.radio
    if cfg.network.access_point != "onboard" or radio.security == "open":
        return None
    key = "network.radio.passphrase_file"
    if radio.passphrase_file is None:
        raise ConfigError(cfg.source, key, f"is required when security = {radio.security!r}")
    secret = read_secret(radio.passphrase_file, key)
    problem = render.passphrase_problem(secret, radio.security)
    if problem:
        raise ConfigError(radio.passphrase_file, key, f"passphrase {problem}")
    return secret


def check_terms(cfg: Config) -> None:
    path = cfg.network.terms_file
    if path is not None and cfg.network.portal_mode == "terms" and not path.is_file():
        raise ConfigError(cfg.source, "network.terms_file", f"{path} does not exist")


def interface_addresses(name: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    result = subprocess.run(["ip", "-j", "addr", "show", "dev", name], capture_output=True,
                            text=True, timeout=10, check=False)
    found: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
    for link in json.loads(result.stdout or "[]") if result.returncode == 0 else []:
        for a in link.get("addr_info", []):
            found.append(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}"))
    return found


def check_interfaces(cfg: Config, sys_net: Path = SYS_NET) -> None:
    net = cfg.network
    for key, name in (("network.interface", net.interface), ("network.uplink", net.uplink)):
        if not (sys_net / name).exists():
            raise ConfigError(cfg.source, key, f"interface {name!r} does not exist on this machine")
    classroom = [ipaddress.ip_interface(net.ipv4).network]
    if net.ipv6:
        classroom.append(ipaddress.ip_interface(net.ipv6).network)
    for addr in interface_addresses(net.uplink):
        if addr.ip.is_link_local:
            continue
        for mine in classroom:
            if mine.version == addr.network.version and mine.overlaps(addr.network):
                key = "network.ipv4" if mine.version == 4 else "network.ipv6"
                raise ConfigError(cfg.source, key, f"{mine} overlaps the uplink {net.uplink}'s "
                                  f"subnet {addr.network}")


def check_files(cfg: Config, files: list[render.RenderedFile]) -> None:
    """The real tools on the rendered text, in a scratch folder: `nft -c`, `dnsmasq --test`."""
    by_name = {f.name: f for f in files}
    with tempfile.TemporaryDirectory(prefix="appliance-network-check-") as tmp:
        ruleset = Path(tmp) / render.RULESET
        ruleset.write_text(by_name[render.RULESET].text)
        try:
            nft.run(ruleset.read_text(), check_only=True)
        except nft.NftError as exc:
            raise ConfigError(render.render_dir(cfg) / render.RULESET, "network",
                              f"nft refused the ruleset: {exc}") from None
        conf = Path(tmp) / render.DNSMASQ
        conf.write_text(by_name[render.DNSMASQ].text)
        result = subprocess.run([dnsmasq_exe(), "--test", f"--conf-file={conf}"],
                                capture_output=True, text=True, timeout=30, check=False)
        if result.returncode != 0:
            first = (result.stderr.strip().splitlines() or ["failed"])[0]
            raise ConfigError(render.render_dir(cfg) / render.DNSMASQ, "network",
                              f"dnsmasq refused its configuration: {first}")


def dnsmasq_exe() -> str:
    return shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def prepare(cfg: Config, *, machine: bool = True) -> list[render.RenderedFile]:
    """Everything `check` does: read secrets and terms, look at the interfaces (`machine`),
    render, and have nft and dnsmasq check the result. Returns the rendered files."""
    passphrase = read_passphrase(cfg)
    check_terms(cfg)
    if machine:
        check_interfaces(cfg)
    online = uplink_online(cfg.network.uplink) if machine else True
    files = render.render_all(cfg, passphrase, online=online)
    check_files(cfg, files)
    return files


# -- services ----------------------------------------------------------------------------------
class Runner(Protocol):
    def restart(self, service: str) -> None: ...
    def reload(self, service: str) -> None: ...
    def running(self, service: str) -> bool: ...


@dataclass
class SystemdRunner:
    """systemd units `appliance-dnsmasq` and `appliance-hostapd` (provisioning installs them)."""

    def restart(self, service: str) -> None:
        subprocess.run(["systemctl", "restart", f"appliance-{service}.service"], check=True,
                       capture_output=True, timeout=60)

    def reload(self, service: str) -> None:
        subprocess.run(["systemctl", "kill", "--signal=SIGHUP", f"appliance-{service}.service"],
                       check=True, capture_output=True, timeout=60)

    def running(self, service: str) -> bool:
        return subprocess.run(["systemctl", "is-active", "--quiet", f"appliance-{service}.service"],
                              check=False, timeout=30).returncode == 0


@dataclass
class DirectRunner:
    """dnsmasq and hostapd as daemons of our own, found by their pid files in `directory`."""

    directory: Path
    commands: dict[str, list[str]] = field(default_factory=dict)
    # Extra environment of the daemons: dnsmasq hands its own to the DHCP hook, which reads
    # DEVICES_SPOOL (under systemd, the appliance-dnsmasq unit sets it).
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        d = self.directory
        self.commands.setdefault("dnsmasq", [dnsmasq_exe(), f"--conf-file={d / render.DNSMASQ}"])
        self.commands.setdefault("hostapd", ["hostapd", "-B", "-P", str(d / "hostapd.pid"),
                                             str(d / render.HOSTAPD)])

    def pid(self, service: str) -> int | None:
        name = render.DNSMASQ_PID if service == "dnsmasq" else "hostapd.pid"
        try:
            pid = int((self.directory / name).read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def running(self, service: str) -> bool:
        return self.pid(service) is not None

    def stop(self, service: str) -> None:
        pid = self.pid(service)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def log(self, service: str) -> Path:
        """Where the daemon's output goes (dnsmasq logs to stderr: `log-facility=-`)."""
        return self.directory / f"{service}.log"

    def restart(self, service: str) -> None:
        self.stop(service)
        # The daemon forks and writes its pid file; a bad config makes it exit non-zero here.
        # Its output goes to a file, not a pipe: the forked daemon keeps stderr open, and a pipe
        # would never reach end-of-file.
        with self.log(service).open("ab") as log:
            result = subprocess.run(self.commands[service], stdout=log, stderr=log, timeout=30,
                                    stdin=subprocess.DEVNULL, check=False,
                                    env={**os.environ, **self.env})
        if result.returncode != 0:
            tail = self.log(service).read_text(errors="replace").strip().splitlines()[-1:]
            raise subprocess.CalledProcessError(result.returncode, self.commands[service],
                                                stderr="".join(tail))

    def reload(self, service: str) -> None:
        pid = self.pid(service)
        if pid is None:
            self.restart(service)
        else:
            os.kill(pid, signal.SIGHUP)


def runner_for(cfg: Config) -> Runner:
    if cfg.network.services == "direct":
        spool = cfg.devices.spool_dir
        # The hook runs as nobody here: the spool must take its lines.
        spool.mkdir(parents=True, exist_ok=True)
        spool.chmod(0o1777)
        return DirectRunner(render.render_dir(cfg), env={"DEVICES_SPOOL": str(spool)})
    return SystemdRunner()


# -- apply -------------------------------------------------------------------------------------
@dataclass
class Applied:
    """What `apply` did, for `--json` and the text summary."""

    written: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)
    kept_elements: int = 0


def _set_sysctl(name: str, value: str) -> None:
    path = Path("/proc/sys") / name.replace(".", "/")
    # Provisioning sets it too; a read-only /proc/sys (a container) is no reason to stop.
    with contextlib.suppress(OSError):
        path.write_text(value)


def _own_like_state_dir(cfg: Config, directory: Path) -> None:
    """Give `render_dir` to the state directory's owner (the `appliance` user on a Pi): `apply`
    runs as root, but the helper rewrites the local answers there and dnsmasq, dropped to that
    user, writes its leases there."""
    try:
        owner = cfg.appliance.state_dir.stat()
    except OSError:
        return
    if os.geteuid() == 0 and owner.st_uid != 0:
        os.chown(directory, owner.st_uid, owner.st_gid)


def give_to_daemons(cfg: Config, directory: Path, *, need_users: bool = True) -> None:
    """Under systemd (and run as root) let the unprivileged daemons at their files: hostapd's
    own user (render.HOSTAPD_USER) gets hostapd.conf (still 0600: the passphrase), dnsmasq's
    (the state directory's owner) a lease file that a dnsmasq of an earlier release, started
    as root, created as root. A missing hostapd user raises OSError if `need_users`, else
    leaves the file root's."""
    if cfg.network.services != "systemd" or os.geteuid() != 0:
        return
    hostapd = directory / render.HOSTAPD
    if hostapd.exists():
        try:
            user = pwd.getpwnam(render.HOSTAPD_USER)
        except KeyError:
            if need_users:
                raise OSError(f"no user {render.HOSTAPD_USER!r} to run hostapd as "
                              "(provisioning creates it)") from None
        else:
            os.chown(hostapd, user.pw_uid, 0)
    try:
        owner = cfg.appliance.state_dir.stat()
    except OSError:
        return
    leases = directory / render.LEASES
    if owner.st_uid != 0 and leases.exists() and leases.stat().st_uid != owner.st_uid:
        os.chown(leases, owner.st_uid, owner.st_gid)


def configure_interface(cfg: Config) -> None:
    """The Pi's classroom addresses and forwarding (idempotent)."""
    net = cfg.network
    subprocess.run(["ip", "addr", "replace", net.ipv4, "dev", net.interface], check=True,
                   capture_output=True, timeout=10)
    # hostapd brings the radio up itself; an external access point's wired port has nobody
    # else to do it (ifupdown knows only the uplink).
    subprocess.run(["ip", "link", "set", net.interface, "up"], check=True, capture_output=True,
                   timeout=10)
    if net.ipv6:
        subprocess.run(["ip", "addr", "replace", net.ipv6, "dev", net.interface, "nodad"],
                       check=True, capture_output=True, timeout=10)
    _set_sysctl("net.ipv4.ip_forward", "1")
    # Clients are isolated from each other (ap_isolate, bridge isolated ports): the Pi answers
    # their ARP for each other (RFC 3069), so what open-service allows can flow through its
    # forward chain, and never redirects them to a path that does not exist.
    _set_sysctl(f"net.ipv4.conf.{net.interface}.proxy_arp_pvlan", "1")
    _set_sysctl(f"net.ipv4.conf.{net.interface}.send_redirects", "0")
    if net.ipv6:
        # Forwarding turns off accepting router advertisements unless accept_ra is 2.
        _set_sysctl(f"net.ipv6.conf.{net.uplink}.accept_ra", "2")
        _set_sysctl("net.ipv6.conf.all.forwarding", "1")


def apply(cfg: Config, runner: Runner | None = None) -> Applied:
    """Check, then swap in every file and reload; on failure put the old files back."""
    files = prepare(cfg)
    runner = runner or runner_for(cfg)
    directory = render.render_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)  # noqa: S103 - dnsmasq drops privileges and re-reads answers
    _own_like_state_dir(cfg, directory)
    old = {f.name: (directory / f.name).read_text() if (directory / f.name).exists() else None
           for f in files}
    changed = {f.name for f in files if old[f.name] != f.text}
    done = Applied()
    live = nft.live_elements()
    try:
        configure_interface(cfg)
        for f in files:
            write_atomic(directory / f.name, f.text, f.mode)
            if f.name in changed:
                done.written.append(f.name)
        give_to_daemons(cfg, directory)
        done.kept_elements = sum(len(v) for v in live.values())
        # One transaction: the table is replaced and its live members put back together.
        nft.run(next(f.text for f in files if f.name == render.RULESET) + render.restore_elements(live))
        if render.DNSMASQ in changed or not runner.running("dnsmasq"):
            runner.restart("dnsmasq")
            done.restarted.append("dnsmasq")
        elif {render.ANSWERS, render.ANSWERS_SERVERS} & changed:
            runner.reload("dnsmasq")
            done.reloaded.append("dnsmasq")
        if cfg.network.access_point == "onboard" and (
                render.HOSTAPD in changed or not runner.running("hostapd")):
            runner.restart("hostapd")
            done.restarted.append("hostapd")
    except (OSError, subprocess.SubprocessError, nft.NftError) as exc:
        _roll_back(cfg, directory, old, live, runner)
        raise ConfigError(directory, "network", f"apply failed and was rolled back: {exc}") from None
    return done


def up(cfg: Config) -> Applied:
    """Bring the classroom network up at boot: what `apply` does, without restarting anything.

    Run by the helper's unit before the helper starts (ExecStartPre, with the helper's user and
    its one capability), which systemd orders before dnsmasq and hostapd: the files are rendered
    from appliance.toml (after a first boot wrote it, or a change), the classroom addresses and
    forwarding set, and the ruleset loaded with the members of any live sets kept. Nothing here
    survives a reboot by itself (addresses, sysctls and nftables live in the kernel), so without
    this step a rebooted Pi has no hotspot. Raises ConfigError naming what failed."""
    files = prepare(cfg)
    directory = render.render_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    # The helper's umask (0077) would keep hostapd (another user) and dnsmasq's re-reads out.
    os.chmod(directory, 0o755)  # noqa: S103 - as apply: the daemons read their files here
    done = Applied()
    try:
        for f in files:
            path = directory / f.name
            if not path.exists() or path.read_text() != f.text:
                # Not root, it cannot give hostapd.conf to hostapd's user as `apply` does:
                # hostapd reads it through its group (`appliance`), like the passphrase file
                # it comes from, which is the services' user's.
                mode = 0o640 if f.name == render.HOSTAPD else f.mode
                write_atomic(path, f.text, mode)
                done.written.append(f.name)
        configure_interface(cfg)
        live = nft.live_elements()
        done.kept_elements = sum(len(v) for v in live.values())
        nft.run(next(f.text for f in files if f.name == render.RULESET) + render.restore_elements(live))
    except (OSError, subprocess.SubprocessError, nft.NftError) as exc:
        raise ConfigError(directory, "network", f"bringing the network up failed: {exc}") from None
    return done


def _roll_back(cfg: Config, directory: Path, old: dict[str, str | None],
               live: dict[str, list[tuple[str, int]]], runner: Runner) -> None:
    for name, text in old.items():
        path = directory / name
        if text is None:
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, text, 0o600 if name == render.HOSTAPD else 0o644)
    with contextlib.suppress(OSError):
        give_to_daemons(cfg, directory)
    previous = old.get(render.RULESET)
    if previous:
        with contextlib.suppress(nft.NftError):
            nft.run(previous + render.restore_elements(live))
    if old.get(render.DNSMASQ):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            runner.restart("dnsmasq")
