"""The library's drive fails in the middle of an add: a clear error, and the library as it was.

A real drive: ext4 on a loop device, mounted at the content root (`require_mount`). Its backing
file is sparse and lives on a small tmpfs of the test's own, so `pull()` (filling that tmpfs)
makes every write that reaches the device fail, as a pulled or dying USB drive does: the kernel
reports the error to the writer at the latest at fsync (the loop driver passes the backing
file's ENOSPC through where a pulled drive gives EIO). Afterwards the drive is
"plugged back" (the tmpfs freed, the filesystem checked and mounted again) and must hold no
blob and no item of the failed add, nothing a restart's clean-up would not remove.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.content import demo, library, schema
from appliance.content.store import MARKER, ContentStore
from appliance.store import migrate, open_db
from tests.conftest import SHARED

pytestmark = pytest.mark.integration

RAY = SHARED / "data" / "zim" / "wikipedia_en_ray_charles_mini.zim"


def run(*cmd: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], check=check, capture_output=True, text=True, timeout=120)


@dataclass
class Drive:
    backing: Path  # the tmpfs holding the device's backing file
    image: Path
    device: str
    root: Path  # the mount point: the library's content root

    def pull(self) -> None:
        """Fill the backing tmpfs: from now on the device cannot store a new block."""
        with (self.backing / "filler").open("wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
            except OSError:
                pass

    def plug_back(self) -> None:
        (self.backing / "filler").unlink()
        run("umount", self.root, check=False)
        if os.path.ismount(self.root):
            run("umount", "-l", self.root)
        fsck = run("e2fsck", "-fy", self.device, check=False)
        assert fsck.returncode in (0, 1, 2), fsck.stdout + fsck.stderr  # 1, 2: errors corrected
        run("mount", "-t", "ext4", self.device, self.root)


@pytest.fixture
def drive(tmp_path: Path) -> Iterator[Drive]:
    backing = tmp_path / "backing"
    root = tmp_path / "content"
    backing.mkdir()
    root.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=40m,mode=0700", "tmpfs", backing)
    device = ""
    try:
        image = backing / "drive.img"
        run("truncate", "-s", "512M", image)  # sparse: far more than the tmpfs can hold
        run("mkfs.ext4", "-q", "-F", "-E", "nodiscard", image)
        device = run("losetup", "--find", "--show", image).stdout.strip()
        run("mount", "-t", "ext4", device, root)
        yield Drive(backing, image, device, root)
    finally:
        if os.path.ismount(root):
            run("umount", "-l", root, check=False)
        if device:
            run("losetup", "-d", device, check=False)
        run("umount", "-l", backing, check=False)


def big_archive(path: Path) -> Path:
    """An archive of about 48 MB (random bytes: stored as they are), more than the tmpfs holds."""
    pages = [demo.Page("index.html", "Film", '<!doctype html><html lang="en"><title>Film</title>'
                       '<video src="film.webm" controls></video></html>'),
             demo.Page("film.webm", "film", os.urandom(48 << 20), "video/webm", front=False)]
    return demo.build_zim(path, pages, main="index.html", title="Film", name="film", fulltext=False)


def test_a_drive_that_fails_mid_copy_stops_the_add_and_keeps_the_library(drive: Drive, tmp_path: Path):
    db = open_db(tmp_path / "appliance.db")
    migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    store = ContentStore(drive.root, db, require_mount=True)
    first = library.add_zim(store, RAY)  # the library already holds an archive
    source = big_archive(tmp_path / "film.zim")
    copied = 0

    def progress(n: int) -> None:
        nonlocal copied
        copied += n
        if copied >= 8 << 20 and not (drive.backing / "filler").exists():
            drive.pull()

    with pytest.raises(library.LibraryError) as failed:
        library.add_zim(store, source, progress=progress)
    message = str(failed.value)
    # A pulled USB drive reports EIO; the loop driver passes its backing file's ENOSPC through.
    assert message.startswith(f"cannot copy into {drive.root}: "), message
    assert message.endswith(("Input/output error", "No space left on device")), message
    assert [i.name for i in library.items(db)] == [first.name]
    assert db.execute("SELECT count(*) FROM content_blobs").fetchone()[0] == 1

    drive.plug_back()
    store.clean_tmp()
    kept = sorted(str(p.relative_to(drive.root)) for p in drive.root.rglob("*") if p.is_file())
    assert kept == sorted([MARKER, f"blobs/{first.sha256[:2]}/{first.sha256}"]), kept
    assert library.verify(store, first.name) is None  # the archive already there is unharmed
    # And the drive works again (an archive the small backing tmpfs can hold).
    assert library.add_zim(store, demo.build_demo_zim(tmp_path / "demo.zim")).state == "ok"
    db.conn.close()
