"""The console database for web requests: one connection per request on `g`, closed after it."""

from __future__ import annotations

from pathlib import Path

import sqlite_utils
from flask import Flask, current_app, g

from appliance.config import Config
from appliance.console.schema import COMPONENT, MIGRATIONS
from appliance.store import migrate, open_db


def open_migrated(config: Config) -> sqlite_utils.Database:
    """The console database of this config, its schema brought up to date (for commands and
    workers; web requests use `get_db()`)."""
    database = open_db(config.console_database_path)
    migrate(database, COMPONENT, MIGRATIONS)
    return database


def init_app(app: Flask, path: Path) -> None:
    app.config["CONSOLE_DB"] = path
    # Migrate once at start so a request never races a schema change.
    database = open_db(path)
    migrate(database, COMPONENT, MIGRATIONS)
    database.conn.close()
    app.teardown_appcontext(_close)


def get_db() -> sqlite_utils.Database:
    if "db" not in g:
        g.db = open_db(current_app.config["CONSOLE_DB"])
    database: sqlite_utils.Database = g.db
    return database


def _close(exc: BaseException | None = None) -> None:
    database = g.pop("db", None)
    if database is not None:
        database.conn.close()
