"""USB drives for content import: which block device the helper may mount, and mounting it.

The helper (`usb-mount DEVICE`, `usb-unmount`) mounts one drive at a time, read-only,
`nosuid,nodev,noexec,nosymfollow`, in its own mount namespace, and hands the caller a
directory fd of the mount's root (see helperd). Everything is checked before the kernel sees
the device, each with its own message (`problem()`):

- DEVICE is an absolute /dev path (symlinks such as /dev/disk/by-label/... are resolved first,
  and the resolved path is what the allowlist must match) matching a `[network.helper]
  usb_devices` glob; nothing else is even looked at;
- it is a block device;
- neither it, nor its whole disk, nor (for a whole disk) one of its partitions is mounted
  anywhere the helper can see (its /proc/self/mountinfo, which follows the host's mounts);
- it is not on the disk holding `/`;
- its filesystem is one of FILESYSTEMS: `mount()` offers the device to each of their drivers in
  turn, and the first that recognises it mounts it. The helper has no read permission on the
  node (no disk group: mount(2) needs CAP_SYS_ADMIN and the unit's DeviceAllow=, not the node's
  mode), so nothing reads the signature beforehand; a drive none of them takes (NTFS, swap,
  blank, LUKS) is refused naming the allowed types.

The pure part (parsing, deciding, building the mount options) takes text and numbers, so the unit
tests need no devices; `resolve()`, `inspect()`, `root_disk()`, `mount()` and
`unmount()` do the I/O.
"""

from __future__ import annotations

import ctypes
import fnmatch
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

# What the kernel mounts for us, tried in this order (ext4 first: its superblock magic is the
# strictest check; it also takes ext2/ext3, same driver). Nothing else is ever offered the device:
# each filesystem driver fed an untrusted image is attack surface, and sticks come as FAT or exFAT.
FILESYSTEMS = ("ext4", "vfat", "exfat")
# mount(2) flags (linux/mount.h). MS_NOSYMFOLLOW (Linux 5.10): a symlink on the drive pointing
# at /etc/... is not followed, so a caller running as root cannot be made to import host files.
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_NOSYMFOLLOW = 1, 2, 4, 8, 256
MOUNT_FLAGS = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOSYMFOLLOW
MNT_DETACH = 2
# A device argument: /dev/ and plain path components only (no "..", spaces or options).
DEVICE_PATTERN = re.compile(r"/dev/[A-Za-z0-9_:.+-]+(/[A-Za-z0-9_:.+-]+)*")
# mount(2) errnos meaning "not this filesystem, try the next": EINVAL (the driver found no
# superblock of its own) and ENODEV (this kernel has no such driver). Any other (EACCES from the
# device cgroup, ENOMEDIUM, EBUSY, EIO) stops at once: the next driver would get the same.
EINVAL, ENODEV = 22, 19

DevNum = tuple[int, int]


class UsbError(Exception):
    """A device the helper will not mount; the message says why, for the person at the Pi."""


@dataclass(frozen=True)
class Device:
    """A block device as sysfs describes it: its number, its whole disk's, its partitions'."""

    path: str  # resolved, e.g. /dev/sda1
    number: DevNum
    disk: DevNum  # the whole disk (itself if it is one)
    partitions: tuple[DevNum, ...]  # of a whole disk; () for a partition


def check_argument(value: str) -> str:
    """The DEVICE argument as given, if it looks like a device path at all (pure)."""
    if len(value) > 200 or not DEVICE_PATTERN.fullmatch(value) or "/../" in f"{value}/" \
            or "/./" in f"{value}/":
        raise UsbError("device must be a path under /dev/, such as /dev/sda1")
    return value


def allowlisted(path: str, globs: tuple[str, ...]) -> bool:
    """Whether `path` matches one of `[network.helper] usb_devices` (pure, case-sensitive)."""
    return any(fnmatch.fnmatchcase(path, g) for g in globs)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def mounted_numbers(mountinfo: str) -> dict[DevNum, str]:
    """Device number -> a mount point of it, from the text of /proc/<pid>/mountinfo (pure)."""
    found: dict[DevNum, str] = {}
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 5 or ":" not in fields[2]:
            continue
        major, _, minor = fields[2].partition(":")
        if major.isdigit() and minor.isdigit():
            found.setdefault((int(major), int(minor)), _unescape(fields[4]))
    return found


def mount_points_under(mountinfo: str, folder: str) -> list[str]:
    """Mount points at or below `folder`, deepest first (pure): what a restart must clear."""
    folder = folder.rstrip("/")
    points = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) >= 5:
            point = _unescape(fields[4])
            if point == folder or point.startswith(folder + "/"):
                points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def problem(device: Device, globs: tuple[str, ...], mounted: dict[DevNum, str],
            root_disk: DevNum | None) -> str | None:
    """Why `device` must not be mounted, or None (pure; the filesystem is checked after)."""
    if not allowlisted(device.path, globs):
        return (f"{device.path} is not in [network.helper] usb_devices "
                f"({', '.join(globs) or 'empty'})")
    if root_disk is not None and device.disk == root_disk:
        return f"{device.path} is on the disk holding the root filesystem"
    related = {device.number, device.disk, *device.partitions}
    for number in sorted(related):
        if number in mounted:
            return f"{device.path} is already mounted (its disk or a partition, at {mounted[number]})"
    return None


def mount_data(fstype: str, uid: int, gid: int) -> str:
    """The filesystem-specific options (pure). FAT and exFAT have no owners: files belong to the
    caller, readable, never executable. ext4's journal is not replayed (`noload`): a read-only
    mount must not write to the stick."""
    if fstype == "vfat":
        return f"uid={uid},gid={gid},fmask=0133,dmask=0022,utf8"
    if fstype == "exfat":
        return f"uid={uid},gid={gid},fmask=0133,dmask=0022,iocharset=utf8"
    if fstype == "ext4":
        return "noload"
    raise UsbError(f"filesystem {fstype!r} is not supported for import")


# -- I/O ---------------------------------------------------------------------------------------
def _sys_block(number: DevNum, sys_dev: Path) -> Path:
    return (sys_dev / f"{number[0]}:{number[1]}").resolve()


def _number(text: str) -> DevNum:
    major, _, minor = text.strip().partition(":")
    return int(major), int(minor)


def resolve(argument: str, globs: tuple[str, ...]) -> str:
    """The path behind `argument` with symlinks resolved, if it matches `globs` (nothing
    outside the allowlist is even looked at)."""
    path = os.path.realpath(check_argument(argument))
    if not allowlisted(path, globs):
        shown = path if path == argument else f"{argument} ({path})"
        raise UsbError(f"{shown} is not in [network.helper] usb_devices ({', '.join(globs) or 'empty'})")
    return path


def inspect(path: str, sys_dev: Path = Path("/sys/dev/block")) -> Device:
    """The block device at `path` (resolved already), with its disk and partitions from sysfs."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsbError(f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISBLK(st.st_mode):
        raise UsbError(f"{path} is not a block device")
    number = (os.major(st.st_rdev), os.minor(st.st_rdev))
    node = _sys_block(number, sys_dev)
    if (node / "partition").exists():
        disk = _number((node.parent / "dev").read_text())
        return Device(path, number, disk, ())
    parts = tuple(sorted(_number((child / "dev").read_text()) for child in node.iterdir()
                         if (child / "partition").exists() and (child / "dev").exists()))
    return Device(path, number, number, parts)


def root_disk(sys_dev: Path = Path("/sys/dev/block")) -> DevNum | None:
    """The whole disk holding `/`, or None when `/` is not on a block device (overlay, NFS)."""
    st = os.stat("/")
    node = _sys_block((os.major(st.st_dev), os.minor(st.st_dev)), sys_dev)
    if not (node / "dev").exists():
        return None
    if (node / "partition").exists():
        return _number((node.parent / "dev").read_text())
    return _number((node / "dev").read_text())


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def no_filesystem(device: str, missing: list[str]) -> str:
    """The refusal when no driver of FILESYSTEMS took the device (pure); `missing` are those
    this kernel has no driver for."""
    names = ", ".join(FILESYSTEMS[:-1]) + f" or {FILESYSTEMS[-1]}"
    why = f"no {names} filesystem on {device} (is it formatted? try a partition, e.g. sda1)"
    if missing:
        why += f"; this kernel cannot mount {' or '.join(missing)} (driver not built or loaded)"
    return why


def mount(device: str, target: Path, uid: int, gid: int) -> str:
    """mount(2) `device` at `target` read-only with MOUNT_FLAGS, offering it to each of
    FILESYSTEMS in turn (with `mount_data` for the caller `uid`:`gid`); the type that took it.
    util-linux mount refuses a caller that is not root, whatever its capabilities, so the
    helper asks the kernel itself."""
    libc = _libc()
    missing = []
    for fstype in FILESYSTEMS:
        if libc.mount(device.encode(), str(target).encode(), fstype.encode(),
                      ctypes.c_ulong(MOUNT_FLAGS), mount_data(fstype, uid, gid).encode()) == 0:
            return fstype
        err = ctypes.get_errno()
        if err == ENODEV:
            missing.append(fstype)
        elif err != EINVAL:
            raise UsbError(f"mounting {device} ({fstype}) failed: {os.strerror(err)}")
    raise UsbError(no_filesystem(device, missing))


def unmount(target: Path) -> bool:
    """Lazy umount2(MNT_DETACH): gone from the namespace now, released once nothing uses it.
    False if nothing was mounted there."""
    if _libc().umount2(str(target).encode(), ctypes.c_int(MNT_DETACH)) != 0:
        err = ctypes.get_errno()
        if err == 22:  # EINVAL: not a mount point
            return False
        raise OSError(err, f"unmounting {target}: {os.strerror(err)}")
    return True
