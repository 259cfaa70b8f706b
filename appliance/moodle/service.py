"""Building the mirror's parts from the configuration: paths, the library's store, client, `Mirror`."""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

from appliance.config import Config, ConfigError
from appliance.content import schema as content_schema
from appliance.content.download import Limits
from appliance.content.store import ContentStore
from appliance.moodle import schema
from appliance.moodle.client import Client, Credentials
from appliance.moodle.mirror import Mirror
from appliance.secretfiles import read_secret
from appliance.store import migrate, open_db


def mirror_dir(cfg: Config) -> Path:
    """The mirror's folder: the sync lock and the renewed token (mode 0600). Files are in the
    library's content store (`[content] root`)."""
    return cfg.appliance.state_dir / "moodle"


def open_database(cfg: Config) -> sqlite_utils.Database:
    db = open_db(cfg.database_path)
    # The mirror's files and search documents are in the library's tables.
    migrate(db, content_schema.COMPONENT, content_schema.MIGRATIONS)
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


def content_store(cfg: Config, db: sqlite_utils.Database) -> ContentStore:
    return ContentStore(cfg.content.root, db, require_mount=cfg.content.require_mount)


def build_mirror(cfg: Config, db: sqlite_utils.Database, limits: Limits | None = None) -> Mirror:
    """The mirror on the library's store; `limits` (the library's bandwidth cap and windows)
    apply to its downloads."""
    return Mirror(db, content_store(cfg, db), mirror_dir(cfg) / "work", cfg.moodle.url,
                  reserve=cfg.moodle.min_free_mb * 1_000_000, grace=cfg.moodle.grace_days * 86400.0,
                  limits=limits or Limits())
