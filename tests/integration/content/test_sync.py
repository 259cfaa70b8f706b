"""Sync against a local HTTP server that throttles, drops connections and changes files."""

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from appliance import config
from appliance.content import demo, library, schema, sync
from appliance.content.catalog import Book
from appliance.content.download import DownloadError, Limits, fetch
from appliance.content.jobs import JobQueue
from appliance.content.store import ContentStore
from appliance.store import migrate, open_db
from tests.conftest import SHARED


class Upstream:
    """Files by path; `drop_after` cuts the connection after that many bytes (once each);
    `change_at` swaps a file's content after that many bytes were sent of it."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.drop_after: dict[str, int] = {}
        self.change_to: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path
                upstream.requests.append((path, self.headers.get("Range")))
                if path not in upstream.files:
                    self.send_error(404)
                    return
                data, etag = upstream.files[path], upstream.etags[path]
                start, end, status = 0, len(data) - 1, 200
                rng = self.headers.get("Range")
                if rng and (self.headers.get("If-Range") in (None, etag)):
                    a, b = rng.removeprefix("bytes=").split("-")
                    start, end = int(a), int(b) if b else len(data) - 1
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:end + 1]
                self.send_response(status)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.end_headers()
                cut = upstream.drop_after.pop(path, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    if path in upstream.change_to:
                        upstream.put(path, upstream.change_to.pop(path))
                    self.connection.close()
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def put(self, path: str, data: bytes) -> str:
        self.files[path] = data
        self.etags[path] = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def env(tmp_path):
    cfg = config.from_dict({"appliance": {"id": "t", "state_dir": str(tmp_path / "state")},
                            "content": {"root": str(tmp_path / "content"), "reserve_mb": 0, "retries": 2}})
    db = open_db(cfg.database_path)
    migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    store = ContentStore(cfg.content.root, db)
    store.initialise()
    yield cfg, store, JobQueue(db)
    db.conn.close()


def test_a_dropped_download_resumes_with_range_and_is_listed(env, upstream, tmp_path):
    cfg, store, queue = env
    data = demo.build_demo_zim(tmp_path / "demo.zim").read_bytes()
    url = upstream.put("/zim/demo.zim", data)
    upstream.drop_after["/zim/demo.zim"] = 30_000
    queue.enqueue("demo", "zim", url, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    assert sync.run(cfg, store, queue)["done"] == 1
    assert upstream.requests[1] == ("/zim/demo.zim", "bytes=30000-")
    assert library.get(store.db, "demo").state == "ok"
    assert [p.name for p in store.tmp_dir.iterdir()] == []


def test_a_file_changed_upstream_mid_download_restarts_cleanly(env, upstream, tmp_path):
    del env  # only the library folder, not its state, matters here
    old = demo.build_demo_zim(tmp_path / "old.zim").read_bytes()
    new = demo.build_zim(tmp_path / "new.zim", demo.demo_pages()[:3], main="index.html",
                         title="New").read_bytes()
    url = upstream.put("/zim/x.zim", old)
    upstream.drop_after["/zim/x.zim"] = 20_000
    upstream.change_to["/zim/x.zim"] = new
    part = tmp_path / "x.part"
    fetch(url, part, size=None, sha256=hashlib.sha256(new).hexdigest())
    assert part.read_bytes() == new  # never half old, half new


def test_a_bad_piece_is_fetched_again_alone(env, upstream, tmp_path):
    data = bytes(range(256)) * 400  # 102400 bytes, 4 pieces of 32 KiB
    url = upstream.put("/f.bin", data)
    length = 32 * 1024
    hashes = [hashlib.sha1(data[i:i + length]).hexdigest() for i in range(0, len(data), length)]
    part = tmp_path / "f.part"
    # The first full answer carries a block that went bad on the way; the ETag stays the same.
    upstream.files["/f.bin"] = data[:length + 5] + b"XXXX" + data[length + 9:]
    served = []
    original = upstream.files

    class Repaired(dict):
        def __getitem__(self, key):
            served.append(key)
            return original[key] if len(served) == 1 else data

        def __contains__(self, key):
            return key in original

    upstream.files = Repaired()
    fetch(url, part, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
          pieces={"length": length, "type": "sha-1", "hashes": hashes})
    assert upstream.requests == [("/f.bin", None), ("/f.bin", f"bytes={length}-{2 * length - 1}")]
    assert part.read_bytes() == data


def test_too_little_space_stops_the_job_and_leaves_the_library_as_it_was(env, upstream, tmp_path):
    cfg, store, queue = env
    library.add_zim(store, (SHARED / "data" / "zim" / "small.zim"))
    data = demo.build_demo_zim(tmp_path / "demo.zim").read_bytes()
    job = queue.enqueue("demo", "zim", upstream.put("/d.zim", data), sha256=hashlib.sha256(data).hexdigest(),
                        size=len(data))
    limits = Limits(free_bytes=lambda p: 1000)
    assert sync.run(cfg, store, queue, limits=limits)["failed"] == 1
    assert "not enough free space" in queue.get(job.id).error
    assert [i.name for i in library.items(store.db)] == ["small"]


def test_a_corrupt_download_is_refused_and_the_old_version_kept(env, upstream, tmp_path):
    cfg, store, queue = env
    library.add_zim(store, (SHARED / "data" / "zim" / "small.zim"), name="book")
    bad = (SHARED / "data" / "zim" / "invalid/outofbounds_urlptrpos.zim").read_bytes()
    queue.enqueue("book", "zim", upstream.put("/b.zim", bad), sha256=hashlib.sha256(bad).hexdigest())
    assert sync.run(cfg, store, queue)["failed"] == 1
    assert library.get(store.db, "book").title == "Test ZIM file"


def test_the_queue_survives_a_restart_and_metalinks_are_read(env, upstream, tmp_path):
    cfg, store, queue = env
    data = demo.build_demo_zim(tmp_path / "demo.zim").read_bytes()
    url = upstream.put("/zim/demo.zim", data)
    meta4 = f"""<?xml version="1.0" encoding="UTF-8"?>
<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="demo.zim"><size>{len(data)}</size>
<hash type="sha-256">{hashlib.sha256(data).hexdigest()}</hash>
<url priority="1">{url}</url></file></metalink>"""
    meta_url = upstream.put("/zim/demo.zim.meta4", meta4.encode())
    job = sync.enqueue_book(queue, Book(name="demo", title="Demo", url=meta_url))
    queue.claim()  # a crash while it ran
    assert JobQueue(store.db).recover() == 1
    assert queue.get(job.id).state == "queued"
    assert sync.run(cfg, store, queue)["done"] == 1


def test_throttled_download_respects_the_cap(upstream, tmp_path):
    import time

    url = upstream.put("/t.bin", b"x" * 200_000)
    start = time.monotonic()
    fetch(url, tmp_path / "t.part", size=200_000, sha256=None, limits=Limits(bandwidth_bps=400_000))
    assert time.monotonic() - start >= 0.4


def test_a_missing_url_fails_without_retry_storms(upstream, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        fetch(upstream.put("/x", b"") + "nope", tmp_path / "n.part", size=None, sha256=None)


def test_a_sync_removes_parts_left_by_a_crash_and_keeps_the_rest(env, tmp_path):
    """A part a crash or a failed drive left behind (untouched for an hour) goes; a part being
    written and a resumable download stay."""
    import os
    import time

    cfg, store, queue = env
    store.tmp_dir.mkdir(exist_ok=True)
    stale, fresh, resumable = (store.tmp_dir / n for n in ("a.zim", "b.part", "job-9.dl"))
    for path in (stale, fresh, resumable):
        path.write_bytes(b"half")
    old = time.time() - sync.STALE_TMP_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(resumable, (old, old))
    sync.run(cfg, store, queue)
    assert sorted(p.name for p in store.tmp_dir.iterdir()) == ["b.part", "job-9.dl"]
