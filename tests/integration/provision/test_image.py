"""image-build/build --arch amd64: a partitioned image assembled without loop devices, read
back without mounting it (sfdisk --json, blkid -p at partition offsets, mtools for the FAT,
debugfs for the ext4), holding first-boot files and no per-machine identity."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.integration.provision.district import ROOT

pytestmark = pytest.mark.integration
SECTOR = 512


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=300).stdout


@pytest.fixture(scope="module")
def layout(image: Path) -> dict[str, object]:
    table = json.loads(run("sfdisk", "--json", str(image)))["partitiontable"]
    boot, root = table["partitions"]
    probe = {}
    for name, part in (("boot", boot), ("root", root)):
        out = run("blkid", "-p", "-o", "export", "-O", str(part["start"] * SECTOR), str(image))
        probe[name] = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {"table": table, "boot": boot, "root": root, "probe": probe}


@pytest.fixture(scope="module")
def root_fs(image: Path, layout, tmp_path_factory) -> Path:
    """The root partition as a file of its own, for debugfs (sparse copy, no mount)."""
    part = layout["root"]
    path = tmp_path_factory.mktemp("rootpart") / "root.ext4"
    run(
        "dd",
        f"if={image}",
        f"of={path}",
        "bs=4M",
        "iflag=skip_bytes,count_bytes",
        f"skip={part['start'] * SECTOR}",
        f"count={part['size'] * SECTOR}",
        "conv=sparse",
        "status=none",
    )
    return path


def fat(image: Path, layout, *command: str) -> str:
    return run(*command[:1], "-i", f"{image}@@{layout['boot']['start'] * SECTOR}", *command[1:])


def debugfs(root_fs: Path, request: str) -> str:
    return subprocess.run(
        ["debugfs", "-R", request, str(root_fs)], check=True, capture_output=True, text=True, timeout=60
    ).stdout


def test_partition_table(layout):
    table, boot, root = layout["table"], layout["boot"], layout["root"]
    assert table["label"] == "dos"  # the Pi's firmware reads MBR
    assert (boot["type"], boot.get("bootable"), boot["start"]) == ("c", True, 8192)
    assert root["type"] == "83" and root["start"] == boot["start"] + boot["size"]
    assert layout["probe"]["boot"]["TYPE"] == "vfat" and layout["probe"]["root"]["TYPE"] == "ext4"


def test_cmdline_names_the_root_partition(image, layout):
    cmdline = fat(image, layout, "mtype", "::/cmdline.txt")
    disk_id = layout["table"]["id"].removeprefix("0x")
    assert re.search(rf"\broot=PARTUUID={disk_id}-02\b", cmdline), cmdline


def test_fstab_matches_the_filesystems(layout, root_fs):
    fstab = debugfs(root_fs, "cat /etc/fstab")
    probe = layout["probe"]
    assert f"UUID={probe['root']['UUID']} / ext4 " in fstab
    assert f"UUID={probe['boot']['UUID']} /boot/firmware vfat " in fstab


def test_first_boot_files(image, layout):
    listing = fat(image, layout, "mdir", "-b", "::/").split()
    assert "::/firstboot.toml" in listing
    # Debian's cloud kernel and its initrd, for a VM's direct kernel boot (test_vm_boot.py).
    assert {"::/vmlinuz", "::/initrd.img"} <= set(listing)
    assert (
        fat(image, layout, "mtype", "::/firstboot.toml")
        == (ROOT / "image-build/firstboot.toml.example").read_text()
    )


def test_no_machine_identity_baked_in(root_fs):
    assert debugfs(root_fs, "stat /etc/machine-id").find("Size: 0") != -1
    ssh = debugfs(root_fs, "ls -l /etc/ssh")
    assert "sshd_config" in ssh and "ssh_host_" not in ssh
    wants = debugfs(root_fs, "ls /etc/systemd/system/multi-user.target.wants")
    for unit in (
        "classroom-edge-ssh-hostkeys.service",
        "appliance-firstboot.service",
        "appliance-agent.service",
    ):
        assert unit in wants
    assert "policy-rc.d" not in debugfs(root_fs, "ls /usr/sbin")
    assert debugfs(root_fs, "stat /opt/appliance/venv/bin/appliance").find("Type: regular") != -1


def test_the_uplink_can_come_up_at_first_boot(root_fs):
    # The image carries no network configuration of its own: firstboot writes the uplink's
    # stanza from firstboot.toml; ifupdown, dhclient and wpa_supplicant are there to read it.
    assert "source /etc/network/interfaces.d/*" in debugfs(root_fs, "cat /etc/network/interfaces")
    for program in ("/usr/sbin/ifup", "/usr/sbin/dhclient", "/usr/sbin/wpa_supplicant"):
        assert "Type: regular" in debugfs(root_fs, f"stat {program}"), program
    assert "uplink" not in debugfs(root_fs, "ls /etc/network/interfaces.d")


def test_the_image_carries_a_classroom_pi_s_capabilities(root_fs):
    # appliance firstboot lays the identity and the hotspot over these sections.
    sections = debugfs(root_fs, "cat /etc/appliance/image.toml")
    parsed = tomllib.loads(sections)
    assert parsed["filter"]["enabled"] is True
    assert parsed["network"]["interface"] and "devices" in parsed and "content" in parsed
    assert "appliance" not in parsed and "mqtt" not in parsed  # no identity in an image
    wants = debugfs(root_fs, "ls /etc/systemd/system/multi-user.target.wants")
    for unit in ("appliance-filter.service", "appliance-dnsmasq.service", "appliance-devices.service"):
        assert unit in wants


def test_the_image_trusts_the_district_console_ca(root_fs, district_ca):
    # --console-ca: enrollment checks the console's HTTPS certificate against the system store.
    installed = debugfs(root_fs, "cat /usr/local/share/ca-certificates/classroom-edge-console.crt")
    assert installed.strip() == district_ca.ca_file.read_text().strip()
    bundle = debugfs(root_fs, "cat /etc/ssl/certs/ca-certificates.crt")
    assert district_ca.ca_file.read_text().strip() in bundle
