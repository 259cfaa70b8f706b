"""Library serving: our portal against kiwix-serve, the same ZIM archive, one run.

Both servers serve the same archive (default: the Ray Charles mini archive of ../shared/data/zim):

- us: `appliance portal` in its production configuration (gunicorn, `[portal] workers` and
  `threads` at their defaults), the archive added with `appliance content add`'s function;
  articles and images from the archive origin (`[content] archive_port`), searches from the
  portal's `/search` page (the real templates and translations);
- peer: Debian's kiwix-serve (`kiwix-tools`), URLs `/<book>/<path>` and
  `/search?content=<book>&pattern=<q>&pageLength=10` (10 results: as many as we take from an
  archive's own index, each with a snippet).

Each server is pinned to core 0 (`taskset`), wrk to core 1, 64 connections, one at a time. Three
mixes: one article page, one image, and full-text searches cycling through at least 1,000
distinct one-word queries taken from the archive's text (each has results in both servers).
Prints requests/s, latency percentiles, each server's CPU time per request (the servers' own
user + system time over the requests served: other load on a shared machine moves it much less
than requests/s) and our/kiwix ratios of both. Needs `wrk` and `kiwix-serve`
(`scripts/install --bench`). Then 64 clients stream a 200 MB video entry with `Range` from
random offsets at about 1 MB/s each, and the portal's memory is sampled. Run:

    .venv/bin/python bench/portal.py [--seconds 10] [--connections 64] [--queries 1000] [--streams 64]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from libzim.reader import Archive

from appliance import config as config_module
from appliance.content import demo, library, schema
from appliance.content.store import ContentStore
from appliance.harness.process import REPO, http_get, http_ok, wait_for, write_config
from appliance.store import migrate, open_db

SHARED = REPO.parent / "shared"
RAY = SHARED / "data" / "zim" / "wikipedia_en_ray_charles_mini.zim"
WORD = re.compile(r"[a-z]{4,}")

# Each wrk thread walks the list of paths from its own offset, so the threads do not ask for
# the same query at the same moment.
WRK_SCRIPT = """
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
local counter = 0
function setup(thread)
  thread:set("offset", counter * 997)
  counter = counter + 1
end
local i = 0
function request()
  i = i + 1
  return wrk.format("GET", paths[(offset + i) % #paths + 1])
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def archive_sample(path: Path, queries: int) -> tuple[str, str, list[str]]:
    """(article path, image path, words): the longest article, the largest image, and words
    of the articles' text (the most frequent first)."""
    archive = Archive(str(path))
    article, article_size, image, image_size = "", 0, "", 0
    seen: collections.Counter[str] = collections.Counter()
    for i in range(archive.all_entry_count):
        entry = archive._get_entry_by_id(i)
        if entry.is_redirect or entry.path.startswith(("M/", "X/", "Z/")):
            continue
        item = entry.get_item()
        if item.mimetype.startswith("text/html"):
            if item.size > article_size:
                article, article_size = entry.path, item.size
            seen.update(set(WORD.findall(library.html_text(bytes(item.content))[1].lower())))
        elif item.mimetype.startswith("image/") and item.size > image_size:
            image, image_size = entry.path, item.size
    words = [w for w, _ in seen.most_common()]
    return article, image, words[:queries]


def parse_wrk(out: str) -> dict[str, float]:
    def duration(text: str) -> float:
        m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]

    figures: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    figures["rps"] = float(m.group(1)) if m else float("nan")
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.MULTILINE)
        figures[f"p{pct}_ms"] = duration(m.group(1)) if m else float("nan")
    m = re.search(r"(\d+) requests in", out)
    figures["requests"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["errors"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    figures["socket_errors"] = float(sum(int(x) for x in m.groups())) if m else 0.0
    return figures


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) of a process and its children (gunicorn's workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (OSError, IndexError, ValueError):
            continue
        pids += [int(c) for c in children]
    return total / tick


def wrk(base: str, paths: list[str], args: argparse.Namespace, tmp: Path, pid: int) -> dict[str, float]:
    """wrk's figures, and `cpu_ms`: the server's CPU time per request (process `pid` and its
    children), which other load on the machine moves much less than requests/s."""
    before = cpu_seconds(pid)
    figures = _wrk(base, paths, args, tmp)
    figures["cpu_ms"] = (cpu_seconds(pid) - before) * 1000 / max(figures["requests"], 1.0)
    return figures


def _wrk(base: str, paths: list[str], args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    listing = tmp / "paths.txt"
    listing.write_text("".join(p + "\n" for p in paths))
    script = tmp / "paths.lua"
    script.write_text(WRK_SCRIPT)
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t", "2", "-c", str(args.connections), "-d", f"{args.seconds}s",
         "--latency", "--timeout", "10s", "-s", str(script), base],
        capture_output=True, text=True, timeout=args.seconds + 60,
        env={**os.environ, "BENCH_PATHS": str(listing)}, check=True).stdout
    return parse_wrk(out)


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (gunicorn's workers), in MB."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (OSError, AttributeError):
            continue
        pids += [int(c) for c in children]
    return total / 1024


def start_ours(tmp: Path, zim: Path, web: dict[str, int]) -> tuple[subprocess.Popen[bytes], str, str, str]:
    portal_port, archive_port = free_port(), free_port()
    cfg_path = write_config(
        tmp / "appliance.toml", appliance={"id": "bench", "state_dir": str(tmp / "state")},
        portal={"listen": "127.0.0.1", "port": portal_port, **web},
        content={"root": str(tmp / "content"), "archive_port": archive_port})
    cfg = config_module.load(cfg_path)
    db = open_db(cfg.database_path)
    migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    item = library.add_zim(ContentStore(cfg.content.root, db), zim)
    db.conn.close()
    log = (tmp / "portal.log").open("wb")
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "appliance", "--config", str(cfg_path), "portal"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    portal, archive = f"http://127.0.0.1:{portal_port}", f"http://127.0.0.1:{archive_port}"
    try:
        wait_for(lambda: http_ok(portal + "/healthz") and http_ok(archive + "/healthz"), timeout=30,
                 what="our portal")
    except TimeoutError:
        stop(proc)
        raise SystemExit("bench: the portal did not start:\n" + (tmp / "portal.log").read_text()) from None
    return proc, portal, archive, f"/content/{urllib.parse.quote(item.name)}/"


def start_kiwix(tmp: Path, zim: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    log = (tmp / "kiwix.log").open("wb")
    proc = subprocess.Popen(
        ["taskset", "-c", "0", "kiwix-serve", "--port", str(port), "--address", "127.0.0.1", str(zim)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_ok(base + "/"), timeout=30, what="kiwix-serve")
    return proc, base, zim.stem


def pss_mb(pid: int) -> float:
    """Proportional set size of a process and its children, in MB: shared pages (the code gunicorn's
    workers share with their master, a file mapped by two workers) counted once in all."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            total += int(re.search(r"^Pss:\s+(\d+)", rollup, re.MULTILINE).group(1))  # type: ignore[union-attr]
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (OSError, AttributeError):
            continue
        pids += [int(c) for c in children]
    return total / 1024


def build_video_zim(path: Path, size: int) -> Path:
    """An archive with one `size`-byte video entry (random bytes: stored uncompressed)."""
    pages = [demo.Page("index.html", "Video", '<!doctype html><html lang="en"><title>Video</title>'
                       '<video src="film.webm" controls></video></html>'),
             demo.Page("film.webm", "film", os.urandom(size), "video/webm", front=False)]
    return demo.build_zim(path, pages, main="index.html", title="Video", name="video", fulltext=False)


def range_streams(url: str, streams: int, size: int, seconds: float, pid: int) -> dict[str, float]:
    """`streams` clients each reading the entry from a random offset at about 1 MB/s; the
    portal's peak memory while they run."""
    stop_at = time.monotonic() + seconds
    received = [0] * streams

    def client(n: int) -> None:
        start = random.randrange(0, size // 2)
        request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"})  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            while time.monotonic() < stop_at and (chunk := response.read(64 * 1024)):
                received[n] += len(chunk)
                time.sleep(0.06)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(streams)]
    for t in threads:
        t.start()
    peak_rss = peak_pss = 0.0
    while time.monotonic() < stop_at:
        time.sleep(1)
        peak_rss, peak_pss = max(peak_rss, rss_mb(pid)), max(peak_pss, pss_mb(pid))
    for t in threads:
        t.join(timeout=30)
    return {"peak_rss_mb": peak_rss, "peak_pss_mb": peak_pss, "received_mb": sum(received) / 1e6,
            "streams": float(sum(1 for r in received if r))}


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def check(base: str, path: str, needle: bytes = b"") -> None:
    status, body = http_get(base + path, timeout=10)
    if status != 200 or needle not in body:
        raise SystemExit(f"bench: {base}{path} answered {status} (expected 200 with {needle!r})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zim", type=Path, default=RAY)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--workers", type=int, help="[portal] workers (default: the production default)")
    parser.add_argument("--threads", type=int, help="[portal] threads (default: the production default)")
    parser.add_argument("--streams", type=int, default=64, help="concurrent Range streams (0: skip)")
    parser.add_argument("--stream-mb", type=int, default=200, help="size of the streamed entry")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    for tool in ("wrk", "kiwix-serve", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} not found (scripts/install --bench)")
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("bench: needs two cores (one per server, one for wrk)")
    article, image, words = archive_sample(args.zim, args.queries)
    if len(words) < args.queries:
        print(f"bench: only {len(words)} distinct words in the archive's text (asked {args.queries})")
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-portal-") as name:
        tmp = Path(name)
        web = {k: v for k, v in (("workers", args.workers), ("threads", args.threads)) if v}
        proc, portal, archive, prefix = start_ours(tmp, args.zim, web)
        try:
            check(archive, prefix + article)
            check(portal, "/search?q=" + urllib.parse.quote(words[0]), b'class="snippet"')
            mem_idle = rss_mb(proc.pid)
            results["ours"] = {
                "article": wrk(archive, [prefix + urllib.parse.quote(article)], args, tmp, proc.pid),
                "image": wrk(archive, [prefix + urllib.parse.quote(image)], args, tmp, proc.pid),
                "search": wrk(portal, ["/search?q=" + urllib.parse.quote(w) for w in words], args, tmp,
                              proc.pid),
            }
            results["ours"]["memory"] = {"idle_mb": mem_idle, "after_mb": rss_mb(proc.pid),
                                         "idle_pss_mb": pss_mb(proc.pid)}
        finally:
            stop(proc)
        if args.streams:
            video = build_video_zim(tmp / "video.zim", args.stream_mb << 20)
            proc, _portal, archive, prefix = start_ours(tmp / "video", video, web)
            try:
                results["ours"]["streams"] = range_streams(archive + prefix + "film.webm", args.streams,
                                                           args.stream_mb << 20, args.seconds, proc.pid)
            finally:
                stop(proc)
        proc, base, book = start_kiwix(tmp, args.zim)
        try:
            kprefix = f"/{book}/"
            check(base, kprefix + article)
            search = f"/search?content={book}&pageLength=10&pattern="
            check(base, search + urllib.parse.quote(words[0]), b"<cite>")
            results["kiwix"] = {
                "article": wrk(base, [kprefix + urllib.parse.quote(article)], args, tmp, proc.pid),
                "image": wrk(base, [kprefix + urllib.parse.quote(image)], args, tmp, proc.pid),
                "search": wrk(base, [search + urllib.parse.quote(w) for w in words], args, tmp, proc.pid),
            }
            results["kiwix"]["memory"] = {"after_mb": rss_mb(proc.pid)}
        finally:
            stop(proc)

    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, {when}")
    print(f"archive {args.zim.name}; article {article}, image {image}, {len(words)} distinct queries; "
          f"{args.connections} connections, {args.seconds} s each")
    print(f"{'':8} {'server':6} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'cpu ms/req':>10}")
    for mix in ("article", "image", "search"):
        for server in ("ours", "kiwix"):
            f = results[server][mix]
            print(f"{mix:8} {server:6} {f['rps']:9.0f} {f['p50_ms']:8.2f} {f['p90_ms']:8.2f} "
                  f"{f['p99_ms']:8.2f} {f['errors'] + f['socket_errors']:7.0f} {f['cpu_ms']:10.3f}")
        # Requests per CPU second, ours over kiwix's: what one core would serve, less moved by load.
        print(f"{mix:8} ratio  {results['ours'][mix]['rps'] / results['kiwix'][mix]['rps']:9.2f}x "
              f"(per CPU second: {results['kiwix'][mix]['cpu_ms'] / results['ours'][mix]['cpu_ms']:.2f}x)")
    ours, kiwix = results["ours"]["memory"], results["kiwix"]["memory"]
    print(f"resident: ours {ours['idle_mb']:.0f} MB idle, {ours['after_mb']:.0f} MB after; "
          f"kiwix {kiwix['after_mb']:.0f} MB")
    if args.streams:
        st = results["ours"]["streams"]
        print(f"{args.streams} Range streams of a {args.stream_mb} MB entry ({st['streams']:.0f} got data, "
              f"{st['received_mb']:.0f} MB sent): ours peak {st['peak_pss_mb']:.0f} MB PSS, "
              f"{st['peak_rss_mb']:.0f} MB RSS (idle {ours['idle_pss_mb']:.0f} MB PSS)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f}")
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
