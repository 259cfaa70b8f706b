"""The device inventory under 1,000 devices: dnsmasq + our DHCP hook + `appliance devices serve`,
against dnsmasq alone (the peer), in a virtual classroom.

One namespace (`fleet`, one isolated port of the classroom's bridge) plays every device: it
sends DISCOVER and REQUEST for N MACs (locally administered, as phones use) with the exact
option-55 orders and vendor classes of six OS families (`MIX`), one lease at a time, and
times each DISCOVER -> ACK. Packets are built by `appliance.harness.dhcpclient` (the same bytes
scapy would send; replies are broadcast, since the namespace's interface has none of those
MACs). The pool is a /21 and `dhcp-lease-max` is raised past N.

Two runs with fresh lease files and MAC ranges:

1. peer: dnsmasq without a `dhcp-script`;
2. us: dnsmasq with our hook (as nobody, into a spool) and the inventory service running.

Prints lease latency (median, p95, max) and total time for both and their ratio; for us, how
many of the N devices the inventory shows and how many with the expected kind and OS, the time
from the last ACK until the inventory shows all, the service's CPU seconds and its peak RSS.
Run as root:

    .venv/bin/python bench/devices.py [--devices 1000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance import config as config_module
from appliance.devices.spool import HOOK
from appliance.harness import dhcpclient
from appliance.harness.classroom import Classroom
from appliance.harness.process import REPO

SUBNET = "10.77.0.0/21"
FIRST, LAST = "10.77.0.10", "10.77.7.250"

# (option 55, vendor class, host name, expected kind, expected OS): lists as in
# appliance/devices/fingerprint.py (../shared/research/portal_mdns.md §3.4).
MIX: tuple[tuple[str, str, str, str, str], ...] = (
    ("1,3,6,15,26,28,51,58,59,43,114,108", "android-dhcp-14", "", "phone", "android"),
    ("1,3,6,15,26,28,51,58,59,43", "android-dhcp-11", "", "phone", "android"),
    ("1,121,3,6,15,108,114,119,252", "", "iPhone", "phone", "ios"),
    ("1,121,3,6,15,108,114,119,252,95,44,46", "", "MacBook-Air", "laptop", "macos"),
    ("1,3,6,15,31,33,43,44,46,47,119,121,249,252", "MSFT 5.0", "DESKTOP-7Q1", "laptop", "windows"),
    ("1,121,33,3,6,12,15,26,28,51,54,58,59,119,252", "", "", "chromebook", "chromeos"),
)


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_leases(room: Classroom, ns_name: str, base_mac: str, n: int) -> list[float]:
    """N leases from the fleet namespace, one at a time; the DISCOVER -> ACK seconds of each."""
    code = r"""
import json, sys, time
from appliance.harness import dhcpclient as d
base, n, mix = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
sock = d._socket("wlan0")
out = []
for i in range(n):
    prl, vendor, host = mix[i % len(mix)][:3]
    started = time.perf_counter()
    try:
        d.lease(sock, d._nth_mac(base, i), prl=tuple(int(x) for x in prl.split(",")),
                vendor_class=vendor, hostname=f"{host}-{i}" if host else "", timeout=6)
        out.append(time.perf_counter() - started)
    except ValueError:
        out.append(-1.0)
print(json.dumps(out))
"""
    ns = room.net[ns_name]
    result = ns.run(sys.executable, "-c", code, base_mac, str(n), json.dumps(MIX), timeout=3600)
    times: list[float] = json.loads(result.stdout)
    return times


def dnsmasq(room: Classroom, workdir: Path, name: str, n: int, spool: Path | None
            ) -> subprocess.Popen[bytes]:
    args = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
            "--interface=wlan0", "--bind-interfaces", f"--dhcp-range={FIRST},{LAST},255.255.248.0,12h",
            f"--dhcp-lease-max={n * 2 + 100}", f"--dhcp-leasefile={workdir / f'{name}.leases'}",
            # No ping check before an offer (dnsmasq waits up to 3 s per new address for an
            # echo): the same in both runs, and it would dominate 1,000 sequential leases.
            "--no-ping", "--log-facility=/dev/null"]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if spool is not None:
        args += [f"--dhcp-script={HOOK}", "--dhcp-scriptuser=nobody", "--script-on-renewal"]
        env["DEVICES_SPOOL"] = str(spool)
    proc = room.start_process(room.pi, *args, log=workdir / f"{name}-dnsmasq.log", env=env)
    time.sleep(0.5)
    return proc


def summary(times: list[float]) -> dict[str, float]:
    ok = sorted(t for t in times if t >= 0)
    return {"ok": len(ok), "failed": len(times) - len(ok),
            "median_ms": statistics.median(ok) * 1000 if ok else 0.0,
            "p95_ms": ok[int(len(ok) * 0.95) - 1] * 1000 if ok else 0.0,
            "max_ms": ok[-1] * 1000 if ok else 0.0, "total_s": sum(ok)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--devices", type=int, default=1000)
    args = p.parse_args()
    n = args.devices
    workdir = Path(tempfile.mkdtemp(prefix="bench-devices-"))
    spool = Path(tempfile.mkdtemp(prefix="bench-devices-spool-"))
    spool.chmod(0o1777)  # the hook runs as nobody
    try:
        with Classroom(phones=0, management=False, subnet4=SUBNET, workdir=workdir / "room") as room:
            room.add_phone("fleet", mac="02:be:00:00:00:01")
            fleet = "fleet"

            # 1. the peer: dnsmasq alone.
            peer_proc = dnsmasq(room, workdir, "peer", n, None)
            peer = summary(run_leases(room, fleet, "02:be:10:00:00:00", n))
            peer_proc.terminate()
            peer_proc.wait(10)

            # 2. us: dnsmasq + hook + the inventory service.
            cfg_path = workdir / "appliance.toml"
            cfg_path.write_text(config_module.dump_toml({
                "appliance": {"id": "bench", "state_dir": str(workdir / "state")},
                "devices": {"spool_dir": str(spool), "interface": "wlan0",
                            "max_devices": max(5000, 2 * n), "open_firewall": False},
            }))
            service = room.start_process(room.pi, sys.executable, "-m", "appliance", "--config",
                                         str(cfg_path), "devices", "serve",
                                         log=workdir / "service.log")
            time.sleep(2)
            cpu_before = cpu_seconds(service.pid)
            ours_proc = dnsmasq(room, workdir, "ours", n, spool)
            base = "02:be:20:00:00:00"
            ours = summary(run_leases(room, fleet, base, n))
            acked = time.monotonic()
            expected = {dhcpclient._nth_mac(base, i): MIX[i % len(MIX)][3:] for i in range(n)}

            def inventory() -> dict[str, tuple[str, str]]:
                out = subprocess.run([sys.executable, "-m", "appliance", "--config",
                                      str(cfg_path), "devices", "list", "--all", "--json"],
                                     capture_output=True, text=True, timeout=60, cwd=REPO)
                if out.returncode != 0:
                    return {}
                return {d["mac"]: (d["kind"], d["os"]) for d in json.loads(out.stdout)["devices"]}

            deadline = acked + 120
            found = inventory()
            while sum(m in found for m in expected) < ours["ok"] and time.monotonic() < deadline:
                time.sleep(0.25)
                found = inventory()
            seen_all = time.monotonic() - acked
            cpu = cpu_seconds(service.pid) - cpu_before
            peak = rss_peak_mb(service.pid)
            present = sum(m in found for m in expected)
            right = sum(found.get(m) == tuple(v) for m, v in expected.items())
            wrong = {}
            for m, v in expected.items():
                if m in found and found[m] != tuple(v):
                    key = f"{v[0]}/{v[1]} -> {found[m][0]}/{found[m][1]}"
                    wrong[key] = wrong.get(key, 0) + 1
            ours_proc.terminate()
            ours_proc.wait(10)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(spool, ignore_errors=True)

    print(f"devices: {n} simulated, one lease at a time, six fingerprints")
    for name, s in (("dnsmasq alone (peer)", peer), ("dnsmasq + hook + service (us)", ours)):
        print(f"  {name:32s} leases ok {s['ok']}/{n}, median {s['median_ms']:.2f} ms, "
              f"p95 {s['p95_ms']:.2f} ms, max {s['max_ms']:.1f} ms, total {s['total_s']:.2f} s")
    if peer["median_ms"]:
        print(f"  lease latency us/peer: median x{ours['median_ms'] / peer['median_ms']:.2f}, "
              f"p95 x{ours['p95_ms'] / max(peer['p95_ms'], 1e-9):.2f}, "
              f"total x{ours['total_s'] / max(peer['total_s'], 1e-9):.2f}")
    print(f"  inventory: {present}/{n} present, {right}/{n} with the expected kind and OS"
          f"{' (mismatches: ' + json.dumps(wrong) + ')' if wrong else ''}")
    print(f"  all seen {seen_all:.1f} s after the last ACK; service CPU {cpu:.2f} s for the run, "
          f"peak RSS {peak:.1f} MB")
    return 0 if present == n and right == n else 1


if __name__ == "__main__":
    sys.exit(main())
