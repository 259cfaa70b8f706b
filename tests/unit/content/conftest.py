
import pytest

from appliance.content import schema
from appliance.content.store import ContentStore
from appliance.store import migrate, open_db
from tests.conftest import SHARED

ZIM = SHARED / "data" / "zim"


@pytest.fixture
def store(cfg):
    db = open_db(cfg.database_path)
    migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    yield ContentStore(cfg.content.root, db)
    db.conn.close()
