"""`appliance network render`: writes only what differs, and says which (provisioning reports a
run as changed by that list)."""

from __future__ import annotations

import json

from appliance.cli import cli
from appliance.lab.parts import write_toml


def config_file(tmp_path):
    secret = tmp_path / "hotspot-passphrase"
    secret.write_text("correct-horse-battery\n")
    secret.chmod(0o600)
    path = tmp_path / "appliance.toml"
    write_toml(path, {
        "appliance": {"id": "unit-1", "state_dir": str(tmp_path / "state")},
        "network": {"render_dir": str(tmp_path / "rendered"),
                    "radio": {"ssid": "Room 7", "country": "DE", "passphrase_file": str(secret)}},
    })
    return path


def render(runner, path):
    result = runner.invoke(cli, ["--config", str(path), "network", "render", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_a_second_render_writes_nothing_and_a_drifted_file_is_rewritten(runner, tmp_path):
    path = config_file(tmp_path)
    first = render(runner, path)
    assert "hostapd.conf" in first["files"] and first["changed"] == first["files"]
    rendered = tmp_path / "rendered"
    hostapd = rendered / "hostapd.conf"
    assert (hostapd.stat().st_mode & 0o777) == 0o600
    mtimes = {name: (rendered / name).stat().st_mtime_ns for name in first["files"]}

    second = render(runner, path)
    assert second["files"] == first["files"] and second["changed"] == []
    assert {name: (rendered / name).stat().st_mtime_ns for name in first["files"]} == mtimes

    text = hostapd.read_text()
    hostapd.write_text(text + "# edited by hand\n")
    dnsmasq = rendered / "dnsmasq.conf"
    dnsmasq.chmod(0o666)
    third = render(runner, path)
    assert sorted(third["changed"]) == ["dnsmasq.conf", "hostapd.conf"]
    assert hostapd.read_text() == text and (dnsmasq.stat().st_mode & 0o777) == 0o644
