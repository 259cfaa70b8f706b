from pathlib import Path

import pytest

from appliance import config


@pytest.fixture
def cfg(tmp_path: Path) -> config.Config:
    return config.from_dict({
        "appliance": {"id": "unit-console", "name": "Unit", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": "127.0.0.1", "port": 1, "tls": False},
        "portal": {"content_dir": str(tmp_path / "content")},
        "console": {"cookie_secure": False, "offline_after": 30.0},
    })
