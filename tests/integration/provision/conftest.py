"""Session fixtures for the provisioning tests: the base root filesystem is built (or taken
from /var/cache/classroom-edge) once per run; the edge and the console roles each converge,
twice, into their own copy of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.provision.district import Run, Secrets, base_rootfs, converge, unpack, write_inventory


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
