"""Session fixtures for the provisioning tests: the base root filesystem is built (or taken
from /var/cache/classroom-edge) once per run; the edge and the console roles each converge,
twice, into their own copy of it; one amd64 image is built (its layout is checked, and a VM
boots a copy of it)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.fleet.pki import CertificateAuthority
from tests.integration.provision.district import (
    ROOT,
    Run,
    Secrets,
    base_rootfs,
    converge,
    unpack,
    write_inventory,
)

# The address the VM test's console has inside the VM (QEMU user networking, guestfwd).
CONSOLE_IN_VM = "10.0.2.100"


@dataclass(frozen=True)
class Converged:
    tree: Path
    first: Run
    second: Run


@pytest.fixture(scope="session")
def rootfs_tarball() -> Path:
    return base_rootfs()


@pytest.fixture(scope="session")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Secrets:
    return Secrets.make(tmp_path_factory.mktemp("secrets"))


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One wheelhouse for the whole run: the second converge finds it unchanged."""
    return tmp_path_factory.mktemp("wheelhouse")


def _converge_twice(
    root: Path, tarball: Path, secrets: Secrets, wheelhouse: Path, host: str, playbook: str
) -> Converged:
    tree = unpack(tarball, root / "tree")
    inventory = write_inventory(root, secrets, {host: tree}, wheelhouse=wheelhouse)
    first = converge(inventory, playbook, limit=host)
    assert first.returncode == 0, first.output[-6000:]
    second = converge(inventory, playbook, limit=host)
    assert second.returncode == 0, second.output[-6000:]
    return Converged(tree, first, second)


@pytest.fixture(scope="session")
def edge(tmp_path_factory, rootfs_tarball, secrets, wheelhouse) -> Converged:
    return _converge_twice(
        tmp_path_factory.mktemp("edge"), rootfs_tarball, secrets, wheelhouse, "pi-main", "playbooks/edge.yml"
    )


@pytest.fixture(scope="session")
def console(tmp_path_factory, rootfs_tarball, secrets, wheelhouse) -> Converged:
    return _converge_twice(
        tmp_path_factory.mktemp("console"),
        rootfs_tarball,
        secrets,
        wheelhouse,
        "district-console",
        "playbooks/console.yml",
    )


@pytest.fixture(scope="session")
def district_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """A district's own CA, which signed its console's HTTPS certificate (no public CA did):
    the image trusts it (`--console-ca`)."""
    ca = CertificateAuthority.open(tmp_path_factory.mktemp("district-ca"), name="District web CA")
    ca.issue("console-web", server_names=(CONSOLE_IN_VM, "localhost"))
    return ca


@pytest.fixture(scope="session")
def image(tmp_path_factory, rootfs_tarball, secrets: Secrets, district_ca: CertificateAuthority) -> Path:
    """image-build/build --arch amd64, as IT staff run it, with the district's console CA."""
    out = tmp_path_factory.mktemp("image")
    keys = out / "authorized_keys"
    keys.write_text("\n".join(secrets.values["vault_admin_authorized_keys"]) + "\n")  # type: ignore[arg-type]
    subprocess.run([str(ROOT / "image-build/build"), "--arch", "amd64", "--out", str(out),
                    "--authorized-keys", str(keys), "--console-ca", str(district_ca.ca_file)],
                   check=True, capture_output=True, text=True, timeout=900)
    return out / "classroom-edge-amd64.img"
