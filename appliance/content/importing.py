"""Importing content from a folder or a USB drive (`appliance content import FOLDER | --usb DEV`).

What is imported from the top of the folder: every `.zim` (or split `.zimaa`, ...) and every
sub-folder with a `manifest.json` (an OER pack in our manifest format). Each goes through the
library's own add path, so each is verified before it is listed (a ZIM's header, checksum and a
sample of entries; every file of a pack against its manifest's SHA-256) and is copied into a
temporary file of the store first: a drive pulled out or a full disk mid-copy leaves the library
as it was, and that one item is reported refused.

A USB drive is mounted by the network helper (`usb-mount`, `appliance.network.client.usb_drive`),
never by us: read-only, in the helper's mount namespace, handed over as a directory fd; it is
unmounted when `import_usb` returns or raises. The console can later drive the same function.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.content import library
from appliance.content.store import ContentStore, StoreError

# How one found path is added: (store, path, origin shown for the item) -> the listed item.
Adder = Callable[[ContentStore, Path, str], library.Item]


def add_found(store: ContentStore, path: Path, origin: str) -> library.Item:
    """The library's add for a found path, without progress output."""
    if path.is_dir():
        return library.add_pack(store, path, origin=origin)
    return library.add_zim(store, path, origin=origin)


def candidates(folder: Path) -> list[Path]:
    """What an import takes from `folder`, in name order (hidden names skipped)."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        is_zim = path.is_file() and (path.suffix == ".zim" or path.name.endswith(".zimaa"))
        is_pack = path.is_dir() and (path / "manifest.json").is_file()
        if is_zim or is_pack:
            found.append(path)
    return found


def import_folder(store: ContentStore, folder: Path, *, add: Adder = add_found,
                  shown_as: str | None = None) -> list[dict[str, str]]:
    """Add every candidate of `folder`; one result per candidate: {"source", "added": name} or
    {"source", "error": why}. `shown_as` replaces the folder in sources and items' origin (a
    drive's /proc/self/fd/N means nothing to a reader)."""
    results: list[dict[str, str]] = []
    try:
        found = candidates(folder)
    except OSError as exc:
        return [{"source": shown_as or str(folder), "error": f"cannot read it: {exc.strerror or exc}"}]
    for path in found:
        source = f"{shown_as}/{path.relative_to(folder)}" if shown_as else str(path)
        try:
            item = add(store, path, source)
            results.append({"source": source, "added": item.name})
        except (library.LibraryError, StoreError) as exc:
            why = str(exc).replace(str(folder), shown_as or str(folder))
            results.append({"source": source, "error": why})
        except OSError as exc:  # the drive went away, an unreadable file
            results.append({"source": source, "error": f"cannot read it: {exc.strerror or exc}"})
    return results


def import_usb(socket: Path, store: ContentStore, device: str, *,
               add: Adder = add_found) -> dict[str, Any]:
    """Have the helper mount `device`, import its top folder, release the drive (always).
    {"device", "filesystem", "results": [...]}; HelperError (from the network client) when the
    helper refuses the device, with its reason."""
    from appliance.network.client import usb_drive

    with usb_drive(socket, device) as drive:
        results = import_folder(store, drive.root, add=add, shown_as=f"usb:{drive.device}")
    return {"device": drive.device, "filesystem": drive.filesystem, "results": results}


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def usb_candidates(globs: tuple[str, ...], *, sys_block: Path = Path("/sys/class/block"),
                   mountinfo: Path = Path("/proc/self/mountinfo")) -> list[dict[str, Any]]:
    """The block devices matching `globs` (`[network.helper] usb_devices`) that hold a medium, as
    sysfs shows them: {"device", "size" (bytes), "removable", "model", "mounted" (a mount point
    or "")}."""
    from appliance.network import usb

    mounted = usb.mounted_numbers(_read(mountinfo))
    found = []
    for node in sorted(sys_block.iterdir()):
        device = f"/dev/{node.name}"
        if not usb.allowlisted(device, globs):
            continue
        disk = node.resolve().parent if (node / "partition").exists() else node
        major, _, minor = _read(node / "dev").partition(":")
        number = (int(major), int(minor)) if major.isdigit() and minor.isdigit() else (-1, -1)
        sectors = _read(node / "size")
        size = int(sectors) * 512 if sectors.isdigit() else 0
        if size == 0:  # a card reader without a card, a loop device with nothing attached
            continue
        found.append({"device": device, "size": size,
                      "removable": _read(disk / "removable") == "1",
                      "model": _read(disk / "device" / "model"),
                      "mounted": mounted.get(number, "")})
    return found
