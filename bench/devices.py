"""The device inventory under 1,000 devices: dnsmasq + our DHCP hook + `appliance devices serve`,
against dnsmasq alone (the peer), in a virtual classroom.

One namespace (`fleet`, one isolated port of the classroom's bridge) plays every device: it
sends DISCOVER and REQUEST for N MACs (locally administered, as phones use) with the exact
option-55 orders and vendor classes of six OS families (`MIX`), one lease at a time (or
`--parallel P` clients at once: a burst, as after a power cut), and times each DISCOVER ->
ACK. Packets are built by `appliance.harness.dhcpclient` (the same bytes scapy would send;
replies are broadcast, since the namespace's interface has none of those MACs). The pool is a
/21 and `dhcp-lease-max` is raised past N.

Three runs with fresh lease files and MAC ranges:

1. peer: dnsmasq without a `dhcp-script`;
2. dnsmasq with our hook (as nobody, into a spool) and no service: the hook's own cost;
3. us: dnsmasq with our hook and the inventory service running.

Prints lease latency (median, p95, max), total time and dnsmasq's CPU with its children (the
script helper and every hook it forked) for each run and the us/peer ratio; for us, how
many of the N devices the inventory shows and how many with the expected kind and OS, the time
from the last ACK until the inventory shows all, the service's CPU seconds and its peak RSS.
Run as root:

    .venv/bin/python bench/devices.py [--devices 1000] [--parallel 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
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


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU seconds of `pid` (with `children`: plus those of its reaped children,
    and the same for its live children: dnsmasq's script helper and the hooks it ran)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return ticks / os.sysconf("SC_CLK_TCK") + sum(cpu_seconds(int(k), children=True)
                                                       for k in kids)
    return ticks / os.sysconf("SC_CLK_TCK")


def inventory(db_path: Path) -> dict[str, tuple[str, str]]:
    """MAC -> (kind, OS) as the service committed them (read-only, beside the running service)."""
    if not db_path.exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        try:
            return {m: (k, o) for m, k, o in conn.execute(
                "SELECT mac, kind, os FROM device_inventory")}
        except sqlite3.OperationalError:  # the service has not made its tables yet
            return {}


def run_leases(room: Classroom, ns_name: str, base_mac: str, n: int,
               parallel: int = 1) -> tuple[list[float], float]:
    """N leases from the fleet namespace by `parallel` clients at once, each one lease at a
    time; the DISCOVER -> ACK seconds of each, and the wall time for all."""
    code = r"""
import json, sys, time
from appliance.harness import dhcpclient as d
base, n, mix, first, step = (sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]),
                             int(sys.argv[4]), int(sys.argv[5]))
sock = d._socket("wlan0")
out = []
for i in range(first, n, step):
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
    started = time.monotonic()
    # Every client binds port 68 (SO_REUSEADDR): each broadcast reply reaches all of them, and
    # each keeps the ones with its own transaction id.
    procs = [subprocess.Popen([*ns.exec_prefix(), sys.executable, "-c", code, base_mac, str(n),
                               json.dumps(MIX), str(k), str(parallel)],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
             for k in range(parallel)]
    times: list[float] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=3600)
        times += json.loads(out)
    return times, time.monotonic() - started


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


def summary(run: tuple[list[float], float]) -> dict[str, float]:
    times, wall = run
    ok = sorted(t for t in times if t >= 0)
    return {"ok": len(ok), "failed": len(times) - len(ok), "wall_s": wall,
            "median_ms": statistics.median(ok) * 1000 if ok else 0.0,
            "p95_ms": ok[int(len(ok) * 0.95) - 1] * 1000 if ok else 0.0,
            "max_ms": ok[-1] * 1000 if ok else 0.0, "total_s": sum(ok)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--parallel", type=int, default=1,
                   help="clients asking at once (1: one lease at a time; 50: a burst)")
    args = p.parse_args()
    n, par = args.devices, args.parallel
    workdir = Path(tempfile.mkdtemp(prefix="bench-devices-"))
    spool = Path(tempfile.mkdtemp(prefix="bench-devices-spool-"))
    spool.chmod(0o1777)  # the hook runs as nobody
    try:
        with Classroom(phones=0, management=False, subnet4=SUBNET, workdir=workdir / "room") as room:
            room.add_phone("fleet", mac="02:be:00:00:00:01")
            fleet = "fleet"

            # 1. the peer: dnsmasq alone.
            peer_proc = dnsmasq(room, workdir, "peer", n, None)
            peer = summary(run_leases(room, fleet, "02:be:10:00:00:00", n, par))
            peer["dnsmasq_cpu_s"] = cpu_seconds(peer_proc.pid, children=True)
            peer_proc.terminate()
            peer_proc.wait(10)

            # 1b. dnsmasq + the hook alone (no service reading the spool): the hook's own cost.
            hook_spool = Path(tempfile.mkdtemp(prefix="bench-devices-hook-", dir=spool))
            hook_spool.chmod(0o1777)
            hook_proc = dnsmasq(room, workdir, "hook", n, hook_spool)
            hook = summary(run_leases(room, fleet, "02:be:30:00:00:00", n, par))
            acked = time.monotonic()

            def lines() -> int:
                events = hook_spool / "events"
                return events.read_text().count("\n") if events.exists() else 0

            # dnsmasq runs one script at a time and queues the rest: how far behind is it?
            while lines() < hook["ok"] and time.monotonic() < acked + 30:
                time.sleep(0.05)
            hook_lines, hook_drained = lines(), time.monotonic() - acked
            hook["dnsmasq_cpu_s"] = cpu_seconds(hook_proc.pid, children=True)
            hook_proc.terminate()
            hook_proc.wait(10)

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
            ours = summary(run_leases(room, fleet, base, n, par))
            acked = time.monotonic()
            expected = {dhcpclient._nth_mac(base, i): MIX[i % len(MIX)][3:] for i in range(n)}
            db_path = workdir / "state" / "appliance.db"
            deadline = acked + 120
            found = inventory(db_path)
            while sum(m in found for m in expected) < ours["ok"] and time.monotonic() < deadline:
                time.sleep(0.05)
                found = inventory(db_path)
            seen_all = time.monotonic() - acked
            # The hook's forks are dnsmasq's children: wait for its queue, then count them.
            time.sleep(1)
            ours["dnsmasq_cpu_s"] = cpu_seconds(ours_proc.pid, children=True)
            cpu = cpu_seconds(service.pid) - cpu_before
            peak = rss_peak_mb(service.pid)
            present = sum(m in found for m in expected)
            right = sum(found.get(m) == tuple(v) for m, v in expected.items())
            wrong: dict[str, int] = {}
            for m, v in expected.items():
                if m in found and found[m] != tuple(v):
                    key = f"{v[0]}/{v[1]} -> {found[m][0]}/{found[m][1]}"
                    wrong[key] = wrong.get(key, 0) + 1
            ours_proc.terminate()
            ours_proc.wait(10)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(spool, ignore_errors=True)

    print(f"devices: {n} simulated, {par} client(s) asking at once, six fingerprints")
    for name, s in (("dnsmasq alone (peer)", peer), ("dnsmasq + hook, no service", hook),
                    ("dnsmasq + hook + service (us)", ours)):
        print(f"  {name:32s} leases ok {s['ok']}/{n}, median {s['median_ms']:.2f} ms, "
              f"p95 {s['p95_ms']:.2f} ms, max {s['max_ms']:.1f} ms, all in {s['wall_s']:.2f} s, "
              f"dnsmasq CPU (with its children) {s['dnsmasq_cpu_s']:.2f} s")
    if peer["median_ms"]:
        print(f"  lease latency us/peer: median x{ours['median_ms'] / peer['median_ms']:.2f}, "
              f"p95 x{ours['p95_ms'] / max(peer['p95_ms'], 1e-9):.2f}, "
              f"all leases x{ours['wall_s'] / max(peer['wall_s'], 1e-9):.2f}")
    print(f"  the hook wrote {hook_lines} spool lines for {n} leases, the last {hook_drained:.1f} s "
          "after the last ACK (dnsmasq's script queue)")
    print(f"  inventory: {present}/{n} present, {right}/{n} with the expected kind and OS"
          f"{' (mismatches: ' + json.dumps(wrong) + ')' if wrong else ''}")
    print(f"  all seen {seen_all:.1f} s after the last ACK; service CPU {cpu:.2f} s for the run, "
          f"peak RSS {peak:.1f} MB")
    return 0 if present == n and right == n else 1


if __name__ == "__main__":
    sys.exit(main())
