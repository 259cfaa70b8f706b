"""A stand-in Moodle on loopback that replays recorded web-service traffic (tests and the lab).

It serves a recording directory (`state1/`, `state2/` of `data/moodle`, format in its README):
web-service calls and logins are matched by (path, sorted parameters) with the token
normalised; files by their percent-decoded path, from the recorded full body, with 304 for a
matching If-None-Match or If-Modified-Since and 206 for any `Range` when Moodle recorded
`Accept-Ranges: bytes` (If-Range is ignored, as Moodle does). A `*_by_courses` call for fewer
courses than recorded gets the recorded answer cut down to them. Unmatched requests get 599.

For tests it can switch state (`load()`), make the current token invalid (`invalidate_token()`),
cut a file's body after some bytes (`cut`) or hold it there (`stall`), answer slowly
(`delay`), and it counts the body bytes it sent per path (`sent`), so a test asserts bytes on
the wire, not requests.

Pupils (`users`, for the portal's sign-in): `login/token.php` gives a pupil with the right
password a token of their own (a wrong one gets the recorded `invalidlogin` answer); with it,
`core_webservice_get_site_info` answers the recorded site info under the pupil's id and name, and
`core_enrol_get_users_courses` the recorded course list cut down to the pupil's courses.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PLACEHOLDER = "http://moodle.example"
REST = "/webservice/rest/server.php"
RECORDED_TOKEN = "TOKEN"  # noqa: S105 - the literal the recordings use for the real token


@dataclass(frozen=True)
class Pupil:
    """A Moodle account of the replay besides the recorded sync account."""

    password: str
    userid: int
    courses: tuple[int, ...]


@dataclass(frozen=True)
class Recorded:
    status: int
    headers: dict[str, str]
    body: bytes | None
    is_json: bool


class Recording:
    """One state directory, indexed for matching."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.calls: dict[tuple[str, tuple[tuple[str, str], ...]], Recorded] = {}
        self.files: dict[str, Recorded] = {}
        self.errors: dict[str, Recorded] = {}
        self.labels: dict[str, Recorded] = {}
        with (directory / "exchanges.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                self._add(json.loads(line))

    def _add(self, ex: dict[str, Any]) -> None:
        body = ex["body"]
        if body["kind"] == "json":
            data: bytes | None = json.dumps(body["json"], ensure_ascii=False).encode()
        elif body["kind"] == "blob":
            data = (self.directory / body["blob"]).read_bytes()
        else:
            data = None
        rec = Recorded(ex["status"], dict(ex["response_headers"]), data, body["kind"] == "json")
        label: str = ex["label"]
        path = urllib.parse.unquote(ex["path"])
        self.labels.setdefault(label, rec)
        if label.startswith("error:"):
            self.errors[label] = rec
            if label == "error:missing_file":
                self.files.setdefault(path, rec)
            if path.startswith("/webservice/pluginfile.php/"):
                return
        if label == "file:full":
            self.files.setdefault(path, rec)
        elif not label.startswith("file:"):
            params = {k: (RECORDED_TOKEN if k in ("wstoken", "token") and v == RECORDED_TOKEN else v)
                      for k, v in ex["params"].items()}
            self.calls.setdefault((path, tuple(sorted(params.items()))), rec)


    def subset(self, path: str, params: dict[str, str]) -> Recorded | None:
        """A `mod_*_get_*_by_courses` call for fewer courses than any recorded one (a course
        left the account's list): the recorded answer for more courses, cut down to these."""
        wanted = {v for k, v in params.items() if k.startswith("courseids[")}
        rest = {k: v for k, v in params.items() if not k.startswith("courseids[")}
        if not wanted or not params.get("wsfunction", "").endswith("_by_courses"):
            return None
        for (p, recorded), rec in self.calls.items():
            ids = {v for k, v in recorded if k.startswith("courseids[")}
            others = {k: v for k, v in recorded if not k.startswith("courseids[")}
            if p != path or not wanted <= ids or others != rest:
                continue
            answer = json.loads(rec.body or b"{}")
            for key, value in answer.items():
                if isinstance(value, list):
                    answer[key] = [x for x in value
                                   if not isinstance(x, dict) or str(x.get("course")) in wanted]
            return Recorded(rec.status, rec.headers, json.dumps(answer, ensure_ascii=False).encode(), True)
        return None


class ReplayMoodle:
    """The server. `url` is its base URL once started; use as a context manager."""

    def __init__(self, state: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.recording = Recording(state)
        self.token = RECORDED_TOKEN
        self.delay = 0.0
        self.cut: dict[str, int] = {}  # decoded path -> bytes to send before closing
        # decoded path -> bytes to send, then wait (until `unstall`, at most 60 s) and close;
        # `stalled` is set once they are sent (a test kills the client then)
        self.stall: dict[str, int] = {}
        self.stalled = threading.Event()
        self.unstall = threading.Event()
        self.sent: Counter[str] = Counter()  # decoded path -> body bytes sent
        self.log: list[tuple[str, int]] = []  # (decoded path or function, status)
        self.seen_tokens: list[str] = []  # every token a request carried (tests check leaks)
        self.users: dict[str, Pupil] = {}  # username -> pupil (see the module's docstring)
        self.user_tokens: dict[str, str] = {}  # a pupil's token -> username
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"replay": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}"

    def load(self, state: Path) -> None:
        """Switch to another recorded state (the teacher's edits happen)."""
        with self._lock:
            self.recording = Recording(state)

    def invalidate_token(self) -> None:
        """The current token stops working (expired or revoked); a login gives a new one."""
        self.token = secrets.token_hex(16)

    def start(self) -> ReplayMoodle:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.unstall.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ReplayMoodle:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def localize(self, data: bytes) -> bytes:
        return data.replace(PLACEHOLDER.encode(), self.url.encode())


class _Handler(BaseHTTPRequestHandler):
    replay: ReplayMoodle
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the token is in query strings: never log requests

    def do_GET(self) -> None:
        self._guarded()

    def do_POST(self) -> None:
        self._guarded()

    def _guarded(self) -> None:
        # The client may give up (a test of timeouts): nothing left to answer then.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._serve()

    def _serve(self) -> None:
        replay = self.replay
        if replay.delay:
            time.sleep(replay.delay)
        split = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            params.update(urllib.parse.parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
        path = urllib.parse.unquote(split.path)
        recording = replay.recording
        for name in ("wstoken", "token"):
            if name in params:
                replay.seen_tokens.append(params[name])
        if path.startswith("/webservice/pluginfile.php/"):
            self._file(path, params, recording)
            return
        if path == "/login/token.php" and params.get("username") in replay.users:
            self._pupil_login(params, recording)
            return
        if params.get("wstoken") in replay.user_tokens:
            self._pupil_call(replay.users[replay.user_tokens[params["wstoken"]]], params, recording)
            return
        if "wstoken" in params:
            if params["wstoken"] != replay.token:
                self._send(recording.errors["error:invalid_token"], path, params.get("wsfunction", ""))
                return
            params["wstoken"] = RECORDED_TOKEN
        rec = recording.calls.get((path, tuple(sorted(params.items())))) or recording.subset(path, params)
        if rec is None and path == "/login/token.php":
            rec = recording.labels["login_failed"]  # any other account or password: refused
        if rec is None:
            self._unmatched(path)
            return
        body = rec.body
        if path == "/login/token.php" and body is not None:
            body = body.replace(f'"{RECORDED_TOKEN}"'.encode(), f'"{replay.token}"'.encode())
        self._send(Recorded(rec.status, rec.headers, body, rec.is_json), path, params.get("wsfunction", path))

    def _pupil_login(self, params: dict[str, str], recording: Recording) -> None:
        replay = self.replay
        name = params["username"]
        pupil = replay.users[name]
        if params.get("password") != pupil.password or params.get("service") != "moodle_mobile_app":
            self._send(recording.labels["login_failed"], "/login/token.php", "/login/token.php")
            return
        token = secrets.token_hex(16)
        replay.user_tokens[token] = name
        body = json.dumps({"token": token, "privatetoken": None}).encode()
        self._send(Recorded(200, {"content-type": "application/json"}, body, True),
                   "/login/token.php", "/login/token.php")

    def _pupil_call(self, pupil: Pupil, params: dict[str, str], recording: Recording) -> None:
        function = params.get("wsfunction", "")
        name = next(n for n, p in self.replay.users.items() if p is pupil)
        answer: Any
        if function == "core_webservice_get_site_info":
            answer = json.loads(recording.labels[function].body or b"{}")
            answer.update(userid=pupil.userid, username=name, fullname=name, firstname=name, lastname="")
        elif function == "core_enrol_get_users_courses" and params.get("userid") == str(pupil.userid):
            recorded = json.loads(recording.labels[function].body or b"[]")
            answer = [c for c in recorded if c.get("id") in pupil.courses]
        else:
            self._send(recording.errors["error:function_not_in_service"], REST, function)
            return
        self._send(Recorded(200, {"content-type": "application/json"},
                            json.dumps(answer, ensure_ascii=False).encode(), True), REST, function)

    def _file(self, path: str, params: dict[str, str], recording: Recording) -> None:
        replay = self.replay
        if "token" not in params:
            self._send(recording.errors["error:file_no_token"], path, path)
            return
        if params["token"] != replay.token:
            self._send(recording.errors["error:file_invalid_token"], path, path)
            return
        rec = recording.files.get(path)
        if rec is None or rec.body is None:
            self._unmatched(path)
            return
        if rec.is_json or rec.status != 200:
            self._send(rec, path, path)
            return
        etag = rec.headers.get("etag")
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        if etag and ((inm and inm.strip() == etag) or (ims and ims == rec.headers.get("last-modified"))):
            self._send(Recorded(304, {k: v for k, v in rec.headers.items() if k != "content-length"},
                                None, False), path, path)
            return
        body = rec.body
        if "text/" in rec.headers.get("content-type", "") or "svg" in rec.headers.get("content-type", ""):
            body = replay.localize(body)
        rng = self.headers.get("Range")
        if rng and rec.headers.get("accept-ranges") == "bytes" and rng.startswith("bytes="):
            start_s, _, end_s = rng[6:].partition("-")
            start = int(start_s or 0)
            end = min(int(end_s), len(body) - 1) if end_s else len(body) - 1
            if start < len(body):
                headers = dict(rec.headers)
                headers["content-range"] = f"bytes {start}-{end}/{len(body)}"
                self._send(Recorded(206, headers, body[start:end + 1], False), path, path)
                return
        self._send(Recorded(200, rec.headers, body, False), path, path)

    def _unmatched(self, path: str) -> None:
        self._send(Recorded(599, {"content-type": "text/plain"}, b"unmatched request\n", False), path, path)

    def _send(self, rec: Recorded, path: str, label: str) -> None:
        replay = self.replay
        body = rec.body
        if body is not None and rec.is_json:
            body = replay.localize(body)
        self.send_response(rec.status)
        for name, value in rec.headers.items():
            if name in ("content-length", "transfer-encoding", "connection"):
                continue
            # Moodle writes UTF-8 file names raw into Content-Disposition; so does the replay.
            self.send_header(name, replay.localize(value.encode()).decode("latin-1"))
        if body is not None:
            self.send_header("Content-Length", str(len(body)))
        elif rec.status != 304:
            self.send_header("Content-Length", "0")
        self.end_headers()
        replay.log.append((label, rec.status))
        if body is None or self.command == "HEAD":
            return
        limit = replay.cut.get(path)
        held = replay.stall.get(path)
        if held is not None and held < len(body):
            self.wfile.write(body[:held])
            self.wfile.flush()
            replay.sent[path] += held
            replay.stalled.set()
            replay.unstall.wait(60)
            self.close_connection = True
            return
        if limit is not None and limit < len(body):
            self.wfile.write(body[:limit])
            self.wfile.flush()
            replay.sent[path] += limit
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)
        replay.sent[path] += len(body)
