"""DNS filter throughput and latency: our filter against unbound and dnsmasq, same list, one run.

Every server gets the same synthetic blocklist (N domains under .test) and the same allowed
names, each server pinned to core 0 (`taskset`), dnsperf pinned to core 1:

- unbound: `local-zone: <d> always_nxdomain` per listed domain, `local-data` for allowed names;
- dnsmasq: `address=/<d>/` per listed domain, `host-record=` for allowed names;
- us: `appliance filter serve` with the list compiled, groups, a schedule in force and the
  neighbour reader on (the full policy path), unbound above as its upstream (answers cached).

Two query mixes per server: cache hits (allowed names, answered from the cache after the first)
and blocked names (a listed domain's subdomain). Prints queries/s and mean latency (dnsperf),
the ratios, then our latency percentiles at a fixed rate while a list swap and an exam start
happen, our compile time and memory for the list, and (with --loops) a blocking receive loop
against an asyncio datagram endpoint on the same resolver. Run as root (taskset, ports):

    .venv/bin/python bench/dns.py [--domains 100000] [--seconds 10] [--compile 1000000] [--loops]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance import config as config_module
from appliance.filter import lists, service, unbound, wire
from appliance.filter.identity import StaticIdentity
from appliance.filter.resolver import Resolver
from appliance.harness.process import Process, wait_for, write_config

ALLOWED = [f"www.site{i}.example.test" for i in range(1000)]


def synthetic(n: int) -> list[str]:
    return [f"adult-{i:07d}.x{i % 97}.test" for i in range(n)]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int, name: str = ALLOWED[0]) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            s.sendto(wire.build(wire.Message(1, wire.RD, (wire.Question(name, 1),))), ("127.0.0.1", port))
            return wire.parse(s.recv(4096)).rcode == 0
    except (OSError, wire.WireError):
        return False


def start_unbound(folder: Path, port: int, blocked: list[str]) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ['    local-zone: "test." nodefault']
    lines += [f'    local-zone: "{d}." always_nxdomain' for d in blocked]
    lines += [f'    local-data: "{n}. 300 IN A 192.0.2.1"' for n in ALLOWED]
    opts = unbound.UnboundOptions(port=port, directory=folder, trust_anchor=None)
    conf = folder / "unbound.conf"
    conf.write_text(unbound.render(opts, lines).replace("msg-cache-size: 8m", "msg-cache-size: 32m"))
    proc = subprocess.Popen(["taskset", "-c", "0", "unbound", "-d", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: answers(port), timeout=600, what="unbound")
    return proc


def start_dnsmasq(folder: Path, port: int, blocked: list[str]) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "dnsmasq.conf"
    with conf.open("w") as f:
        f.write("no-resolv\nno-hosts\nlisten-address=127.0.0.1\nbind-interfaces\ncache-size=10000\n")
        f.write(f"port={port}\n")
        for d in blocked:
            f.write(f"address=/{d}/\n")
        for n in ALLOWED:
            f.write(f"host-record={n},192.0.2.1\n")
    proc = subprocess.Popen(["taskset", "-c", "0", "dnsmasq", "-k", "-C", str(conf), "--user=root",
                             "--pid-file="], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: answers(port), timeout=600, what="dnsmasq")
    return proc


def dnsperf(port: int, names: list[str], seconds: float, tmp: Path) -> dict[str, float]:
    data = tmp / "queries.txt"
    data.write_text("".join(f"{n} A\n" for n in names))
    out = subprocess.run(["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port),
                          "-d", str(data), "-l", str(seconds), "-c", "4", "-q", "200", "-t", "2"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout

    def figure(label: str) -> float:
        m = re.search(rf"{label}:\s+([\d.]+)", out)
        return float(m.group(1)) if m else float("nan")

    return {"qps": figure("Queries per second"), "mean_ms": figure(r"Average Latency \(s\)") * 1000,
            "lost": figure("Queries lost"), "sent": figure("Queries sent")}


def paced_latency(port: int, names: list[str], rate: int, seconds: float,
                  during: list[tuple[float, object]]) -> dict[str, float]:
    """Send `rate` queries/s for `seconds` and time each round trip: one thread on core 1 that
    sends when a query is due and reads whatever has arrived in between (a second thread would
    measure the GIL). The callables in `during` run in a child process at their offsets, so
    their work (a list compile) does not stall this loop."""
    os.sched_setaffinity(0, {1})
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(("127.0.0.1", port))
    packets = [wire.build(wire.Message(i, wire.RD, (wire.Question(names[i % len(names)], 1),)))
               for i in range(65536)]
    children = []
    for offset, action in during:
        pid = os.fork()
        if pid == 0:
            time.sleep(offset)
            action()  # type: ignore[operator]
            os._exit(0)
        children.append(pid)
    sent: dict[int, float] = {}
    rtts: list[float] = []
    total = int(rate * seconds)
    start = time.perf_counter()
    i = 0
    end = start + seconds + 1.0
    while True:
        now = time.perf_counter()
        if i < total and now >= start + i / rate:
            ident = i & 0xFFFF
            sent[ident] = now
            sock.send(packets[ident])
            i += 1
            continue
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            if i >= total and (not sent or now > end):
                break
            continue
        t0 = sent.pop(int.from_bytes(data[:2], "big"), None)
        if t0 is not None:
            rtts.append(time.perf_counter() - t0)
    for pid in children:
        os.waitpid(pid, 0)
    rtts.sort()

    def pct(p: float) -> float:
        return rtts[min(len(rtts) - 1, int(p * len(rtts)))] * 1000 if rtts else float("nan")

    return {"sent": total, "lost": len(sent), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "max_ms": pct(1.0)}


def compile_measure(n: int, tmp: Path) -> dict[str, float]:
    """Compile n synthetic domains in a fresh process: seconds and peak RSS; then RSS added to a
    process that maps the file and looks up 100,000 names."""
    src = tmp / f"synthetic-{n}.txt"
    with src.open("w") as f:
        for d in synthetic(n):
            f.write(d + "\n")
    out = tmp / f"synthetic-{n}.bin"
    code = f"""
import time, json
from pathlib import Path
from appliance.filter import lists
t = time.monotonic()
lists.update([lists.Source("adult", {str(src)!r})], Path({str(out)!r}))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({{"seconds": time.monotonic() - t, "peak_mb": hwm / 1024}}))
"""
    res = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout)
    probe = f"""
import json, resource
from pathlib import Path
from appliance.filter import lists
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
before = rss()
m = lists.Lists(Path({str(out)!r})).current()
hits = sum(1 for i in range(0, {n}, max(1, {n} // 50000)) if m.mask(f"www.adult-{{i:07d}}.x{{i % 97}}.test"))
misses = sum(1 for i in range(50000) if m.mask(f"www.nothing{{i}}.example.org"))
print(json.dumps({{"added_mb": rss() - before, "hits": hits, "misses": misses}}))
"""
    res |= json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                     check=True).stdout)
    res["file_mb"] = out.stat().st_size / 2**20
    return res


def start_filter(tmp: Path, port: int, upstream: int, blocked: list[str]) -> Process:
    tmp.mkdir(parents=True, exist_ok=True)
    src = tmp / "blocked.txt"
    src.write_text("".join(d + "\n" for d in blocked))
    path = write_config(
        tmp / "appliance.toml",
        appliance={"id": "bench", "state_dir": str(tmp / "state")},
        agent={"clock_source": "host"},
        filter={"listen": ["127.0.0.1"], "port": port, "upstreams": [f"127.0.0.1:{upstream}"],
                "rate_limit": 10_000_000, "rate_burst": 10_000_000, "cache_size": 50000,
                "lists": [{"category": "adult", "path": str(src)}],
                "groups": [{"name": "teachers", "macs": ["00:00:00:00:00:01"]}],
                "schedules": [{"group": "students", "categories": ["games"], "days": "daily",
                               "start": "00:00", "end": "23:59"}]})
    cfg = config_module.load(path)
    service.update_lists(cfg)
    proc = Process(path, "filter", "serve", log=tmp / "filter.log").start()
    assert proc.proc is not None
    wait_for(lambda: answers(port), timeout=60, what="the filter")
    # Every thread of it on core 0, as the other servers.
    subprocess.run(["taskset", "-a", "-p", "-c", "0", str(proc.proc.pid)], check=True,
                   capture_output=True)
    return proc


def loops(seconds: float, tmp: Path) -> dict[str, float]:
    """The same Resolver (cache hits) behind a blocking recvfrom loop and an asyncio endpoint."""
    out = tmp / "l.bin"
    lists.compile_lists([(lists.Source("adult", "x"), synthetic(1000))], out)
    cfg = config_module.from_dict({"appliance": {"id": "b"}})
    from appliance.filter import policy

    results = {}
    for kind in ("blocking", "asyncio"):
        resolver = Resolver(policy.from_section(cfg.filter), matcher=lambda: lists.Matcher.open(out),
                            identity=StaticIdentity())
        port = free_port()

        def serve_blocking(port: int = port, resolver: Resolver = resolver) -> None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", port))
            while True:
                data, addr = s.recvfrom(4096)
                r = resolver.answer(data, addr[0])
                if isinstance(r, bytes):
                    s.sendto(r, addr)

        def serve_asyncio(port: int = port, resolver: Resolver = resolver) -> None:
            class Proto(asyncio.DatagramProtocol):
                def connection_made(self, transport: asyncio.BaseTransport) -> None:
                    self.t = transport

                def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                    r = resolver.answer(data, addr[0])
                    if isinstance(r, bytes):
                        self.t.sendto(r, addr)  # type: ignore[attr-defined]

            loop = asyncio.new_event_loop()
            loop.run_until_complete(loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", port)))
            loop.run_forever()

        # Blocked names: answered without upstream, the same work in both loops.
        child = os.fork()
        if child == 0:
            os.sched_setaffinity(0, {0})
            (serve_blocking if kind == "blocking" else serve_asyncio)()
            os._exit(0)
        wait_for(lambda p=port: answers_blocked(p), timeout=10, what=kind)
        results[kind] = dnsperf(port, [f"www.adult-{i:07d}.x{i % 97}.test" for i in range(1000)],
                                seconds, tmp)["qps"]
        os.kill(child, 9)
        os.waitpid(child, 0)
    return results


def answers_blocked(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            s.sendto(wire.build(wire.Message(1, wire.RD, (wire.Question("adult-0000000.x0.test", 1),))),
                     ("127.0.0.1", port))
            return wire.parse(s.recv(4096)).rcode == wire.NXDOMAIN
    except (OSError, wire.WireError):
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--domains", type=int, default=100_000, help="listed domains each server loads")
    ap.add_argument("--seconds", type=float, default=10.0, help="dnsperf run length per mix")
    ap.add_argument("--compile", type=int, default=1_000_000, help="domains for the compile measure")
    ap.add_argument("--rate", type=int, default=5000, help="queries/s of the latency run")
    ap.add_argument("--loops", action="store_true", help="also: blocking loop vs asyncio")
    args = ap.parse_args()
    for tool in ("dnsperf", "unbound", "dnsmasq", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found (scripts/install --test)")
    blocked = synthetic(args.domains)
    blocked_q = [f"www.{d}" for d in blocked[:: max(1, len(blocked) // 1000)]]
    with tempfile.TemporaryDirectory(prefix="bench-dns-") as t:
        tmp = Path(t)
        results: dict[str, dict[str, dict[str, float]]] = {}
        up_port, dm_port, us_port = free_port(), free_port(), free_port()
        peers: list[subprocess.Popen[bytes]] = []
        us: Process | None = None
        try:
            t0 = time.monotonic()
            peers.append(start_unbound(tmp / "unbound", up_port, blocked))
            load_unbound = time.monotonic() - t0
            t0 = time.monotonic()
            peers.append(start_dnsmasq(tmp / "dnsmasq", dm_port, blocked))
            load_dnsmasq = time.monotonic() - t0
            us = start_filter(tmp / "us", us_port, up_port, blocked)
            for name, port in (("unbound", up_port), ("dnsmasq", dm_port), ("us", us_port)):
                results[name] = {"hits": dnsperf(port, ALLOWED, args.seconds, tmp),
                                 "blocked": dnsperf(port, blocked_q, args.seconds, tmp)}
            print(f"{args.domains:,} listed domains; unbound loaded in {load_unbound:.1f} s, "
                  f"dnsmasq in {load_dnsmasq:.1f} s; each server on core 0, dnsperf on core 1")
            print(f"{'server':10} {'mix':8} {'qps':>10} {'mean ms':>9} {'lost':>6}")
            for name, mixes in results.items():
                for mix, r in mixes.items():
                    print(f"{name:10} {mix:8} {r['qps']:>10,.0f} {r['mean_ms']:>9.3f} {r['lost']:>6.0f}")
            for mix in ("hits", "blocked"):
                us_q = results["us"][mix]["qps"]
                print(f"ratio us/unbound {mix}: {us_q / results['unbound'][mix]['qps']:.2f}   "
                      f"us/dnsmasq: {us_q / results['dnsmasq'][mix]['qps']:.2f}")
            # Latency at a fixed rate while the list is swapped and an exam starts.
            cfg = config_module.load(tmp / "us" / "appliance.toml")

            def swap() -> None:
                service.update_lists(cfg)

            def exam() -> None:
                service.start_exam(cfg, "teachers", time.strftime("%Y-%m-%dT%H:%M",
                                                                  time.localtime(time.time() + 3600)))

            mixed = [n for pair in zip(ALLOWED, blocked_q, strict=False) for n in pair]
            runs = (("unbound, quiet", up_port, []), ("us, quiet", us_port, []),
                    ("us, list swap at 1.5 s and exam start at 3 s", us_port,
                     [(1.5, swap), (3.0, exam)]))
            for label, port, events in runs:
                lat = paced_latency(port, mixed, args.rate, 6.0, events)
                print(f"{label}: {args.rate}/s for 6 s: p50 {lat['p50_ms']:.2f} ms, "
                      f"p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms, "
                      f"lost {lat['lost']} of {lat['sent']}")
        finally:
            if us is not None:
                us.stop()
            for p in peers:
                p.terminate()
                p.wait(10)
        if args.compile:
            c = compile_measure(args.compile, tmp)
            print(f"compile {args.compile:,} domains: {c['seconds']:.1f} s, peak RSS {c['peak_mb']:.0f} MB, "
                  f"file {c['file_mb']:.1f} MB; mapped and queried: +{c['added_mb']:.1f} MB resident "
                  f"({c['hits']} hits, {c['misses']} misses)")
        if args.loops:
            r = loops(args.seconds, tmp)
            print(f"receive loops on one core (blocked names, same resolver): blocking "
                  f"{r['blocking']:,.0f} qps, asyncio {r['asyncio']:,.0f} qps")


if __name__ == "__main__":
    main()
