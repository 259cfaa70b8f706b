import os

import pytest

from appliance.config import ConfigError
from appliance.secretfiles import ensure_secret, read_secret, write_secret


def test_generated_secret_is_private_and_stable(tmp_path):
    path = tmp_path / "s" / "key"
    first = ensure_secret(path, "console.secret_key_file")
    assert len(first) >= 40
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert ensure_secret(path, "console.secret_key_file") == first


def test_secret_readable_by_others_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "password"
    write_secret(path, "hunter2hunter2")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=f"chmod 600 {path}") as err:
        read_secret(path, "mqtt.password_file")
    assert err.value.key == "mqtt.password_file"
    assert "hunter2" not in str(err.value)


def test_missing_or_empty_secret_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_secret(tmp_path / "nope", "mqtt.password_file")
    write_secret(tmp_path / "empty", "")
    with pytest.raises(ConfigError, match="empty"):
        read_secret(tmp_path / "empty", "mqtt.password_file")
