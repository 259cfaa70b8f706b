"""USB import through the network helper, on real loop devices and real filesystem images.

The images are built here (ext4 with `mkfs.ext4 -d`, FAT with `mkfs.vfat` + `mcopy`, a swap
signature with `mkswap`) holding a real ZIM of ../shared/data/zim, an OER pack in our manifest
format, a corrupt archive and a pack whose manifest does not match its files; each is attached
with `losetup` and detached by its own device afterwards. The helper runs as `appliance network
helper` as its unit does (not root, no supplementary group, CAP_NET_ADMIN and CAP_SYS_ADMIN
ambient; the device nodes are root's 0600, so it mounts what it cannot read),
in a mount namespace of its own whose mounts follow the host's (as systemd's PrivateMounts=
gives it) and an empty network namespace, with `usb_devices` naming exactly the loop devices
made here; `appliance content import --usb` runs as root, as IT staff would.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.content import catalog, library
from appliance.harness.process import REPO, wait_for
from appliance.lab.parts import write_toml
from appliance.network.client import HelperError, call, usb_drive
from appliance.network.verbs import VERBS
from tests.conftest import SHARED

pytestmark = pytest.mark.integration

ZIM = SHARED / "data" / "zim"
RAY = ZIM / "wikipedia_en_ray_charles_mini.zim"
CORRUPT = ZIM / "invalid" / "outofbounds_urlptrpos.zim"
# The helper's user (systemd's User=appliance): nobody, who owns nothing else here.
HELPER_UID = HELPER_GID = 65534


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout.strip()


def content_tree(top: Path) -> Path:
    """What a teacher's stick holds: a good ZIM, a corrupt one, a good pack, a tampered pack,
    and a file that is neither (ignored)."""
    top.mkdir()
    shutil.copy(RAY, top / "ray_charles.zim")
    shutil.copy(CORRUPT, top / "broken.zim")
    (top / "readme.txt").write_text("not content\n")
    for name in ("fractions", "tampered"):
        pack = top / name
        pack.mkdir()
        (pack / "index.html").write_text(f"<!doctype html><title>{name}</title><h1>Fractions</h1>"
                                         "<p>Halves and quarters.</p>")
        (pack / "worksheet.txt").write_text(f"{name}: 1/2 + 1/4 = ?\n")
        manifest = library.build_manifest(pack, name)
        (pack / "manifest.json").write_bytes(catalog.pack_manifest_json(manifest))
    # Changed after its manifest was written: the checksum no longer matches.
    (top / "tampered" / "worksheet.txt").write_text("tampered: 1/2 + 1/4 = 3/4 (answers!)\n")
    return top


@dataclass
class Drives:
    ext4: str
    vfat: str
    swap: str
    blank: str
    unlisted: str


@pytest.fixture(scope="module")
def drives(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drives]:
    work = tmp_path_factory.mktemp("usb")
    tree = content_tree(work / "stick")
    images = {name: work / f"{name}.img" for name in ("ext4", "vfat", "swap", "blank", "unlisted")}
    run("mkfs.vfat", "-n", "STICK", "-C", str(images["vfat"]), "8192")
    run("mcopy", "-s", "-i", str(images["vfat"]), *(str(p) for p in sorted(tree.iterdir())), "::")
    # ext4 keeps symlinks (FAT has none): a pack whose file points at a host file, with the
    # checksum of that file, as someone hoping a root import follows it would make it.
    escape = tree / "escape"
    escape.mkdir()
    (escape / "index.html").write_text("<!doctype html><title>x</title><a href=passwd>x</a>")
    (escape / "passwd").symlink_to("/etc/passwd")
    (escape / "manifest.json").write_bytes(catalog.pack_manifest_json(
        library.build_manifest(escape, "escape")))
    run("mkfs.ext4", "-q", "-F", "-L", "STICK", "-d", str(tree), str(images["ext4"]), "8M")
    for name in ("swap", "blank", "unlisted"):
        with images[name].open("wb") as f:
            f.truncate(2 << 20)
    run("mkswap", str(images["swap"]))
    attached: dict[str, str] = {}
    try:
        for name, image in images.items():
            attached[name] = device = run("losetup", "-f", "--show", str(image))
            # Stricter than udev's root:disk 0660 for /dev/sdX: the helper (in no group) must
            # mount a drive it has no read permission on, as mount(2) allows with CAP_SYS_ADMIN.
            os.chown(device, 0, 0)
            os.chmod(device, 0o600)
        yield Drives(**attached)
    finally:
        for device in attached.values():
            subprocess.run(["losetup", "-d", device], check=False, timeout=30)


@dataclass
class Pi:
    config: Path
    socket: Path
    helper: subprocess.Popen[bytes]
    log: Path

    def appliance(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "appliance", "--config", str(self.config), *args],
                              capture_output=True, text=True, timeout=120, cwd=REPO)

    def helper_mounts(self) -> str:
        return Path(f"/proc/{self.helper.pid}/mountinfo").read_text()


def device_number(device: str) -> str:
    rdev = os.stat(device).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def mounted_in(mountinfo: str, device: str) -> list[str]:
    number = device_number(device)
    return [line for line in mountinfo.splitlines() if line.split(" ")[2] == number]


def helper_command(config: Path) -> list[str]:
    """`appliance network helper` as its unit runs it: a user that is not root, in no
    supplementary group, with CAP_NET_ADMIN and CAP_SYS_ADMIN as ambient capabilities (setpriv
    execs)."""
    return ["setpriv", f"--reuid={HELPER_UID}", f"--regid={HELPER_GID}",
            "--clear-groups", "--inh-caps=+net_admin,+sys_admin",
            "--ambient-caps=+net_admin,+sys_admin", "--",
            sys.executable, "-m", "appliance", "--config", str(config), "network", "helper"]


@pytest.fixture
def pi(tmp_path: Path, drives: Drives) -> Iterator[Pi]:
    # The helper's own folders, where its user may write (pytest's are root's, 0700); short,
    # since a Unix socket path must stay under 108 bytes.
    run_dir = Path(tempfile.mkdtemp(prefix="usb-helper-"))
    run_dir.chmod(0o755)
    for sub in ("run", "state", "network"):
        (run_dir / sub).mkdir()
        os.chown(run_dir / sub, HELPER_UID, HELPER_GID)
    socket = run_dir / "run" / "helper.sock"
    config = run_dir / "appliance.toml"
    write_toml(config, {
        "appliance": {"id": "usb-test", "state_dir": str(run_dir / "state")},
        "content": {"root": str(tmp_path / "content")},
        "network": {"services": "direct", "render_dir": str(run_dir / "network"),
                    "access_point": "external",
                    "helper": {"socket": str(socket),
                               **{key: ["root"] for _args, key in VERBS.values()},
                               "usb_devices": [drives.ext4, drives.vfat, drives.swap,
                                               drives.blank]}}})
    log = tmp_path / "helper.log"
    with log.open("wb") as out:
        # Its own mount namespace (PrivateMounts=) and an empty network namespace. unshare and
        # setpriv exec: the pid is the helper's, and so is /proc/<pid>/mountinfo.
        helper = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "slave", "--net", *helper_command(config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    try:
        wait_for(lambda: socket.exists() or helper.poll() is not None, what="the helper's socket")
        assert helper.poll() is None, log.read_text()
        yield Pi(config, socket, helper, log)
    finally:
        helper.terminate()
        helper.wait(15)
        shutil.rmtree(run_dir, ignore_errors=True)


def test_import_from_an_ext4_stick_lists_the_good_items_and_refuses_the_bad(pi: Pi, drives: Drives):
    result = pi.appliance("content", "import", "--usb", drives.ext4, "--json")
    assert result.returncode == 1, result.stderr  # something was refused
    done = json.loads(result.stdout)
    assert (done["device"], done["filesystem"]) == (drives.ext4, "ext4")
    by_source = {r["source"].rsplit("/", 1)[-1]: r for r in done["results"]}
    assert set(by_source) == {"ray_charles.zim", "broken.zim", "fractions", "tampered", "escape"}
    assert by_source["ray_charles.zim"]["source"] == f"usb:{drives.ext4}/ray_charles.zim"
    assert by_source["fractions"]["added"] == "fractions"
    assert "added" in by_source["ray_charles.zim"]
    assert "refused" in by_source["broken.zim"]["error"]
    assert "checksum" in by_source["tampered"]["error"].lower()
    # nosymfollow: the link to /etc/passwd is not followed.
    assert "symbolic links" in by_source["escape"]["error"]
    assert "/proc/self/fd" not in json.dumps(done)

    listed = json.loads(pi.appliance("content", "list", "--json").stdout)
    items = {i["name"]: i for i in listed["items"]}
    assert set(items) == {by_source["ray_charles.zim"]["added"], "fractions"}
    assert all(i["state"] == "ok" for i in items.values())
    assert items["fractions"]["source"] == f"usb:{drives.ext4}/fractions"
    # Released: in the helper's namespace and here.
    assert mounted_in(pi.helper_mounts(), drives.ext4) == []
    assert mounted_in(Path("/proc/self/mountinfo").read_text(), drives.ext4) == []
    # Human output too, and a second import of the same stick is the same library.
    again = pi.appliance("content", "import", "--usb", drives.ext4)
    assert "REFUSED" in again.stdout and "now unmounted" in again.stdout
    listed = json.loads(pi.appliance("content", "list", "--json").stdout)
    assert {i["name"] for i in listed["items"]} == set(items)


def test_the_helper_mounts_a_drive_it_cannot_read(pi: Pi, drives: Drives):
    """No disk group (the unit has no SupplementaryGroups=): the helper's credentials cannot
    open the node, yet mount(2) takes the device (CAP_SYS_ADMIN; DeviceAllow= on a Pi)."""
    status = Path(f"/proc/{pi.helper.pid}/status").read_text()
    [groups] = [line for line in status.splitlines() if line.startswith("Groups:")]
    assert groups.split() == ["Groups:"], groups
    as_helper = subprocess.run(
        ["setpriv", f"--reuid={HELPER_UID}", f"--regid={HELPER_GID}", "--clear-groups", "--",
         sys.executable, "-c", f"open({drives.ext4!r}, 'rb')"],
        capture_output=True, text=True, timeout=30)
    assert as_helper.returncode != 0 and "PermissionError" in as_helper.stderr, as_helper.stderr
    with usb_drive(pi.socket, drives.ext4) as drive:
        assert drive.filesystem == "ext4"
        assert "ray_charles.zim" in os.listdir(drive.root)


def test_the_drive_is_read_only_noexec_and_only_ours_while_held(pi: Pi, drives: Drives):
    with usb_drive(pi.socket, drives.ext4) as drive:
        assert drive.filesystem == "ext4"
        assert sorted(os.listdir(drive.root)) == ["broken.zim", "escape", "fractions", "lost+found",
                                                  "ray_charles.zim", "readme.txt", "tampered"]
        [line] = mounted_in(pi.helper_mounts(), drives.ext4)
        options = set(line.split(" ")[5].split(","))
        assert {"ro", "nosuid", "nodev", "noexec", "nosymfollow"} <= options, line
        flags = os.statvfs(drive.root).f_flag
        assert flags & os.ST_RDONLY and flags & os.ST_NOEXEC and flags & os.ST_NOSUID
        with pytest.raises(OSError) as exc:
            (drive.root / "new.txt").write_text("x")
        assert exc.value.errno == errno.EROFS
        # Not in our mount namespace: only the fd reaches it.
        assert mounted_in(Path("/proc/self/mountinfo").read_text(), drives.ext4) == []
        # One drive at a time.
        with pytest.raises(HelperError, match="mounted already"), usb_drive(pi.socket, drives.vfat):
            pass
    assert mounted_in(pi.helper_mounts(), drives.ext4) == []


def test_a_caller_that_hangs_up_releases_the_drive(pi: Pi, drives: Drives):
    code = ("import sys, os; from pathlib import Path; from appliance.network.client import usb_drive\n"
            "held = usb_drive(Path(sys.argv[1]), sys.argv[2]); d = held.__enter__()\n"
            "print(os.listdir(d.root)); sys.stdout.flush(); os._exit(0)")
    result = subprocess.run([sys.executable, "-c", code, str(pi.socket), drives.ext4],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert "ray_charles.zim" in result.stdout, result.stderr
    wait_for(lambda: mounted_in(pi.helper_mounts(), drives.ext4) == [], timeout=5,
             what="the helper to unmount after the caller died")
    # And usb-unmount with nothing mounted says so.
    with pytest.raises(HelperError, match="no USB drive is mounted"):
        call(pi.socket, "usb-unmount")


def test_usb_unmount_frees_a_drive_another_caller_still_holds(pi: Pi, drives: Drives):
    with usb_drive(pi.socket, drives.ext4):
        assert call(pi.socket, "usb-unmount") == {"unmounted": drives.ext4}
        assert mounted_in(pi.helper_mounts(), drives.ext4) == []
        # The next caller may mount again at once.
        with usb_drive(pi.socket, drives.ext4) as second:
            assert "ray_charles.zim" in os.listdir(second.root)
    assert mounted_in(pi.helper_mounts(), drives.ext4) == []


def test_a_fat_stick(pi: Pi, drives: Drives):
    """FAT is what sticks come formatted as. A kernel without the vfat driver (this suite's own
    VM kernel lacks CONFIG_VFAT_FS; Debian's has it as a module) must get a clear refusal, not an
    errno; one with it imports the stick, files owned by the caller and not executable."""
    kernel_has_vfat = "vfat" in Path("/proc/filesystems").read_text().split() or \
        Path(f"/lib/modules/{os.uname().release}").is_dir()
    result = pi.appliance("content", "import", "--usb", drives.vfat, "--json")
    if not kernel_has_vfat:
        assert result.returncode == 1
        assert "no ext4, vfat or exfat filesystem on" in result.stderr, result.stderr
        assert "this kernel cannot mount vfat" in result.stderr, result.stderr
        assert mounted_in(pi.helper_mounts(), drives.vfat) == []
        return
    done = json.loads(result.stdout)
    assert done["filesystem"] == "vfat"
    added = {r["source"].rsplit("/", 1)[-1] for r in done["results"] if "added" in r}
    assert added == {"ray_charles.zim", "fractions"}, done
    with usb_drive(pi.socket, drives.vfat) as drive:
        st = (drive.root / "ray_charles.zim").stat()
        assert (st.st_uid, st.st_mode & 0o777) == (os.getuid(), 0o644)
    assert mounted_in(pi.helper_mounts(), drives.vfat) == []


@pytest.mark.parametrize(("which", "message"), [
    ("unlisted", "is not in [network.helper] usb_devices"),
    ("swap", "no ext4, vfat or exfat filesystem on /dev/loop"),
    ("blank", "no ext4, vfat or exfat filesystem on /dev/loop"),
    ("/dev/null", "/dev/null is not in [network.helper] usb_devices"),
    ("/dev/vda", "/dev/vda is not in [network.helper] usb_devices"),
    ("/etc/passwd", "device must be a path under /dev/"),
    ("/dev/../etc/passwd", "device must be a path under /dev/"),
    ("sda1", "device must be a path under /dev/"),
    ("/dev/sda1,uid=0", "device must be a path under /dev/"),
])
def test_refusals(pi: Pi, drives: Drives, which: str, message: str):
    device = getattr(drives, which) if not which.startswith("/") and which != "sda1" else which
    result = pi.appliance("content", "import", "--usb", device)
    assert result.returncode == 1
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    for name in ("ext4", "vfat", "swap", "blank"):
        assert mounted_in(pi.helper_mounts(), getattr(drives, name)) == []


def test_a_drive_mounted_elsewhere_is_refused(pi: Pi, drives: Drives, tmp_path: Path):
    """Mounted where the helper sees it (an automounter's /media/... reaches its namespace by
    propagation on a systemd host; here it is mounted in the helper's namespace directly, since
    a host without systemd as PID 1 may not propagate)."""
    point = tmp_path / "mnt"
    point.mkdir()
    inside = ("nsenter", "-t", str(pi.helper.pid), "-m")
    run(*inside, "mount", "-o", "ro", drives.ext4, str(point))
    try:
        result = pi.appliance("content", "import", "--usb", drives.ext4)
        assert result.returncode == 1
        assert "is already mounted" in result.stderr and str(point) in result.stderr, result.stderr
    finally:
        run(*inside, "umount", str(point))


def test_content_usb_lists_the_allowlisted_devices(pi: Pi, drives: Drives):
    listed = json.loads(pi.appliance("content", "usb", "--json").stdout)
    devices = {d["device"]: d for d in listed}
    assert set(devices) == {drives.ext4, drives.vfat, drives.swap, drives.blank}
    assert devices[drives.ext4]["size"] == 8 << 20
    assert devices[drives.ext4]["mounted"] == ""


def test_a_full_library_disk_refuses_the_archive_and_keeps_the_library_as_it_was(
        pi: Pi, drives: Drives, tmp_path: Path):
    content = tmp_path / "content"
    content.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(content))
    try:
        done = json.loads(pi.appliance("content", "import", "--usb", drives.ext4, "--json").stdout)
        by_source = {r["source"].rsplit("/", 1)[-1]: r for r in done["results"]}
        assert "not enough free space" in by_source["ray_charles.zim"]["error"]
        assert by_source["fractions"]["added"] == "fractions"  # small enough, still imported
        listed = json.loads(pi.appliance("content", "list", "--json").stdout)
        assert [i["name"] for i in listed["items"]] == ["fractions"]
        assert not any((content / "tmp").iterdir())  # no half-copied file left behind
        assert mounted_in(pi.helper_mounts(), drives.ext4) == []
    finally:
        run("umount", str(content))


def test_a_restarted_helper_clears_a_leftover_mount(pi: Pi, drives: Drives):
    """Without PrivateMounts= (a helper started by hand) a killed helper's mount outlives it:
    the next one unmounts it at start. Here both run in one mount namespace, kept by a holder."""
    pi.helper.terminate()
    pi.helper.wait(15)
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "slave", "--net",
                               "sleep", "600"], start_new_session=True)
    helpers: list[subprocess.Popen[bytes]] = []
    # Popen returns before unshare(2) ran: until then nsenter would enter this namespace, and
    # the helpers' mounts would land (and stay) here.
    wait_for(lambda: all(os.readlink(f"/proc/{holder.pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}")
                         for ns in ("mnt", "net")), what="the holder's namespaces")

    def start_helper() -> subprocess.Popen[bytes]:
        pi.socket.unlink(missing_ok=True)
        with pi.log.open("ab") as out:
            proc = subprocess.Popen(
                ["nsenter", "-t", str(holder.pid), "-m", "-n", *helper_command(pi.config)],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        helpers.append(proc)
        wait_for(lambda: pi.socket.exists() or proc.poll() is not None, what="the helper's socket")
        assert proc.poll() is None, pi.log.read_text()
        return proc

    held = Path(f"/proc/{holder.pid}/mountinfo")
    try:
        first = start_helper()
        with usb_drive(pi.socket, drives.ext4):
            first.kill()
            first.wait(15)
            assert mounted_in(held.read_text(), drives.ext4), "the mount should outlive a killed helper"
        start_helper()
        assert mounted_in(held.read_text(), drives.ext4) == []
        assert "unmounted a leftover USB mount" in pi.log.read_text()
        with usb_drive(pi.socket, drives.ext4) as drive:  # and it mounts again
            assert "ray_charles.zim" in os.listdir(drive.root)
    finally:
        for proc in (*helpers, holder):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(15)


def test_a_folder_import_takes_the_same_path_and_the_arguments_are_checked(tmp_path: Path):
    tree = content_tree(tmp_path / "stick")
    config = tmp_path / "appliance.toml"
    write_toml(config, {"appliance": {"id": "folder-test", "state_dir": str(tmp_path / "state")},
                        "content": {"root": str(tmp_path / "content")},
                        "network": {"helper": {"socket": str(tmp_path / "no-helper.sock")}}})

    def appliance(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "appliance", "--config", str(config), *args],
                              capture_output=True, text=True, timeout=120, cwd=REPO)

    result = appliance("content", "import", str(tree), "--json")
    assert result.returncode == 1
    outcome = {Path(r["source"]).name: ("added" in r) for r in json.loads(result.stdout)}
    assert outcome == {"ray_charles.zim": True, "fractions": True, "broken.zim": False,
                       "tampered": False}
    for args in ((), (str(tree), "--usb", "/dev/sda1")):
        refused = appliance("content", "import", *args)
        assert refused.returncode == 2 and "give either FOLDER or --usb DEVICE" in refused.stderr
    # No helper running: a clear message, not a traceback.
    down = appliance("content", "import", "--usb", "/dev/sda1")
    assert down.returncode == 1 and "network helper at" in down.stderr and "unreachable" in down.stderr
    assert "Traceback" not in down.stderr
