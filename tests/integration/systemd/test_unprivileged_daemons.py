"""dnsmasq and hostapd run as their units run them, never root, in the virtual classroom.

PID 1 here is not systemd, so the identity each unit gives its daemon (User=, Group=, the
supplementary groups of the user, AmbientCapabilities=, CapabilityBoundingSet=,
NoNewPrivileges=, UMask=, Environment=) is read FROM THE UNIT FILE and applied with setpriv
(util-linux), and the unit's own ExecStart runs, pointed at a rendered folder of this test
(`[network] services = "systemd"`: the files a Pi gets). dnsmasq then gives a real DHCP
client (busybox udhcpc) a lease, sends router advertisements (SLAAC), answers DNS on port 53
and fills the walled garden's nftables set, runs the device
inventory's hook (which drops the capabilities it inherited), writes its lease and pid files,
and re-reads the local answers on a SIGHUP sent under the network helper's unit identity.
hostapd (driver=wired on the classroom's bridge: there is no radio here) starts, creates its
control socket in the appliance group, and answers the helper's station reader, run under the
helper's identity.

What this does not show: the rest of each sandbox (ProtectSystem=, ReadWritePaths=, the system
call filter, DevicePolicy=): only systemd applies those, test_systemd_units.py checks their
settings; nor hostapd driving a real radio over nl80211 with these two capabilities (the
wired driver uses a packet socket and multicast membership only), nor /dev/rfkill.

The units' users are system users of a Pi. Missing here (CI), this module creates them and
removes exactly those it created.
"""

from __future__ import annotations

import grp
import inspect
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance import config as config_module
from appliance.devices.spool import EVENTS, HOOK
from appliance.harness import fakeinternet as fi
from appliance.harness.classroom import Classroom
from appliance.network import apply, helperd, render
from tests.integration.systemd.test_systemd_units import settings, unit_path

pytestmark = pytest.mark.integration

SYSTEM_RENDER_DIR = "/var/lib/appliance/network"
SYSTEM_SPOOL = "/var/spool/appliance-dhcp"
# Bits of /proc/<pid>/status's capability masks (linux/capability.h).
CAP_BITS = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}
PASSPHRASE = "correct horse battery"


# -- the units' identities ------------------------------------------------------------------------
def _one(found: dict[str, list[str]], key: str) -> str:
    values = found.get(f"Service.{key}", [])
    assert len(values) == 1, f"{key}= set {len(values)} times"
    return values[0]


def caps_mask(names: str) -> int:
    return sum(1 << CAP_BITS[name] for name in names.split())


class Identity:
    """What a unit's [Service] says its processes run as."""

    def __init__(self, unit: str) -> None:
        found = settings(unit_path(unit))
        self.unit = unit
        self.user = _one(found, "User")
        self.group = _one(found, "Group")
        self.ambient = _one(found, "AmbientCapabilities")
        self.bounding = _one(found, "CapabilityBoundingSet")
        self.umask = _one(found, "UMask")
        assert _one(found, "NoNewPrivileges") == "yes"
        # setpriv takes either the user's groups or a list: one of ours uses neither more.
        assert "Service.SupplementaryGroups" not in found, "extend setpriv() for it"
        self.environment = dict(e.split("=", 1) for e in found.get("Service.Environment", []))
        self.exec_start = _one(found, "ExecStart").split()
        self.found = found

    def setpriv(self, *cmd: str) -> list[str]:
        """`cmd` as the unit would start it: its user, group and the user's groups, its
        capabilities inheritable + ambient (so they survive the exec) and bounded, no new
        privileges, its umask."""
        def caps(names: str) -> str:
            return ",".join(["-all", *(f"+{n.removeprefix('CAP_').lower()}" for n in names.split())])
        return ["setpriv", f"--reuid={self.user}", f"--regid={self.group}", "--init-groups",
                f"--inh-caps={caps(self.ambient)}", f"--ambient-caps={caps(self.ambient)}",
                f"--bounding-set={caps(self.bounding)}", "--no-new-privs", "--",
                "/bin/sh", "-c", f'umask {self.umask}; exec "$@"', "sh", *cmd]


def status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if ":\t" in line)


def assert_runs_as(pid: int, ident: Identity) -> None:
    """The process has the unit's user and group and exactly its capabilities, nothing more."""
    st = status(pid)
    uid, gid = pwd.getpwnam(ident.user).pw_uid, grp.getgrnam(ident.group).gr_gid
    assert st["Uid"].split() == [str(uid)] * 4, st["Uid"]
    assert st["Gid"].split() == [str(gid)] * 4, st["Gid"]
    want = caps_mask(ident.ambient)
    for key in ("CapEff", "CapPrm", "CapAmb"):
        assert int(st[key], 16) == want, f"{key} {st[key]}, want {want:x}"
    assert int(st["CapBnd"], 16) == caps_mask(ident.bounding)
    assert st["NoNewPrivs"].strip() == "1"


@pytest.fixture(scope="module")
def system_users() -> Iterator[None]:
    """The units' users and groups (a Pi's provisioning creates them), made where missing."""
    made_users: list[str] = []
    made_groups: list[str] = []
    idents = [Identity(u) for u in ("dnsmasq", "hostapd", "network-helper")]
    wanted = {i.user: i.group for i in idents}
    try:
        for group in sorted(set(wanted.values())):
            try:
                grp.getgrnam(group)
            except KeyError:
                subprocess.run(["groupadd", "--system", group], check=True, timeout=30)
                made_groups.append(group)
        for user, group in sorted(wanted.items()):
            try:
                pwd.getpwnam(user)
            except KeyError:
                subprocess.run(["useradd", "--system", "--gid", group, "--no-create-home",
                                "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                                user], check=True, timeout=30)
                made_users.append(user)
        yield
    finally:
        for user in reversed(made_users):
            subprocess.run(["userdel", user], check=False, timeout=30)
        for group in made_groups:
            subprocess.run(["groupdel", group], check=False, timeout=30)


def chown(path: Path, user: str, group: str) -> None:
    os.chown(path, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)


def wait_for(check: Callable[[], bool], what: str, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


# -- the classroom and the rendered files ---------------------------------------------------------
class Pi:
    """The classroom, a rendered folder as `appliance network apply` leaves it on a Pi, and
    the folders systemd would make."""

    def __init__(self, classroom: Classroom) -> None:
        self.c = classroom
        # Outside pytest's private temporary folders: the units' users must reach everything.
        self.root = Path(tempfile.mkdtemp(prefix="unprivileged-daemons-"))
        self.root.chmod(0o755)
        self.state = self.root / "state"
        self.dir = self.state / "network"
        self.spool = self.root / "spool"
        self.run_dir = self.root / "run"
        self.bin = self.root / "bin"
        hosts = list(classroom.subnet4.hosts())
        self.cfg = config_module.from_dict({
            "appliance": {"id": "room-7", "state_dir": str(self.state)},
            "network": {
                "access_point": "onboard", "interface": "wlan0", "uplink": "uplink0",
                "ipv4": f"{classroom.gateway4}/{classroom.subnet4.prefixlen}",
                "ipv6": f"{classroom.gateway6}/64",
                "dhcp_first": str(hosts[99]), "dhcp_last": str(hosts[149]), "lease_minutes": 60,
                "services": "systemd", "render_dir": str(self.dir),
                "walled_garden": [fi.GARDEN_HOST],
                "radio": {"security": "wpa2", "passphrase_file": str(self.root / "unused")},
            },
        })

    def prepare(self, dnsmasq: Identity, hostapd: Identity) -> None:
        # The state directory is the appliance user's (StateDirectory= of our services);
        # apply makes render_dir that owner's, 0755, and writes the files as root.
        self.state.mkdir()
        chown(self.state, dnsmasq.user, dnsmasq.group)
        self.dir.mkdir(mode=0o755)
        apply._own_like_state_dir(self.cfg, self.dir)
        for f in render.render_all(self.cfg, PASSPHRASE, online=True):
            helperd.write_atomic(self.dir / f.name, f.text, f.mode)
        # A lease file a root dnsmasq of an earlier release left behind.
        (self.dir / render.LEASES).write_text("")
        apply.give_to_daemons(self.cfg, self.dir)
        # The classroom's table, whose walled-garden sets dnsmasq fills.
        self.c.pi.run("nft", "-f", str(self.dir / render.RULESET))
        # The devices capability's spool as provisioning makes it (group appliance, 2770).
        self.spool.mkdir()
        os.chown(self.spool, 0, grp.getgrnam(dnsmasq.group).gr_gid)
        self.spool.chmod(0o2770)
        # hostapd's RuntimeDirectory=, as systemd makes it: the unit's user and group, its mode.
        self.run_dir.mkdir(mode=0o755)
        ctrl = self.run_dir / "hostapd"
        ctrl.mkdir()
        chown(ctrl, hostapd.user, hostapd.group)
        ctrl.chmod(int(_one(hostapd.found, "RuntimeDirectoryMode"), 8))
        # The hook's `date`, first on dnsmasq's PATH, notes the capabilities the hook runs with.
        self.bin.mkdir(mode=0o755)
        probe = self.bin / "date"
        probe.write_text(f'#!/bin/sh\ngrep -E "^(Uid|Cap(Eff|Prm|Amb)):" /proc/$$/status '
                         f'> {self.spool}/hook-status\nexec /bin/date "$@"\n')
        probe.chmod(0o755)
        # The hook where the units' users can run it (on a Pi: /opt/appliance/venv/...).
        hook = self.root / "hook" / HOOK.name
        hook.parent.mkdir(mode=0o755)
        shutil.copy2(HOOK, hook)
        conf = self.dir / render.DNSMASQ
        conf.write_text(conf.read_text().replace(f"dhcp-script={HOOK}", f"dhcp-script={hook}"))

    def command(self, ident: Identity) -> list[str]:
        """The unit's ExecStart, reading this test's rendered folder."""
        joined = " ".join(ident.exec_start)
        assert SYSTEM_RENDER_DIR in joined
        return joined.replace(SYSTEM_RENDER_DIR, str(self.dir)).split()

    def environment(self, ident: Identity) -> dict[str, str]:
        env = {k: v.replace(SYSTEM_SPOOL, str(self.spool)) for k, v in ident.environment.items()}
        # systemd's default PATH for services, after the probe.
        return {**env, "PATH": f"{self.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"}


@pytest.fixture(scope="module")
def pi(system_users: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pi]:
    workdir = tmp_path_factory.mktemp("unprivileged")
    with Classroom(phones=1, management=False, workdir=workdir / "classroom") as classroom:
        p = Pi(classroom)
        try:
            p.prepare(Identity("dnsmasq"), Identity("hostapd"))
            yield p
        finally:
            shutil.rmtree(p.root, ignore_errors=True)


# -- dnsmasq --------------------------------------------------------------------------------------
def test_the_rendered_files_belong_to_the_daemons(pi: Pi):
    """hostapd's user alone (and root) reads the passphrase; dnsmasq's may rewrite the leases."""
    conf = (pi.dir / render.HOSTAPD).stat()
    assert (pwd.getpwuid(conf.st_uid).pw_name, stat.S_IMODE(conf.st_mode)) == \
        (Identity("hostapd").user, 0o600)
    leases = (pi.dir / render.LEASES).stat()
    assert pwd.getpwuid(leases.st_uid).pw_name == Identity("dnsmasq").user


def test_dnsmasq_under_its_unit_identity(pi: Pi):
    ident = Identity("dnsmasq")
    log = pi.root / "dnsmasq.log"
    proc = pi.c.start_process(pi.c.pi, *ident.setpriv(*pi.command(ident)), log=log,
                              env=pi.environment(ident))
    pid_file = pi.dir / render.DNSMASQ_PID
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() == str(proc.pid),
             "dnsmasq wrote no pid file", log)
    assert proc.poll() is None, log.read_text()
    assert_runs_as(proc.pid, ident)
    assert "started" in log.read_text()

    # DHCPv4 (the ping before the offer, the ARP entry for the reply) to a real client.
    phone = pi.c.phones[0]
    lease = phone.dhcp(timeout=15)
    assert lease.router == pi.c.gateway4
    leases = pi.dir / render.LEASES
    assert phone.mac in leases.read_text()
    assert pwd.getpwuid(leases.stat().st_uid).pw_name == ident.user
    # Router advertisements: the phone configures SLAAC addresses in the classroom's prefix.
    v6 = phone.wait_ipv6(timeout=20, privacy=False)
    assert any(a.startswith(str(pi.c.subnet6.network_address).rstrip(":")) for a in v6), v6

    # The device inventory's hook ran, as dnsmasq's user, with no capability left.
    events = pi.spool / EVENTS
    wait_for(lambda: events.exists() and phone.mac in events.read_text(), "no hook event", log)
    hook = dict(line.split(":\t", 1) for line in (pi.spool / "hook-status").read_text().splitlines())
    assert hook["Uid"].split()[0] == str(pwd.getpwnam(ident.user).pw_uid)
    assert [int(hook[k], 16) for k in ("CapEff", "CapPrm", "CapAmb")] == [0, 0, 0], hook
    assert grp.getgrgid(events.stat().st_gid).gr_name == ident.group  # the setgid spool's

    # DNS on port 53 (bound late by bind-dynamic: CAP_NET_BIND_SERVICE), and the walled
    # garden: what it resolves goes into the nftables sets over netlink (CAP_NET_ADMIN).
    listening = pi.c.pi.run("ss", "-ulnp").stdout
    assert re.search(rf":53\s.*pid={proc.pid}\b", listening), listening
    assert fi.GARDEN4 in phone.lookup(fi.GARDEN_HOST)
    walled = pi.c.pi.run("nft", "list", "set", "inet", render.TABLE, "walled_v4").stdout
    assert fi.GARDEN4 in walled, walled

    # The helper's dns-reload: a SIGHUP, sent as the helper's unit runs, reading the pid file.
    helper = Identity("network-helper")
    reads = log.read_text().count(f"read {pi.dir / render.ANSWERS}")
    assert reads >= 1
    subprocess.run([*pi.c.pi.exec_prefix(), *helper.setpriv(
        "/bin/sh", "-c", f'exec kill -HUP "$(cat {pid_file})"')], check=True, timeout=10)
    wait_for(lambda: log.read_text().count(f"read {pi.dir / render.ANSWERS}") > reads,
             "dnsmasq did not re-read the answers after SIGHUP", log)
    assert proc.poll() is None

    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


def test_dnsmasq_refuses_to_start_without_its_capabilities(pi: Pi, tmp_path: Path):
    """The capabilities are what makes the unit work: without CAP_NET_ADMIN dnsmasq says so."""
    ident = Identity("dnsmasq")
    ident.ambient = ident.bounding = "CAP_NET_BIND_SERVICE CAP_NET_RAW"
    result = subprocess.run([*pi.c.pi.exec_prefix(), *ident.setpriv(*pi.command(ident))],
                            capture_output=True, text=True, timeout=30, env=pi.environment(ident))
    assert result.returncode != 0
    assert "process is missing required capability NET_ADMIN" in result.stderr


# -- hostapd --------------------------------------------------------------------------------------
def wired(pi: Pi) -> Path:
    """The rendered hostapd.conf with the wired driver (no radio here) and the test's runtime
    directory; everything else as rendered, the passphrase included."""
    text = (pi.dir / render.HOSTAPD).read_text()
    assert "driver=nl80211\n" in text and "ctrl_interface=/run/hostapd\n" in text
    conf = pi.dir / "hostapd-wired.conf"
    helperd.write_atomic(conf, text.replace("driver=nl80211", "driver=wired").replace(
        "ctrl_interface=/run/hostapd", f"ctrl_interface={pi.run_dir / 'hostapd'}"), 0o600)
    chown(conf, Identity("hostapd").user, "root")
    return conf


STATIONS = (
    "import json, os, socket, sys, tempfile, threading\n"
    "from pathlib import Path\n"
    + inspect.getsource(helperd.hostapd_stations)
    + "print(json.dumps(hostapd_stations(Path(sys.argv[1]))))\n"
)


def test_hostapd_under_its_unit_identity(pi: Pi):
    ident = Identity("hostapd")
    conf = wired(pi)
    command = pi.command(ident)
    assert command[-1] == str(pi.dir / render.HOSTAPD)
    log = pi.root / "hostapd.log"
    # The wired driver (only) also binds the DHCP server port, to see stations' DHCP: allowed
    # here for everyone, in the Pi's namespace alone, instead of a capability the unit does
    # not give (nl80211 has no such socket).
    pi.c.pi.run("sh", "-c", "echo 67 > /proc/sys/net/ipv4/ip_unprivileged_port_start")
    proc = pi.c.start_process(pi.c.pi, *ident.setpriv(*command[:-1], str(conf)), log=log,
                              env=pi.environment(ident))
    socket_path = pi.run_dir / "hostapd" / pi.cfg.network.interface
    wait_for(lambda: socket_path.exists(), "hostapd made no control socket", log)
    wait_for(lambda: "AP-ENABLED" in log.read_text() or proc.poll() is not None,
             "hostapd never enabled the interface", log)
    assert proc.poll() is None, log.read_text()
    assert_runs_as(proc.pid, ident)
    sock = socket_path.stat()
    assert stat.S_ISSOCK(sock.st_mode)
    assert grp.getgrgid(sock.st_gid).gr_name == "appliance"
    assert stat.S_IMODE(sock.st_mode) == 0o770

    # The helper's station reader, run as the helper's unit runs, gets hostapd's answer
    # (an empty station list: no one associates over a wire).
    helper = Identity("network-helper")
    result = subprocess.run(
        [*pi.c.pi.exec_prefix(), *helper.setpriv("/usr/bin/python3", "-I", "-c", STATIONS,
                                                 str(socket_path))],
        capture_output=True, text=True, timeout=20)
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr
    # The socket's group is what lets the helper in: a user outside it is refused.
    nobody = subprocess.run(
        [*pi.c.pi.exec_prefix(), "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         "/usr/bin/python3", "-I", "-c", STATIONS, str(socket_path)],
        capture_output=True, text=True, timeout=20)
    assert nobody.returncode != 0 and "PermissionError" in nobody.stderr, nobody.stderr
    assert proc.poll() is None

    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
