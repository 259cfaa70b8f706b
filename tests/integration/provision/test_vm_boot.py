"""A copy of the amd64 image boots in a VM (QEMU, software emulation) as a flashed Pi would:
IT staff's firstboot.toml on the FAT partition, real systemd starting our hardened units, first
boot enrolling over HTTPS with a one-time token, and the Pi appearing on the console.

The VM's only network is QEMU's user networking with `restrict=on`: it reaches nothing but the
two addresses forwarded to this test's console (HTTPS front) and broker on loopback. A test-only
unit, added to the copy (never to the image), waits for the agent, writes what systemd says to a
second serial port and powers the VM off. The VM's second NIC is the classroom's `wlan0` (no
radio in a VM: hostapd is the one unit that cannot start), a tap device in a namespace of the
test's where a phone takes a DHCP lease and asks the Pi's DNS."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import config as config_module
from appliance.fleet.pki import CertificateAuthority
from appliance.harness.process import wait_for
from appliance.store import open_db
from tests.integration.fleet.test_fleet_loop import device, wait_state
from tests.integration.provision.conftest import CONSOLE_IN_VM
from tests.integration.provision.test_enrollment import Site

pytestmark = pytest.mark.integration
SECTOR = 512
DEVICE = "vmtest-main"
GUESTFWD = Path(__file__).with_name("guestfwd.py")
BOOT_TIMEOUT = 480  # software emulation on 2 shared cores: the boot itself takes about a minute

CLASSROOM_MAC = "52:54:00:ce:00:01"
CLASSROOM_LINK = f"""[Match]
MACAddress={CLASSROOM_MAC}
[Link]
Name=wlan0
"""
# Waits (at most 5 minutes) for first boot to finish and the agent to run, then (at most 2
# more) for the test's phone to hold a lease, then writes systemd's view to ttyS1 and powers
# off. The VM's clock is the host's.
REPORT_SCRIPT = """#!/bin/sh
for i in $(seq 1 300); do
  state=$(systemctl show -P ActiveState appliance-firstboot.service)
  [ "$state" = active ] || [ "$state" = failed ] && systemctl -q is-active appliance-agent.service && break
  sleep 1
done
for i in $(seq 1 120); do
  grep -q 10.42.0 /var/lib/appliance/network/dnsmasq.leases 2>/dev/null && break
  sleep 1
done
sleep 75  # the phone asks DNS and accepts the terms; the agent sends its first sample (60 s)
{
  echo "== leases"; cat /var/lib/appliance/network/dnsmasq.leases
  echo "== addresses"; ip -br addr show dev wlan0
  echo "== sysctl"; cat /proc/sys/net/ipv4/ip_forward
  echo "== ruleset"; nft list tables
  echo "== failed"; systemctl list-units --failed --no-legend --plain --full
  echo "== units"; systemctl list-units 'appliance-*' --all --no-legend --plain --full
  echo "== firstboot"; journalctl -b -u appliance-firstboot.service --no-pager -o cat
  echo "== journal"
  for unit in $(systemctl list-units --failed --no-legend --plain | cut -d' ' -f1) \
              $(systemctl list-units --state=activating --no-legend --plain | cut -d' ' -f1) \
              appliance-dnsmasq.service appliance-network-helper.service appliance-portal.service \
              appliance-filter.service; do
    echo "-- $unit"; journalctl -b -u "$unit" --no-pager -o cat | tail -n 15
  done
  echo "== processes"; systemctl status appliance-filter.service --no-pager -n 0 | head -n 20
  ps -eo pid,ppid,etime,args | grep -v grep | grep -E 'appliance|nft|conntrack|ip ' | cut -c1-160
  echo "== filter-post"; systemctl show -p ExecStartPost --value appliance-filter.service
  echo "== times"; systemd-analyze time --no-pager
  echo "== boot"; ls /boot/firmware
  echo "== end"
} > /dev/ttyS1 2>&1
systemctl poweroff --no-block
"""
REPORT_UNIT = """[Unit]
Description=Test only: report the boot on ttyS1, then power off
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vm-report
[Install]
WantedBy=multi-user.target
"""


def run(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=300,
                          input=stdin).stdout


class TlsFront:
    """The console's HTTPS in front of its plain-HTTP listener, as the console role's reverse
    proxy is: a certificate from the district's CA, for the console's address in the VM."""

    def __init__(self, ca: CertificateAuthority, backend_port: int) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(ca.dir / "console-web.crt", ca.dir / "console-web.key")
        self.backend = backend_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(conn,), daemon=True).start()

    def _pipe(self, conn: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
            backend = socket.create_connection(("127.0.0.1", self.backend))
        except OSError:
            conn.close()
            return

        def copy(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    s.close()

        threading.Thread(target=copy, args=(backend, tls), daemon=True).start()
        copy(tls, backend)

    def close(self) -> None:
        self.listener.close()


def accept(ns: str) -> subprocess.CompletedProcess[str]:
    """POST the portal's "Accept" from the phone: the status and where it leads."""
    return subprocess.run(
        ["ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-m", "30",
         "-w", "%{http_code} %{redirect_url}", "-X", "POST",
         "-H", "Origin: http://classroom.internal",
         "--resolve", "classroom.internal:80:10.42.0.1",
         "http://classroom.internal/captive/accept"],
        capture_output=True, text=True, timeout=60)


def partition(image: Path, index: int) -> tuple[int, int]:
    """(offset, size) in bytes of partition `index` (0-based)."""
    part = json.loads(run("sfdisk", "--json", str(image)))["partitiontable"]["partitions"][index]
    return part["start"] * SECTOR, part["size"] * SECTOR


def add_report_unit(image: Path, work: Path) -> None:
    """Write the test-only unit, and the link file naming the classroom NIC wlan0, into the
    copy's root filesystem (debugfs, no mount)."""
    offset, size = partition(image, 1)
    root = work / "root.ext4"
    run("dd", f"if={image}", f"of={root}", "bs=4M", "iflag=skip_bytes,count_bytes",
        f"skip={offset}", f"count={size}", "conv=sparse", "status=none")
    (work / "vm-report").write_text(REPORT_SCRIPT)
    (work / "vm-report.service").write_text(REPORT_UNIT)
    (work / "classroom.link").write_text(CLASSROOM_LINK)
    requests = "\n".join([
        f"write {work / 'vm-report'} /usr/local/sbin/vm-report",
        "sif /usr/local/sbin/vm-report mode 0100755",
        f"write {work / 'vm-report.service'} /etc/systemd/system/vm-report.service",
        "symlink /etc/systemd/system/multi-user.target.wants/vm-report.service "
        "/etc/systemd/system/vm-report.service",
        f"write {work / 'classroom.link'} /etc/systemd/network/10-classroom.link",
    ]) + "\n"
    run("debugfs", "-w", "-f", "-", str(root), stdin=requests)
    run("dd", f"if={root}", f"of={image}", "bs=4M", "oflag=seek_bytes", f"seek={offset}",
        "conv=notrunc,sparse", "status=none")
    root.unlink()


@pytest.fixture
def site(tmp_path, start) -> Iterator[Site]:
    s = Site(tmp_path, start, broker_names=(CONSOLE_IN_VM,), offline_after=120.0)
    yield s
    s.stop()


@pytest.fixture
def phone_netns() -> Iterator[tuple[str, str]]:
    """(namespace, tap device): the tap is made here, QEMU attaches it, the test moves it in."""
    tag = secrets.token_hex(3)
    ns, tap = f"cevm{tag}", f"cevmtap{tag}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], check=True)
    subprocess.run(["ip", "link", "set", tap, "up"], check=True)  # NO-CARRIER until QEMU holds it
    yield ns, tap
    subprocess.run(["ip", "link", "del", tap], check=False, capture_output=True)
    subprocess.run(["ip", "-n", ns, "link", "del", tap], check=False, capture_output=True)
    subprocess.run(["ip", "netns", "del", ns], check=False)


def test_a_flashed_image_boots_enrolls_and_appears_on_the_console(tmp_path, image, site,
                                                                   district_ca, phone_netns):
    ns, tap = phone_netns
    issued = site.token(DEVICE)
    site.run()
    front = TlsFront(district_ca, site.web_port)
    assert site.broker is not None

    vm = tmp_path / "vm"
    vm.mkdir()
    disk = vm / "disk.img"
    run("cp", "--sparse=always", str(image), str(disk))
    boot_offset, _ = partition(disk, 0)
    fat = f"{disk}@@{boot_offset}"
    # What IT staff do on any computer: edit firstboot.toml on the card's FAT partition.
    (vm / "firstboot.toml").write_text(f"""
site = "vmtest"
building = "main"
name = "VM test building"
console_url = "https://{CONSOLE_IN_VM}"
ca_fingerprint = "{issued['ca_fingerprint']}"
enrollment_token = "{issued['token']}"

[uplink]
type = "ethernet"

[hotspot]
ssid = "Classroom"
passphrase = "vm-hotspot-secret"
country = "US"
""")
    run("mcopy", "-o", "-i", fat, str(vm / "firstboot.toml"), "::/firstboot.toml")
    for name in ("vmlinuz", "initrd.img", "cmdline.txt"):
        run("mcopy", "-i", fat, f"::/{name}", str(vm / name))
    add_report_unit(disk, vm)

    # The image's own cmdline.txt (root=PARTUUID=...), the serial port as the system console,
    # and eth0 for the uplink (the Pi's name; firstboot's ifupdown stanza names it).
    cmdline = (vm / "cmdline.txt").read_text().strip() + " console=ttyS0 net.ifnames=0 panic=-1"
    forwards = ",".join(
        f"guestfwd=tcp:{CONSOLE_IN_VM}:{vm_port}-cmd:{sys.executable} {GUESTFWD} 127.0.0.1 {port}"
        for vm_port, port in ((443, front.port), (8883, site.mqtt_port)))
    serial, report = vm / "serial.log", vm / "report.log"
    qemu = subprocess.Popen(
        [shutil.which("qemu-system-x86_64") or "qemu-system-x86_64", "-accel", "tcg", "-m", "1024",
         "-smp", "2", "-kernel", str(vm / "vmlinuz"), "-initrd", str(vm / "initrd.img"),
         "-append", cmdline, "-drive", f"file={disk},format=raw,if=virtio",
         "-nic", f"user,restrict=on,model=virtio-net-pci,{forwards}",
         "-netdev", f"tap,id=classroom,ifname={tap},script=no,downscript=no",
         "-device", f"virtio-net-pci,netdev=classroom,mac={CLASSROOM_MAC}",
         "-display", "none", "-no-reboot", "-serial", f"file:{serial}", "-serial", f"file:{report}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    try:
        # QEMU holds the tap now; in the phone's namespace it is the phone's Wi-Fi.
        # A tap nobody holds has no carrier; QEMU's open gives it one.
        wait_for(lambda: qemu.poll() is not None or b"NO-CARRIER" not in subprocess.run(
            ["ip", "link", "show", tap], capture_output=True).stdout, what="QEMU on the tap")
        subprocess.run(["ip", "link", "set", tap, "netns", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", tap, "up"], check=True)
        wait_state(site.config, DEVICE, "online", timeout=BOOT_TIMEOUT)
        online_after = time.monotonic() - started
        # A phone joins the classroom: a lease from the Pi's dnsmasq, then the Pi's DNS (the
        # filter on port 53) answers the portal's name.
        dhcp = subprocess.run(["ip", "netns", "exec", ns, "busybox", "udhcpc", "-f", "-q", "-n",
                               "-t", "40", "-T", "3", "-i", tap, "-s", "/bin/true"],
                              capture_output=True, text=True, timeout=120)
        leased = re.search(r"lease of (10\.42\.0\.\d+) obtained", dhcp.stdout + dhcp.stderr)
        answer = accepted = None
        if leased:  # else the VM's report (after its own wait) says why
            subprocess.run(["ip", "-n", ns, "addr", "add", f"{leased.group(1)}/24", "dev", tap],
                           check=True)
            answer = subprocess.run(["ip", "netns", "exec", ns, "dig", "+short", "+time=3",
                                     "+tries=5", "@10.42.0.1", "classroom.internal"],
                                    capture_output=True, text=True, timeout=60)
            # ...and accepts the terms on the portal: the portal asks the helper (session-accept).
            # The helper may still be bringing the network up under emulation (503 meanwhile):
            # the phone tries again, as a student tapping "Accept" again would.
            accepted = accept(ns)
            deadline = time.monotonic() + 90
            while accepted.stdout.startswith("503") and time.monotonic() < deadline:
                time.sleep(3)
                accepted = accept(ns)

        wait_for(lambda: qemu.poll() is not None, timeout=420, what="the VM to report and power off")
    finally:
        if qemu.poll() is None:
            qemu.kill()
        _, errors = qemu.communicate(timeout=30)
        front.close()
    console_log = serial.read_text(errors="replace")
    text = report.read_text(errors="replace")
    assert "== end" in text, f"no report from the VM ({errors}); its console said:\n{console_log[-4000:]}"
    sections = dict(part.split("\n", 1) for part in text.split("== ")[1:])

    assert leased, dhcp.stderr[-500:] + text
    assert answer is not None and answer.stdout.split() == ["10.42.0.1"], answer
    assert accepted is not None and accepted.stdout == "302 http://classroom.internal/captive/done", (
        accepted, sections["journal"])
    assert leased.group(1) in sections["leases"], sections["leases"]
    assert "10.42.0.1/24" in sections["addresses"], sections["addresses"]
    assert sections["sysctl"].strip() == "1"  # forwarding for accepted phones
    assert "inet classroom" in sections["ruleset"], sections["ruleset"]

    # First boot applied firstboot.toml, enrolled and removed the file (it held secrets).
    assert "firstboot.toml" not in sections["boot"], sections["boot"]
    # Every unit of the image started, under the hardening of its unit file, on real systemd;
    # but hostapd: a VM has no radio (its journal says nl80211 found no wireless device).
    failed = [line.split()[0] for line in sections["failed"].splitlines() if line.strip()]
    assert failed in ([], ["appliance-hostapd.service"]), sections["failed"] + sections["journal"]
    units = {line.split()[0]: line.split()[1:4] for line in sections["units"].splitlines() if line}
    for unit in ("appliance-firstboot.service", "appliance-agent.service",
                 "appliance-portal.service", "appliance-filter.service",
                 "appliance-devices.service", "appliance-network-helper.service",
                 "appliance-dnsmasq.service", "appliance-captive.service",
                 "appliance-unbound.service", "appliance-unbound-baseline.service"):
        assert units.get(unit, [None, "absent"])[1] == "active", (unit, sections["units"])
    # The filter told the helper it is up (`dns-fallback off --wait`, the helper may come later).
    assert re.search(r"code=exited ; status=0\b", sections["filter-post"]), (
        sections["filter-post"] + sections["journal"])

    # The console has it, under the name from firstboot.toml, with the capabilities' summaries:
    # the phone counted by the inventory, its DNS queries by the filter. (Health samples wait
    # for a trusted clock, which a VM with no time source never has: `"clock": "unknown"`.)
    seen = device(site.config, DEVICE)
    assert seen is not None and seen["name"] == "VM test building" and seen["agent_version"], seen
    db = open_db(config_module.load(site.config).console_database_path)
    summaries = {row["section"]: json.loads(row["data"]) for row in db.query(
        "SELECT section, data FROM device_summaries WHERE device_id = ?", [DEVICE])}
    assert {"agent", "network", "filter", "devices", "content"} <= set(summaries), summaries
    assert summaries["devices"]["now"] >= 1, summaries["devices"]
    assert summaries["filter"]["active"] and summaries["filter"]["queries"] > 0, summaries["filter"]
    print(f"online {online_after:.0f} s after power-on")
