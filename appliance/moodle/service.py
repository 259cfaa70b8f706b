"""Building the mirror's parts from the configuration: paths, store, client, `Mirror`."""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

from appliance.config import Config, ConfigError
from appliance.moodle import schema
from appliance.moodle.blobs import FileBlobStore
from appliance.moodle.client import Client, Credentials
from appliance.moodle.mirror import Mirror
from appliance.secretfiles import read_secret
from appliance.store import migrate, open_db


def mirror_dir(cfg: Config) -> Path:
    """The mirror's folder: blobs, partial downloads, the renewed token (mode 0600)."""
    return cfg.appliance.state_dir / "moodle"


def open_database(cfg: Config) -> sqlite_utils.Database:
    db = open_db(cfg.database_path)
    migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    return db


def build_client(cfg: Config) -> Client:
    """The client for `[moodle]`; ConfigError when there is no site or account configured."""
    m = cfg.moodle
    if not m.url:
        raise ConfigError(cfg.source, "moodle.url", "is not set: there is no Moodle to mirror")
    token_file, password_file = m.token_file, m.password_file
    credentials = Credentials(
        token_reader=(lambda: read_secret(token_file, "moodle.token_file")) if token_file else None,
        username=m.username,
        password_reader=(
            (lambda: read_secret(password_file, "moodle.password_file")) if password_file else None),
        token_cache=mirror_dir(cfg) / "token" if password_file else None,
    )
    return Client(m.url, credentials, timeout=m.timeout)


def build_mirror(cfg: Config, db: sqlite_utils.Database) -> Mirror:
    root = mirror_dir(cfg)
    return Mirror(db, FileBlobStore(root / "blobs"), root / "work", cfg.moodle.url,
                  reserve=cfg.moodle.min_free_mb * 1_000_000, grace=cfg.moodle.grace_days * 86400.0)


def store(cfg: Config) -> FileBlobStore:
    return FileBlobStore(mirror_dir(cfg) / "blobs")
