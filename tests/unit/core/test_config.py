from pathlib import Path

import pytest

from appliance import config
from appliance.config import ConfigError

MINIMAL = '[appliance]\nid = "school-1"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(text)
    return path


def test_minimal_file_gets_documented_defaults(tmp_path):
    cfg = config.load(write(tmp_path, MINIMAL))
    assert cfg.appliance.id == "school-1"
    assert cfg.portal.port == 80
    assert cfg.mqtt.tls is True
    assert cfg.mqtt.keepalive == 30
    assert cfg.agent.interval == 60.0
    assert cfg.database_path == Path("/var/lib/appliance/appliance.db")


def test_values_are_typed(tmp_path):
    cfg = config.load(write(tmp_path, MINIMAL + "[agent]\ninterval = 5\n"))
    assert isinstance(cfg.agent.interval, float)


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        (MINIMAL + "[portal]\nport = 70000\n", "portal.port", "TCP port"),
        (MINIMAL + '[portal]\nport = "80"\n', "portal.port", "whole number"),
        (MINIMAL + "[portal]\nprot = 80\n", "portal.prot", "unknown key"),
        (MINIMAL + "[portl]\nport = 80\n", "portl", "unknown section"),
        ('[appliance]\nid = "School 1"\n', "appliance.id", "a-z"),
        ('[appliance]\nid = "school-1\\n"\n', "appliance.id", "a-z"),
        ("[appliance]\nname = 'x'\n", "appliance.id", "required"),
        ("[portal]\nport = 80\n", "appliance", "required"),
        (MINIMAL + '[appliance.log]\n', "appliance.log", "unknown key"),
        (MINIMAL.replace('"school-1"', '"s"') + 'log_level = "loud"\n', "appliance.log_level", "one of"),
        (MINIMAL + "[mqtt]\ntls = 1\n", "mqtt.tls", "true or false"),
        (MINIMAL + '[mqtt]\ncert_file = "/c.pem"\n', "mqtt.key_file", "go together"),
        (MINIMAL + '[mqtt]\npassword_file = "/p"\n', "mqtt.username", "required"),
        (MINIMAL + '[mqtt]\ntopic_root = "edge/#"\n', "mqtt.topic_root", "topic levels"),
        (MINIMAL + "[agent]\ninterval = 0\n", "agent.interval", "0.5-3600"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path, text, key, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert err.value.key == key
    assert fragment in str(err.value)
    assert str(path) in str(err.value)


def test_missing_file_says_how_to_point_elsewhere(tmp_path):
    with pytest.raises(ConfigError, match=r"no such file \(pass --config or set \$APPLIANCE_CONFIG\)"):
        config.load(tmp_path / "nope.toml")


def test_broken_toml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[appliance\nid = 1"))


def test_binary_garbage_is_a_config_error(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(path)


def test_environment_variable_selects_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, MINIMAL)
    monkeypatch.setenv("APPLIANCE_CONFIG", str(path))
    assert config.load().source == path
    assert config.resolve_path("/explicit.toml") == Path("/explicit.toml")
