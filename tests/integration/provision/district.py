"""A throwaway district for the provisioning tests: certificates from our own CA, an inventory
shaped like ansible/inventory/example (region -> school -> building groups), its secrets in an
ansible-vault file encrypted with a password file of the test's own, and `converge()`, which
runs a playbook of ansible/ against root filesystems through the chroot connection.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from appliance.fleet.pki import CertificateAuthority

ROOT = Path(__file__).resolve().parents[3]
ANSIBLE_DIR = ROOT / "ansible"
ROOTFS_SCRIPT = ROOT / "image-build" / "rootfs"
BIN = Path(sys.executable).parent
CONSOLE_ADDRESS = "localhost"  # resolves inside the tree (its /etc/hosts) and names the broker's cert
INGEST_IDENTITY = "console-ingest"
BUILDINGS = {"pi-main": "lincoln-main", "pi-annex": "lincoln-annex"}
CAPABILITIES = ["portal", "agent", "content", "devices", "moodle", "network", "filter"]
HOTSPOT_SSID = "Lincoln classroom"
HOTSPOT_COUNTRY = "DE"
UT1_PATH = "/var/lib/appliance/ut1"  # a UT1 blacklists folder, compiled on a booted Pi only
MOODLE_URL = "https://moodle.lincoln.example"
CONTENT_ROOT = "/srv/library"  # a drive (LABEL=library), not the default folder on the SD card


def base_rootfs() -> Path:
    """The cached Debian 12 amd64 base tarball, built by image-build/rootfs if missing."""
    subprocess.run([str(ROOTFS_SCRIPT), "--arch", "amd64"], check=True, timeout=900)
    path = subprocess.run(
        [str(ROOTFS_SCRIPT), "--arch", "amd64", "--print-path"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return Path(path)


def unpack(tarball: Path, tree: Path) -> Path:
    tree.mkdir(parents=True)
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(tree), "-xf", str(tarball)], check=True)
    return tree


def pem(path: Path) -> str:
    return path.read_text()


@dataclass
class Secrets:
    """Every secret of the district, as the vault holds them (vault_* keys)."""

    directory: Path
    values: dict[str, object] = field(default_factory=dict)

    @classmethod
    def make(cls, directory: Path) -> Secrets:
        ca = CertificateAuthority.open(directory / "ca")
        edge = {}
        for building in BUILDINGS.values():
            pair = ca.issue(building)
            edge[building] = {"cert": pem(pair.cert), "key": pem(pair.key)}
        broker = ca.issue("broker", server_names=(CONSOLE_ADDRESS,))
        ingest = ca.issue(INGEST_IDENTITY)
        https = ca.issue("console-web", server_names=(CONSOLE_ADDRESS,))
        ssh_key = (
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
            + " it-staff@test"
        )
        values = {
            "vault_fleet_ca_pem": pem(ca.ca_file),
            "vault_admin_authorized_keys": [ssh_key],
            "vault_edge_certs": edge,
            "vault_console_broker_cert_pem": pem(broker.cert),
            "vault_console_broker_key_pem": pem(broker.key),
            "vault_console_ingest_cert_pem": pem(ingest.cert),
            "vault_console_ingest_key_pem": pem(ingest.key),
            "vault_console_https_cert_pem": pem(https.cert),
            "vault_console_https_key_pem": pem(https.key),
            "vault_moodle_password": os.urandom(12).hex(),
            "vault_edge_hotspot_passphrase": os.urandom(10).hex(),
        }
        return cls(directory, values)


def yaml_dump(data: object) -> str:
    # JSON is YAML: no YAML writer needed, and every string is quoted.
    return "---\n" + json.dumps(data, indent=2) + "\n"


def write_inventory(
    directory: Path,
    secrets: Secrets,
    trees: dict[str, Path],
    *,
    building_ids: dict[str, object] | None = None,
    wheelhouse: Path,
    drop: tuple[str, ...] = (),
    extra: dict[str, object] | None = None,
) -> Path:
    """An inventory like ansible/inventory/example, every host a chroot (its tree's path).

    `building_ids` overrides the building id of a host (by host name); `drop` removes group
    variables by name (a missing required variable); `extra` adds district-wide ones.
    """
    ids = {**BUILDINGS, **(building_ids or {})}
    inv = directory / "inventory"
    group_vars = inv / "group_vars"
    (group_vars / "all").mkdir(parents=True)
    chroot = {"ansible_connection": "community.general.chroot"}

    def host(name: str) -> dict[str, object]:
        return {name: {**chroot, "ansible_host": str(trees.get(name, directory / "absent" / name))}}

    buildings = {f"building_{name.replace('-', '_')}": {"hosts": host(name)} for name in BUILDINGS}
    hosts = {
        "all": {
            "children": {
                "console": {"hosts": host("district-console")},
                "edge": {
                    "children": {"region_north": {"children": {"school_lincoln": {"children": buildings}}}}
                },
            }
        }
    }
    (inv / "hosts.yml").write_text(yaml_dump(hosts))
    district: dict[str, object] = {
        "edge_console_address": CONSOLE_ADDRESS,
        "console_address": CONSOLE_ADDRESS,
        "fleet_ca_pem": "{{ vault_fleet_ca_pem }}",
        "edge_admin_authorized_keys": "{{ vault_admin_authorized_keys }}",
        "edge_mqtt_ca_pem": "{{ fleet_ca_pem }}",
        "edge_mqtt_cert_pem": "{{ vault_edge_certs[edge_building_id].cert }}",
        "edge_mqtt_key_pem": "{{ vault_edge_certs[edge_building_id].key }}",
        "appliance_package_wheelhouse": str(wheelhouse),
        # Every capability; content on a drive; moodle with a password and its own time; a
        # hotspot in Germany (channel 6 is allowed there too); the filter with a UT1 folder.
        "edge_capabilities": CAPABILITIES,
        "edge_content_root": CONTENT_ROOT,
        "edge_content_mount_src": "LABEL=library",
        "edge_content_windows": ["22:00-06:00"],
        "edge_moodle_url": MOODLE_URL,
        "edge_moodle_username": "syncbot",
        "edge_moodle_password": "{{ vault_moodle_password }}",
        "edge_moodle_courses": [2, 3],
        "edge_moodle_sync_time": "*-*-* 03:00",
        "edge_hotspot_ssid": HOTSPOT_SSID,
        "edge_hotspot_country": HOTSPOT_COUNTRY,
        "edge_hotspot_passphrase": "{{ vault_edge_hotspot_passphrase }}",
        "edge_filter_timezone": "America/Chicago",
        "edge_filter_lists": [{"category": "ut1", "layout": "ut1", "path": UT1_PATH,
                               "categories": ["adult", "gambling", "doh"]}],
        "edge_filter_block_page": ["10.42.0.1"],
        **(extra or {}),
    }
    console = {
        "console_id": "district-console",
        "console_mqtt_ca_pem": "{{ fleet_ca_pem }}",
        "console_broker_cert_pem": "{{ vault_console_broker_cert_pem }}",
        "console_broker_key_pem": "{{ vault_console_broker_key_pem }}",
        "console_ingest_identity": INGEST_IDENTITY,
        "console_ingest_cert_pem": "{{ vault_console_ingest_cert_pem }}",
        "console_ingest_key_pem": "{{ vault_console_ingest_key_pem }}",
        "console_https_server_name": CONSOLE_ADDRESS,
        "console_https_cert_pem": "{{ vault_console_https_cert_pem }}",
        "console_https_key_pem": "{{ vault_console_https_key_pem }}",
        "console_ntp_allow": ["10.0.0.0/8"],
    }
    school = {"edge_portal_title": "Lincoln School library"}
    region = {"edge_agent_interval": 30}
    for name, values in (
        ("all/main.yml", district),
        ("console.yml", console),
        ("school_lincoln.yml", school),
        ("region_north.yml", region),
    ):
        (group_vars / name).write_text(yaml_dump({k: v for k, v in values.items() if k not in drop}))
    for name, building in ids.items():
        values = {"edge_building_id": building, "edge_building_name": f"Lincoln School, {name}"}
        group = f"building_{name.replace('-', '_')}"
        kept = {k: v for k, v in values.items() if k not in drop}
        (group_vars / f"{group}.yml").write_text(yaml_dump(kept))

    # The vault, encrypted with a password that exists only in this test's folder.
    password = directory / "vault-pass"
    password.write_text(os.urandom(16).hex() + "\n")
    password.chmod(0o600)
    vault = group_vars / "all" / "vault.yml"
    vault.write_text(yaml_dump(secrets.values))
    encrypt = [str(BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(password), str(vault)]
    subprocess.run(encrypt, check=True, capture_output=True, cwd=ANSIBLE_DIR)
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    return inv


@dataclass(frozen=True)
class Run:
    returncode: int
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters per host."""
        found = {}
        for line in self.output.splitlines():
            match = re.match(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", line.strip())
            if match:
                found[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
        return found


def converge(inventory: Path, playbook: str, *, limit: str | None = None, timeout: float = 900) -> Run:
    """ansible-playbook PLAYBOOK from ansible/ (so ansible.cfg applies), with the test's vault."""
    env = {
        **os.environ,
        "ANSIBLE_VAULT_PASSWORD_FILE": str(inventory.parent / "vault-pass"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }
    cmd = [str(BIN / "ansible-playbook"), "-i", str(inventory), playbook]
    if limit:
        cmd += ["--limit", limit]
    result = subprocess.run(cmd, cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=timeout)
    return Run(result.returncode, result.stdout + result.stderr)


def snapshot(tree: Path) -> dict[str, tuple[int, int, int]]:
    """Every path in the tree with (mode, size, mtime_ns), except Ansible's own temporary
    folder (the chroot connection puts its module files under /root/.ansible/tmp). Folders
    count with their mode only: a temporary file made and removed changes a folder's mtime,
    while any file left behind shows as a path of its own."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        rel = os.path.relpath(dirpath, tree)
        if rel == "root" and ".ansible" in dirnames:
            dirnames.remove(".ansible")
        for name in dirnames:
            found[os.path.join(rel, name)] = (os.lstat(os.path.join(dirpath, name)).st_mode, 0, 0)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            found[os.path.join(rel, name)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return found


def chroot(tree: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chroot", str(tree), *args], capture_output=True, text=True, check=check, timeout=120
    )


__all__ = ["Run", "Secrets", "base_rootfs", "chroot", "converge", "snapshot", "unpack", "write_inventory"]
