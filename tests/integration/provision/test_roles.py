"""The roles of ansible/: lint-clean, and converging a real Debian 12 root filesystem through
the chroot connection (what an image build does), idempotently, into a tree that holds what a
Pi or the console machine needs. Needs root, debootstrap and the Debian mirror (scripts/install
--test); never skips."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from appliance.config import load
from appliance.fleet.topics import Topics
from tests.integration.provision.district import (
    ANSIBLE_DIR,
    BIN,
    CONTENT_ROOT,
    HOTSPOT_COUNTRY,
    HOTSPOT_SSID,
    INGEST_IDENTITY,
    MOODLE_URL,
    UT1_PATH,
    chroot,
)

REPO_UNITS = Path(__file__).resolve().parents[3] / "systemd"

pytestmark = pytest.mark.integration


def ids(tree: Path, name: str, database: str) -> int:
    """The uid (passwd) or gid (group) of `name` inside the tree."""
    for line in (tree / "etc" / database).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"{name} not in the tree's /etc/{database}")


def entry(tree: Path, name: str, database: str) -> list[str]:
    """The fields of `name`'s line in the tree's /etc/passwd or /etc/group."""
    for line in (tree / "etc" / database).read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    raise AssertionError(f"{name} not in the tree's /etc/{database}")


def owner(tree: Path, path: str) -> tuple[int, int, int]:
    st = (tree / path.lstrip("/")).stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def verify_units(tree: Path, *units: str) -> None:
    """systemd-analyze verify against the tree: silence, or the test fails (it exits 0 on
    unknown keys, see tests/integration/systemd)."""
    for unit in units:
        result = subprocess.run(
            [
                "systemd-analyze",
                "--no-pager",
                "verify",
                "--man=no",
                f"--root={tree}",
                f"/etc/systemd/system/{unit}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), (
            f"{unit}:\n{result.stdout}{result.stderr}"
        )


def settings_of(unit: Path, key: str) -> list[str]:
    """Every space-separated value of `key=` in a unit file."""
    prefix = f"{key}="
    lines = unit.read_text().splitlines()
    return [value for line in lines if line.startswith(prefix) for value in line[len(prefix) :].split()]


def enabled(tree: Path, unit: str, target: str = "multi-user.target") -> bool:
    return (tree / "etc/systemd/system" / f"{target}.wants" / unit).is_symlink()


def test_lint_production_profile():
    result = subprocess.run(
        [str(BIN / "ansible-lint"), "--offline", "--profile", "production", "--nocolor"],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("playbook", ["site.yml", "playbooks/edge.yml", "playbooks/console.yml"])
def test_syntax_check(playbook):
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", playbook],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_verify_fails_on_a_broken_unit_in_the_tree(edge):
    """The silence asserted below means something: with --root it does look inside the tree."""
    broken = edge.tree / "etc/systemd/system/broken-test.service"
    broken.write_text("[Service]\nExecStart=/opt/appliance/venv/bin/no-such-program\n")
    try:
        with pytest.raises(AssertionError, match="no-such-program"):
            verify_units(edge.tree, "broken-test.service")
    finally:
        broken.unlink()


# --- edge -------------------------------------------------------------------------------------


def changed_tasks(output: str) -> list[str]:
    """The tasks of a run that reported `changed`, so a failure says which."""
    task, found = "", []
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed:") and task not in found:
            found.append(task)
    return found


def test_edge_second_run_changes_nothing(edge):
    assert edge.first.recap()["pi-main"]["changed"] > 0
    recap = edge.second.recap()
    assert recap and all(counts["changed"] == 0 and counts["failed"] == 0 for counts in recap.values()), (
        recap, changed_tasks(edge.second.output))


def test_edge_package_and_config(edge):
    tree = edge.tree
    assert (tree / "opt/appliance/venv/bin/appliance").is_file()
    assert (tree / "opt/appliance/web/templates/portal").is_dir()
    # The rendered config passes the package's own check, run inside the tree.
    result = chroot(
        tree, "/opt/appliance/venv/bin/appliance", "--config", "/etc/appliance/appliance.toml", "check-config"
    )
    assert result.stdout.strip() == "/etc/appliance/appliance.toml: ok (appliance 'lincoln-main')"
    toml = (tree / "etc/appliance/appliance.toml").read_text()
    assert 'title = "Lincoln School library"' in toml  # from the school's group_vars
    assert "interval = 30.0" in toml  # from the region's


def test_edge_users_and_permissions(edge):
    tree = edge.tree
    uid, gid = ids(tree, "appliance", "passwd"), ids(tree, "appliance", "group")
    assert (tree / "etc/passwd").read_text().count("appliance:x:") == 1
    assert owner(tree, "/etc/appliance") == (0, gid, 0o750)
    assert owner(tree, "/etc/appliance/appliance.toml") == (0, gid, 0o640)
    assert owner(tree, "/etc/appliance/tls/client.key") == (uid, gid, 0o600)
    assert "BEGIN" in (tree / "etc/appliance/tls/client.key").read_text()
    assert owner(tree, "/etc/sudoers.d/classroom-edge") == (0, 0, 0o440)
    keys = (tree / "home/itadmin/.ssh/authorized_keys").read_text()
    assert keys.startswith("ssh-ed25519 ") and keys.count("\n") == 1


def test_edge_hardening(edge):
    tree = edge.tree
    sshd = (tree / "etc/ssh/sshd_config.d/10-classroom-edge.conf").read_text()
    assert "PasswordAuthentication no" in sshd and "PermitRootLogin no" in sshd
    # sshd itself accepts the result (host keys exist in a converged tree; images drop them).
    # /run/sshd is made by ssh.service at start; sshd -T wants it.
    (tree / "run/sshd").mkdir(parents=True, exist_ok=True)
    result = chroot(tree, "/usr/sbin/sshd", "-T", check=False)
    assert result.returncode == 0, result.stderr
    assert "passwordauthentication no" in result.stdout and "authenticationmethods publickey" in result.stdout
    assert (
        "label=Debian-Security"
        in (tree / "etc/apt/apt.conf.d/52classroom-edge-unattended-upgrades").read_text()
    )
    assert "server localhost iburst" in (tree / "etc/chrony/sources.d/classroom-edge.sources").read_text()
    assert "Storage=volatile" in (tree / "etc/systemd/journald.conf.d/classroom-edge.conf").read_text()
    fstab = (tree / "etc/fstab").read_text()
    assert "tmpfs /tmp tmpfs mode=1777,nosuid,nodev,size=64M 0 0" in fstab


def test_edge_units(edge):
    tree = edge.tree
    units = (
        "appliance-portal.service",
        "appliance-agent.service",
        "appliance-firstboot.service",
        "appliance-devices.service",
    )
    timers = ("appliance-content-sync.timer", "appliance-moodle-sync.timer")
    oneshots = ("appliance-content-sync.service", "appliance-moodle-sync.service")
    # --root: the drop-ins under <unit>.d/ in the tree are read too.
    verify_units(tree, *units, *timers, *oneshots)
    for unit in (*units, "chrony.service", "ssh.service"):
        assert enabled(tree, unit), unit
    for timer in timers:
        assert enabled(tree, timer, "timers.target"), timer
    for oneshot in oneshots:  # started by their timers only
        assert not enabled(tree, oneshot), oneshot
    for unit in (*units, *timers, *oneshots):  # the repository's units, byte for byte
        assert (tree / "etc/systemd/system" / unit).read_bytes() == (REPO_UNITS / unit).read_bytes(), unit
        # What their Documentation= names is installed.
        for doc in settings_of(tree / "etc/systemd/system" / unit, "Documentation"):
            assert (tree / doc.removeprefix("file:").lstrip("/")).is_file(), f"{unit}: {doc}"


def test_edge_config_sections(edge):
    """The capabilities' sections, as the package itself reads the rendered file."""
    cfg = load(edge.tree / "etc/appliance/appliance.toml")
    assert cfg.content.root == Path(CONTENT_ROOT)
    assert cfg.content.require_mount is True  # a drive is configured
    assert cfg.content.archive_port == 8090
    assert cfg.content.windows == ("22:00-06:00",)
    assert cfg.devices.spool_dir == Path("/var/spool/appliance-dhcp")
    assert cfg.devices.interface == "wlan0"
    assert cfg.devices.share_to == ("staff",)
    assert cfg.moodle.url == MOODLE_URL
    assert cfg.moodle.username == "syncbot"
    assert cfg.moodle.password_file == Path("/etc/appliance/secrets/moodle-password")
    assert cfg.moodle.token_file is None
    assert cfg.moodle.courses == (2, 3)


def test_edge_content(edge, secrets):
    tree = edge.tree
    uid, gid = ids(tree, "appliance", "passwd"), ids(tree, "appliance", "group")
    assert owner(tree, CONTENT_ROOT) == (uid, gid, 0o750)
    assert owner(tree, "/var/lib/appliance") == (uid, gid, 0o750)
    # No marker: the first `content add` writes it, on the drive, never on the bare mount point.
    assert not (tree / CONTENT_ROOT.lstrip("/") / ".classroom-edge-library").exists()
    fstab = (tree / "etc/fstab").read_text().splitlines()
    opts = "nofail,noatime,nodev,nosuid,noexec,x-systemd.device-timeout=10s"
    assert f"LABEL=library {CONTENT_ROOT} ext4 {opts} 0 0" in fstab
    dropins = tree / "etc/systemd/system"
    assert f"ReadWritePaths=-{CONTENT_ROOT}" in (
        dropins / "appliance-content-sync.service.d/classroom-edge.conf"
    ).read_text().splitlines()
    # edge_content_sync_time is not set: the unit's own time, no drop-in.
    assert not (dropins / "appliance-content-sync.timer.d/classroom-edge.conf").exists()


def test_edge_devices(edge):
    tree = edge.tree
    hook_uid, gid = ids(tree, "appliance-dhcp", "passwd"), ids(tree, "appliance", "group")
    assert hook_uid != 0 and hook_uid != ids(tree, "appliance", "passwd")
    passwd = entry(tree, "appliance-dhcp", "passwd")
    assert passwd[-2:] == ["/nonexistent", "/usr/sbin/nologin"]
    # The hook's user is in no group of ours: it reaches the spool as its owner only.
    assert "appliance-dhcp" not in entry(tree, "appliance", "group")[3].split(",")
    st = (tree / "var/spool/appliance-dhcp").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (hook_uid, gid, 0o2770)
    hook = tree / "opt/appliance/venv/lib/python3.11/site-packages/appliance/devices/dhcp-event"
    assert hook.is_file() and os.access(hook, os.X_OK)


def test_edge_moodle(edge, secrets):
    tree = edge.tree
    uid, gid = ids(tree, "appliance", "passwd"), ids(tree, "appliance", "group")
    assert owner(tree, "/etc/appliance/secrets") == (0, gid, 0o750)
    assert owner(tree, "/etc/appliance/secrets/moodle-password") == (uid, gid, 0o600)
    # From the vault, never a default.
    assert (tree / "etc/appliance/secrets/moodle-password").read_text() == (
        f"{secrets.values['vault_moodle_password']}\n"
    )
    assert not (tree / "etc/appliance/secrets/moodle-token").exists()
    # The mirror's files are in the library's store, which may be a drive.
    assert f"ReadWritePaths=-{CONTENT_ROOT}" in (
        tree / "etc/systemd/system/appliance-moodle-sync.service.d/classroom-edge.conf"
    ).read_text().splitlines()
    schedule = (tree / "etc/systemd/system/appliance-moodle-sync.timer.d/classroom-edge.conf").read_text()
    assert schedule.splitlines()[-2:] == ["OnCalendar=", "OnCalendar=*-*-* 03:00"]
    # The secret never reaches Ansible's output.
    assert secrets.values["vault_moodle_password"] not in edge.first.output + edge.second.output


NETWORK_UNITS = ("appliance-network-helper.service", "appliance-captive.service",
                 "appliance-dnsmasq.service", "appliance-hostapd.service")
FILTER_UNITS = ("appliance-unbound.service", "appliance-unbound-baseline.service", "appliance-filter.service")
PASSPHRASE = "etc/appliance/secrets/hotspot-passphrase"


def test_edge_network(edge, secrets):
    tree = edge.tree
    toml = (tree / "etc/appliance/appliance.toml").read_text()
    assert "\n[network]\n" in toml and "\n[network.radio]\n" in toml
    cfg = load(tree / "etc/appliance/appliance.toml")
    net = cfg.network
    assert (net.access_point, net.interface, net.uplink) == ("onboard", "wlan0", "eth0")
    assert cfg.network.ipv4 == "10.42.0.1/24" and cfg.network.ipv6 == "fd42:ce::1/64"
    assert cfg.network.dhcp_script_user == "appliance-dhcp"  # the devices capability's hook user
    assert cfg.devices.interface == cfg.network.interface
    radio = cfg.network.radio
    assert (radio.ssid, radio.country, radio.security, radio.band, radio.channel) == (
        HOTSPOT_SSID, HOTSPOT_COUNTRY, "wpa2", "2.4", 6)
    assert radio.passphrase_file == Path("/" + PASSPHRASE)
    # The passphrase from the vault, readable by the services' user only (`network up` renders
    # hostapd.conf from it at boot), named by the file and never in it.
    passphrase = str(secrets.values["vault_edge_hotspot_passphrase"])
    uid, gid = ids(tree, "appliance", "passwd"), ids(tree, "appliance", "group")
    assert owner(tree, "/" + PASSPHRASE) == (uid, gid, 0o600)
    assert (tree / PASSPHRASE).read_text() == passphrase + "\n"
    assert passphrase not in toml
    assert passphrase not in edge.first.output + edge.second.output
    # What `appliance network render` made of it in the play: hostapd's file, 0600 too.
    hostapd = tree / "var/lib/appliance/network/hostapd.conf"
    assert stat.S_IMODE(hostapd.stat().st_mode) == 0o600
    # ... and hostapd's own user's (the unit runs it as that user, group appliance).
    hostapd_uid = ids(tree, "appliance-hostapd", "passwd")
    assert hostapd_uid not in (0, ids(tree, "appliance", "passwd"))
    assert entry(tree, "appliance-hostapd", "passwd")[3] == str(ids(tree, "appliance", "group"))
    assert entry(tree, "appliance-hostapd", "passwd")[-2:] == ["/nonexistent", "/usr/sbin/nologin"]
    assert hostapd.stat().st_uid == hostapd_uid
    lines = hostapd.read_text().splitlines()
    expected = (f'ssid2="{HOTSPOT_SSID}"', f"country_code={HOTSPOT_COUNTRY}", f"wpa_passphrase={passphrase}")
    for line in expected:
        assert line in lines, line
    # Debian's own hostapd would read /etc/hostapd/hostapd.conf: masked, as systemctl mask does.
    assert os.readlink(tree / "etc/systemd/system/hostapd.service") == "/dev/null"
    verify_units(tree, *NETWORK_UNITS)
    for unit in NETWORK_UNITS:
        assert (tree / "etc/systemd/system" / unit).read_bytes() == (REPO_UNITS / unit).read_bytes(), unit
        assert enabled(tree, unit), unit


def test_edge_filter(edge):
    tree = edge.tree
    toml = (tree / "etc/appliance/appliance.toml").read_text()
    assert "\n[filter]\nenabled = true\n" in toml
    cfg = load(tree / "etc/appliance/appliance.toml")
    assert cfg.filter.enabled is True and cfg.filter.timezone == "America/Chicago"
    (ut1,) = cfg.filter.lists
    assert (ut1.layout, ut1.path, ut1.categories) == ("ut1", Path(UT1_PATH), ("adult", "gambling", "doh"))
    assert cfg.filter.block_page == ("10.42.0.1",)
    for name in ("unbound", "dnsmasq-base", "dns-root-data"):
        result = chroot(tree, "dpkg-query", "-W", "-f", "${db:Status-Status}", name, check=False)
        assert result.stdout == "installed", (name, result.stdout, result.stderr)
    # Debian's unbound would hold 127.0.0.1:53 and point the Pi's resolver at itself.
    for unit in ("unbound.service", "unbound-resolvconf.service"):
        assert os.readlink(tree / "etc/systemd/system" / unit) == "/dev/null", unit
    verify_units(tree, *FILTER_UNITS)
    for unit in FILTER_UNITS:
        assert (tree / "etc/systemd/system" / unit).read_bytes() == (REPO_UNITS / unit).read_bytes(), unit
        assert enabled(tree, unit), unit


# --- console ----------------------------------------------------------------------------------


def test_console_second_run_changes_nothing(console):
    recap = console.second.recap()
    assert recap and all(counts["changed"] == 0 and counts["failed"] == 0 for counts in recap.values()), recap


def test_console_broker(console):
    tree = console.tree
    conf = (tree / "etc/mosquitto/conf.d/classroom-edge.conf").read_text().splitlines()
    for line in (
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
        "acl_file /etc/mosquitto/classroom-edge.acl",
        "listener 8883",
    ):
        assert line in conf
    assert not any(line.startswith("crlfile") for line in conf)  # none configured
    # The ACL is exactly what the package generates: one generator, no copy of it here.
    assert (tree / "etc/mosquitto/classroom-edge.acl").read_text() == Topics("edge/v1").broker_acl(
        [INGEST_IDENTITY]
    )
    gid = ids(tree, "mosquitto", "group")
    assert owner(tree, "/etc/mosquitto/tls/broker.key") == (0, gid, 0o640)
    assert owner(tree, "/etc/mosquitto/classroom-edge.acl") == (0, gid, 0o640)


def test_console_config_and_units(console):
    tree = console.tree
    result = chroot(
        tree, "/opt/appliance/venv/bin/appliance", "--config", "/etc/appliance/appliance.toml", "check-config"
    )
    assert result.stdout.strip() == "/etc/appliance/appliance.toml: ok (appliance 'district-console')"
    uid, gid = ids(tree, "appliance", "passwd"), ids(tree, "appliance", "group")
    assert owner(tree, "/etc/appliance/tls/ingest.key") == (uid, gid, 0o600)
    units = (
        "appliance-console.service",
        "appliance-ingest.service",
        "appliance-console-backup.service",
        "appliance-console-backup.timer",
    )
    verify_units(tree, *units)
    for unit in (
        "appliance-console.service",
        "appliance-ingest.service",
        "mosquitto.service",
        "nginx.service",
    ):
        assert enabled(tree, unit), unit
    assert enabled(tree, "appliance-console-backup.timer", "timers.target")


def test_console_nginx_accepts_its_config(console):
    tree = console.tree
    result = chroot(tree, "/usr/sbin/nginx", "-t", check=False)
    assert result.returncode == 0, result.stderr
    link = tree / "etc/nginx/sites-enabled/classroom-edge-console"
    assert os.readlink(link) == "/etc/nginx/sites-available/classroom-edge-console"
    site = (tree / "etc/nginx/sites-available/classroom-edge-console").read_text()
    assert "proxy_pass http://127.0.0.1:8080;" in site and "proxy_buffering off;" in site
    assert not (tree / "etc/nginx/sites-enabled/default").exists()
    assert owner(tree, "/etc/nginx/tls/console.key")[2] == 0o600


def test_console_backup_of_a_live_wal_database(console, tmp_path):
    """The installed script, run inside the tree, copies a WAL database that has uncheckpointed
    commits (a file copy of console.db alone would miss them)."""
    tree = console.tree
    work = tree / "tmp/backup-test"
    (work / "out").mkdir(parents=True)
    db = sqlite3.connect(work / "console.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE devices (id TEXT)")
    db.executemany("INSERT INTO devices VALUES (?)", [(f"pi-{i}",) for i in range(100)])
    db.commit()
    try:
        assert (work / "console.db-wal").stat().st_size > 0
        for _ in range(3):
            result = chroot(
                tree,
                "/opt/appliance/libexec/console-backup",
                "/tmp/backup-test/console.db",
                "/tmp/backup-test/out",
                "2",
            )
        backups = sorted((work / "out").glob("console-*.db"))
        assert 1 <= len(backups) <= 2, result.stdout  # same-second runs share a name; never more than KEEP
        copy = sqlite3.connect(backups[-1])
        assert copy.execute("SELECT count(*) FROM devices").fetchone() == (100,)
        copy.close()
    finally:
        db.close()
