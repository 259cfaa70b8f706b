"""The Moodle web-service client: REST with JSON answers, token auth, file downloads.

Moodle answers errors with HTTP 200 and a JSON body (`exception`, `errorcode`, `message`), so
every answer's body is checked, not its status. The token never appears in a log line or an
exception message: errors name the function or the file's path, never a URL with its query.

`Client.call()` renews the token once (through `Credentials`) when Moodle says `invalidtoken`
and the sync account has a password; with a configured token only, it raises `AuthError`
with what to do.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

SERVICE = "moodle_mobile_app"
REST_PATH = "webservice/rest/server.php"
TOKEN_PATH = "login/token.php"  # noqa: S105 - a path, not a secret
CHUNK = 64 * 1024

# What a person should do about the error codes a sync meets; the rest keep Moodle's message.
ERROR_HINTS = {
    "invalidtoken": "the sync account's token is invalid or expired: renew it "
    "(or configure username + password_file so the appliance can renew it itself)",
    "invalidlogin": "Moodle refused the sync account's username or password",
    "accessexception": "the function is not in the moodle_mobile_app service, or the sync "
    "account lacks the capability: see docs/moodle.md",
    "invalidrecordunknown": "Moodle does not know this web-service function (too old a Moodle?)",
    "errorcoursecontextnotvalid": "the sync account is not enrolled in this course, or cannot see it",
    "enablewsdescription": "web services are disabled on the Moodle site: see docs/moodle.md",
    "servicenotavailable": "the moodle_mobile_app service is disabled on the Moodle site "
    "(Site administration > Mobile app > Enable web services for mobile devices)",
    "filenotfound": "Moodle has no such file (deleted since the course list was read?)",
    "missingparam": "a required parameter was missing",
    "sitemaintenance": "the Moodle site is in maintenance mode; try later",
}


class MoodleError(Exception):
    """An answer from Moodle that is an error, or no usable answer at all.

    `errorcode` is Moodle's (`invalidtoken`, `accessexception`, ...) or one of ours: `http`
    (unexpected status), `network` (unreachable, timeout), `badjson` (not JSON), `truncated`
    (the connection closed before the announced length), `checksum` (content and ETag differ).
    The message never contains the token.
    """

    def __init__(self, errorcode: str, message: str, where: str = "") -> None:
        self.errorcode = errorcode
        self.where = where
        hint = ERROR_HINTS.get(errorcode)
        text = f"{where}: " if where else ""
        text += f"{message} [{errorcode}]"
        if hint:
            text += f": {hint}"
        super().__init__(text)


class AuthError(MoodleError):
    """The token or the password was refused (`invalidtoken`, `invalidlogin`)."""


AUTH_CODES = {"invalidtoken", "invalidlogin"}


def error_from(body: Any, where: str) -> MoodleError | None:
    """The error a Moodle JSON body carries, or None if it is an answer."""
    if not isinstance(body, dict):
        return None
    code = body.get("errorcode")
    if not isinstance(code, str) or not ("exception" in body or "error" in body):
        return None
    message = str(body.get("message") or body.get("error") or code)
    cls = AuthError if code in AUTH_CODES else MoodleError
    return cls(code, message, where)


def php_params(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Flatten nested lists and dicts into Moodle's PHP array notation
    (`courseids[0]=3`, `tocheck[1][since]=...`); booleans as 1/0."""
    out: list[tuple[str, str]] = []

    def walk(name: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{name}[{k}]", v)
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(f"{name}[{i}]", v)
        elif isinstance(value, bool):
            out.append((name, "1" if value else "0"))
        else:
            out.append((name, str(value)))

    for key, value in params.items():
        walk(key, value)
    return out


def disposition_filename(value: str | None) -> str | None:
    """The file name in a Content-Disposition header as Moodle sends it.

    Moodle writes Cyrillic names as raw UTF-8 inside `filename="..."`; Python's HTTP client
    hands header bytes over as Latin-1, so they are turned back into bytes and read as UTF-8.
    An RFC 5987 `filename*=UTF-8''...` wins when present.
    """
    if not value:
        return None
    try:
        raw = value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raw = value
    msg = Message()
    msg["content-disposition"] = raw
    name = msg.get_param("filename", header="content-disposition")
    if isinstance(name, tuple):  # the RFC 2231/5987 form, filename*=UTF-8''...
        return email.utils.collapse_rfc2231_value(name)
    return name if isinstance(name, str) else None


def file_path(url: str) -> str:
    """A file URL's path only (no query, so no token): what errors and logs show."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path)


@dataclass(frozen=True)
class Credentials:
    """How the sync account authenticates: a fixed token, or a username and password from which
    `login/token.php` makes one (cached in `token_cache`, mode 0600).

    `token` is read lazily so a missing file is reported by the first call, not at import.
    """

    token_reader: Callable[[], str] | None = None
    username: str = ""
    password_reader: Callable[[], str] | None = None
    token_cache: Path | None = None

    @property
    def can_renew(self) -> bool:
        return bool(self.username) and self.password_reader is not None


class Body(Protocol):
    """A response body being read: `read(n)` (or `read1(n)`: what has arrived, at most n)
    until b"", then `close()`."""

    def read(self, n: int = -1) -> bytes: ...
    def read1(self, n: int = -1) -> bytes: ...
    def close(self) -> None: ...
    def __enter__(self) -> Body: ...
    def __exit__(self, *exc: object) -> None: ...


@dataclass(frozen=True)
class FileResponse:
    """What a download gave: `status` 200, 206 or 304; headers lower-cased."""

    status: int
    headers: dict[str, str]
    body: Body | None

    @property
    def etag(self) -> str | None:
        """The ETag without quotes and weak prefix (for Moodle's stored files: the SHA-1)."""
        value = self.headers.get("etag")
        if not value:
            return None
        return value.removeprefix("W/").strip('"') or None

    @property
    def length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value and value.isdigit() else None

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives: a chunk is what came over the wire so far (up to CHUNK), so a
        caller that writes each one keeps every byte received when the process is killed."""
        assert self.body is not None
        while True:
            chunk = self.body.read1(CHUNK)
            if not chunk:
                return
            yield chunk


class Client:
    """One Moodle site, seen by one sync account."""

    def __init__(self, base_url: str, credentials: Credentials, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.credentials = credentials
        self.timeout = timeout
        self._token: str | None = None
        self.calls = 0
        self.bytes_received = 0

    # -- authentication ----------------------------------------------------------------------
    def login(self, username: str, password: str) -> str:
        """A token for the mobile service from `login/token.php`; AuthError if refused."""
        data = urllib.parse.urlencode(
            {"username": username, "password": password, "service": SERVICE}
        ).encode()
        body = self._post_json(TOKEN_PATH, data, where="login/token.php")
        error = error_from(body, "login/token.php")
        if error:
            raise error
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise MoodleError("badjson", "login/token.php gave no token", "login/token.php")
        return token

    def token(self) -> str:
        if self._token is None:
            self._token = self._initial_token()
        return self._token

    def _initial_token(self) -> str:
        creds = self.credentials
        if creds.token_reader is not None:
            return creds.token_reader()
        if creds.token_cache is not None and creds.token_cache.exists():
            from appliance.secretfiles import read_secret

            return read_secret(creds.token_cache, "moodle.token_cache")
        return self.renew()

    def renew(self) -> str:
        """Log in again with the password (after `invalidtoken`); AuthError if impossible."""
        creds = self.credentials
        if not creds.can_renew:
            raise AuthError("invalidtoken", "the configured token was refused", "login")
        assert creds.password_reader is not None
        token = self.login(creds.username, creds.password_reader())
        if creds.token_cache is not None:
            from appliance.secretfiles import write_secret

            write_secret(creds.token_cache, token)
        self._token = token
        log.info("obtained a new Moodle token for %s", creds.username)
        return token

    # -- web-service calls -------------------------------------------------------------------
    def call(self, function: str, **params: Any) -> Any:
        """Call a web-service function; the parsed JSON answer, or MoodleError.

        An `invalidtoken` answer renews the token once when a password is configured."""
        for attempt in (1, 2):
            fields = [("wstoken", self.token()), ("wsfunction", function),
                      ("moodlewsrestformat", "json"), *php_params(params)]
            body = self._post_json(REST_PATH, urllib.parse.urlencode(fields).encode(), where=function)
            error = error_from(body, function)
            if error is None:
                self.calls += 1
                return body
            if error.errorcode == "invalidtoken" and attempt == 1 and self.credentials.can_renew:
                log.warning("%s: token refused; logging in again", function)
                self.renew()
                continue
            raise error
        raise AssertionError("unreachable")

    def site_info(self) -> dict[str, Any]:
        return dict(self.call("core_webservice_get_site_info"))

    def user_courses(self, userid: int) -> list[dict[str, Any]]:
        return list(self.call("core_enrol_get_users_courses", userid=userid))

    def course_contents(self, courseid: int) -> list[dict[str, Any]]:
        return list(self.call("core_course_get_contents", courseid=courseid))

    def by_courses(self, modname: str, courseids: Sequence[int]) -> list[dict[str, Any]]:
        """`mod_<x>_get_<x>s_by_courses` for page, book, resource, folder, url, label: the list
        of instances (warnings, e.g. a course not enrolled, are logged)."""
        plural = {"page": "pages", "book": "books", "resource": "resources", "folder": "folders",
                  "url": "urls", "label": "labels"}[modname]
        body = self.call(f"mod_{modname}_get_{plural}_by_courses", courseids=list(courseids))
        for warning in body.get("warnings", []) if isinstance(body, dict) else []:
            log.warning("mod_%s: %s %s: %s", modname, warning.get("item"), warning.get("itemid"),
                        warning.get("message"))
        return list(body.get(plural, [])) if isinstance(body, dict) else []

    def check_updates(self, courseid: int, cmids: Sequence[int], since: int) -> dict[str, Any]:
        """`core_course_check_updates` for these modules since `since` (Unix time)."""
        tocheck = [{"contextlevel": "module", "id": cmid, "since": since} for cmid in cmids]
        return dict(self.call("core_course_check_updates", courseid=courseid, tocheck=tocheck))

    def updates_since(self, courseid: int, since: int) -> dict[str, Any]:
        return dict(self.call("core_course_get_updates_since", courseid=courseid, since=since))

    # -- files -------------------------------------------------------------------------------
    def open_file(self, url: str, *, etag: str | None = None, offset: int = 0) -> FileResponse:
        """GET a `webservice/pluginfile.php` URL with the token; the caller reads and closes
        `body`. `etag` sends If-None-Match (304 when unchanged), `offset` a Range from there
        (206). A JSON body (Moodle's way of saying "error", even with 200) or a 404 raises
        MoodleError; `invalidtoken` renews the token once like `call()`."""
        where = file_path(url)
        for attempt in (1, 2):
            separator = "&" if urllib.parse.urlsplit(url).query else "?"
            full = url + separator + urllib.parse.urlencode({"token": self.token()})
            request = urllib.request.Request(full, method="GET")  # noqa: S310 - http(s) checked in config
            if etag:
                request.add_header("If-None-Match", f'"{etag}"')
            if offset:
                request.add_header("Range", f"bytes={offset}-")
            try:
                response = self._open(request, where)
            except _HTTPStatus as status:
                if status.code == 304:
                    return FileResponse(304, status.headers, None)
                body = _json_or_none(status.body)
                error = error_from(body, where) if body is not None else None
                raise error or MoodleError("http", f"HTTP {status.code}", where) from None
            headers = {k.lower(): v for k, v in response.getheaders()}
            if headers.get("content-type", "").split(";")[0].strip() == "application/json":
                data = response.read()
                response.close()
                self.bytes_received += len(data)
                error = error_from(_json_or_none(data), where)
                if error is None:
                    error = MoodleError("badjson", "a JSON answer where a file was expected", where)
                if error.errorcode == "invalidtoken" and attempt == 1 and self.credentials.can_renew:
                    self.renew()
                    continue
                raise error
            return FileResponse(response.status, headers, _Counting(response, self))
        raise AssertionError("unreachable")

    # -- plumbing ----------------------------------------------------------------------------
    def _post_json(self, path: str, data: bytes, where: str) -> Any:
        request = urllib.request.Request(  # noqa: S310 - http(s) checked in config
            self.base_url + path, data=data, method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            response = self._open(request, where)
        except _HTTPStatus as status:
            body = _json_or_none(status.body)
            error = error_from(body, where) if body is not None else None
            raise error or MoodleError("http", f"HTTP {status.code}", where) from None
        try:
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise MoodleError("network", f"reading the answer failed ({type(exc).__name__})",
                              where) from None
        finally:
            response.close()
        self.bytes_received += len(raw)
        body = _json_or_none(raw)
        if body is None:
            raise MoodleError("badjson", "the answer is not JSON (is the URL a Moodle site?)", where)
        return body

    def _open(self, request: urllib.request.Request, where: str) -> http.client.HTTPResponse:
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310
        except urllib.error.HTTPError as exc:
            # Never str(exc) or exc.url: both may carry the token.
            headers = {k.lower(): v for k, v in (exc.headers.items() if exc.headers else [])}
            try:
                body = exc.read()
            except (OSError, http.client.HTTPException):
                body = b""
            raise _HTTPStatus(exc.code, headers, body) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            text = "timed out" if isinstance(reason, socket.timeout | TimeoutError) else (
                getattr(reason, "strerror", None) or type(reason).__name__)
            raise MoodleError("network", f"cannot reach Moodle ({text})", where) from None
        except TimeoutError:
            raise MoodleError("network", "cannot reach Moodle (timed out)", where) from None
        except (OSError, http.client.HTTPException) as exc:
            raise MoodleError("network", f"cannot reach Moodle ({type(exc).__name__})", where) from None
        return response  # type: ignore[no-any-return]


class _HTTPStatus(Exception):
    def __init__(self, code: int, headers: dict[str, str], body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body


class _Counting:
    """A response body that counts the bytes read into the client's total."""

    def __init__(self, response: http.client.HTTPResponse, client: Client) -> None:
        self._response = response
        self._client = client

    def read(self, n: int = -1) -> bytes:
        data = self._response.read(n)
        self._client.bytes_received += len(data)
        return data

    def read1(self, n: int = -1) -> bytes:
        data = self._response.read1(n)
        self._client.bytes_received += len(data)
        return data

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> _Counting:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
