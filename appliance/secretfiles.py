"""Secrets kept in their own files, readable by their owner only (mode 0600).

Secrets never travel through the TOML config or the logs: the config names the file, this module
reads it and refuses one that others can read.
"""

from __future__ import annotations

import os
import secrets as _random
import stat
from pathlib import Path

from appliance.config import ConfigError


def check_private(path: Path, key: str) -> None:
    """Refuse a secret (password, private key) that is missing or that group or others can read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(path, key, "secret file does not exist") from None
    except OSError as exc:
        raise ConfigError(path, key, f"cannot read secret file: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            path, key, f"secret file is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run: chmod 600 {path}"
        )


def read_secret(path: Path, key: str) -> str:
    """Return the secret in `path` (stripped). Refuse a file that group or others can read."""
    check_private(path, key)
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise ConfigError(path, key, "secret file is empty")
    return value


def write_secret(path: Path, value: str) -> None:
    """Write a secret atomically with mode 0600 from the first byte (no window where others can read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, value.encode("utf-8") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_secret(path: Path, key: str, nbytes: int = 32) -> str:
    """Read the secret in `path`, generating a random one first if the file does not exist."""
    if not path.exists():
        write_secret(path, _random.token_urlsafe(nbytes))
    return read_secret(path, key)
