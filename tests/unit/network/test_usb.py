"""The pure checks behind `usb-mount`: the argument, the allowlist, mounted and root disks, the
filesystem, the mount options; and the verb's wire form."""

from __future__ import annotations

import json

import pytest

from appliance import config
from appliance.config import ConfigError
from appliance.network import usb, verbs
from appliance.network.usb import Device, UsbError
from appliance.network.verbs import Refused

GLOBS = ("/dev/sd[a-z]", "/dev/sd[a-z][0-9]*")
# A stick: /dev/sdb (8:16) with partitions sdb1 (8:17), sdb2 (8:18); the SD card holds /.
SDB = Device("/dev/sdb", (8, 16), (8, 16), ((8, 17), (8, 18)))
SDB1 = Device("/dev/sdb1", (8, 17), (8, 16), ())
ROOT = (179, 0)

MOUNTINFO = """\
22 1 179:2 / / rw,relatime shared:1 - ext4 /dev/mmcblk0p2 rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
40 22 179:1 / /boot/firmware rw,relatime shared:2 - vfat /dev/mmcblk0p1 rw
51 22 8:18 / /media/pi/MY\\040STICK ro,nosuid,nodev - vfat /dev/sdb2 ro
60 22 7:0 / /run/appliance-network/usb ro,nosuid,nodev,noexec - ext4 /dev/loop0 ro
61 60 7:1 / /run/appliance-network/usb/inner ro - ext4 /dev/loop1 ro
garbage line
"""


@pytest.mark.parametrize("value", ["/dev/sda1", "/dev/disk/by-label/STICK",
                                   "/dev/disk/by-id/usb-X_1.0:0-part1"])
def test_device_paths_pass(value):
    assert usb.check_argument(value) == value


@pytest.mark.parametrize("value", ["sda1", "/etc/passwd", "/dev/", "/dev/../etc/shadow", "/dev/./sda",
                                   "/dev/sda1 ", "/dev/sda1,uid=0", "/dev/sd a", "", "/dev/" + "a" * 300,
                                   "/dev//sda"])
def test_other_arguments_are_refused(value):
    with pytest.raises(UsbError, match="must be a path under /dev/"):
        usb.check_argument(value)


def test_the_allowlist_is_a_glob_on_the_whole_path():
    assert usb.allowlisted("/dev/sda", GLOBS) and usb.allowlisted("/dev/sdz15", GLOBS)
    assert not usb.allowlisted("/dev/mmcblk0p1", GLOBS)
    assert not usb.allowlisted("/dev/sda1/../mmcblk0", ("/dev/sda1",))
    assert not usb.allowlisted("/dev/SDA1", GLOBS)
    assert not usb.allowlisted("/dev/sda", ())


def test_mountinfo_gives_device_numbers_and_unescaped_points():
    found = usb.mounted_numbers(MOUNTINFO)
    assert found[(179, 2)] == "/"
    assert found[(8, 18)] == "/media/pi/MY STICK"
    assert (8, 17) not in found


def test_leftover_mounts_under_the_usb_folder_deepest_first():
    assert usb.mount_points_under(MOUNTINFO, "/run/appliance-network/usb/") == [
        "/run/appliance-network/usb/inner", "/run/appliance-network/usb"]
    assert usb.mount_points_under(MOUNTINFO, "/run/appliance-network/us") == []


def test_a_free_allowlisted_partition_may_be_mounted():
    assert usb.problem(SDB1, GLOBS, usb.mounted_numbers(MOUNTINFO), ROOT) is None
    assert usb.problem(SDB1, GLOBS, {}, None) is None


def test_refusals_in_order_allowlist_root_disk_mounted():
    assert "not in [network.helper] usb_devices" in usb.problem(
        Device("/dev/mmcblk0p2", (179, 2), ROOT, ()), GLOBS, {}, ROOT)
    # The root filesystem on a USB SSD (/dev/sda2): its disk's partitions are refused.
    on_root = usb.problem(Device("/dev/sda1", (8, 1), (8, 0), ()), GLOBS, {}, (8, 0))
    assert on_root == "/dev/sda1 is on the disk holding the root filesystem"
    mounted = {(8, 17): "/media/x"}
    assert "already mounted" in usb.problem(SDB1, GLOBS, mounted, ROOT)
    # The whole disk while one of its partitions is mounted, and a partition of a mounted disk.
    assert "/media/pi/MY STICK" in usb.problem(SDB, GLOBS, usb.mounted_numbers(MOUNTINFO), ROOT)
    assert "already mounted" in usb.problem(SDB1, GLOBS, {(8, 16): "/mnt"}, ROOT)


@pytest.mark.parametrize(("missing", "tail"), [
    ([], ""),
    (["vfat", "exfat"], "; this kernel cannot mount vfat or exfat (driver not built or loaded)"),
])
def test_a_device_no_driver_takes_is_refused_naming_the_allowed_types(missing, tail):
    assert usb.no_filesystem("/dev/sdb1", missing) == (
        "no ext4, vfat or exfat filesystem on /dev/sdb1 (is it formatted? try a partition, "
        f"e.g. sda1){tail}")


def test_mount_options():
    assert usb.mount_data("vfat", 1001, 1002) == "uid=1001,gid=1002,fmask=0133,dmask=0022,utf8"
    assert usb.mount_data("exfat", 0, 0) == "uid=0,gid=0,fmask=0133,dmask=0022,iocharset=utf8"
    assert usb.mount_data("ext4", 0, 0) == "noload"
    with pytest.raises(UsbError):
        usb.mount_data("ntfs", 0, 0)
    flags = usb.MOUNT_FLAGS
    for flag in (usb.MS_RDONLY, usb.MS_NOSUID, usb.MS_NODEV, usb.MS_NOEXEC, usb.MS_NOSYMFOLLOW):
        assert flags & flag


def test_the_verbs_on_the_wire():
    req = verbs.parse(json.dumps({"verb": "usb-mount", "args": {"device": "/dev/sdb1"}}).encode())
    assert (req.verb, req.args) == ("usb-mount", {"device": "/dev/sdb1"})
    assert verbs.parse(b'{"verb": "usb-unmount"}').verb == "usb-unmount"
    for args, reason in (({}, "takes device"), ({"device": "/etc/passwd"}, "must be a path under /dev/"),
                         ({"device": 1}, "must be strings")):
        with pytest.raises(Refused, match=reason):
            verbs.parse(json.dumps({"verb": "usb-mount", "args": args}).encode())


def test_who_may_mount_by_default():
    helper = config.HelperSection()
    assert verbs.allowed(verbs.Caller(1, 0, None), "usb-mount", helper)
    assert not verbs.allowed(verbs.Caller(2, 4242, "appliance-portal.service"), "usb-mount", helper)
    assert helper.usb_devices == GLOBS


@pytest.mark.parametrize("glob", ["/etc/passwd", "sda1", "/dev/../etc", "/dev/sd a", ""])
def test_bad_device_globs_name_the_key(glob):
    with pytest.raises(ConfigError, match=r"usb_devices\[0\]"):
        config.from_dict({"appliance": {"id": "x"},
                          "network": {"helper": {"usb_devices": [glob]}}})
