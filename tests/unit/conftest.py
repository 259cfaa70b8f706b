from pathlib import Path

import pytest

from appliance import config


@pytest.fixture
def cfg(tmp_path: Path) -> config.Config:
    return config.from_dict({
        "appliance": {"id": "unit-console", "name": "Unit", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": "127.0.0.1", "port": 1, "tls": False},
        "content": {"root": str(tmp_path / "content")},
        "console": {"cookie_secure": False, "offline_after": 30.0},
    })


@pytest.fixture
def store_for():
    """A content store on a config's root (its tables migrated), closed after the test."""
    from appliance.content import schema
    from appliance.content.store import ContentStore
    from appliance.store import migrate, open_db

    opened = []

    def make(cfg: config.Config) -> ContentStore:
        db = open_db(cfg.database_path)
        migrate(db, schema.COMPONENT, schema.MIGRATIONS)
        opened.append(db)
        return ContentStore(cfg.content.root, db)

    yield make
    for db in opened:
        db.conn.close()
