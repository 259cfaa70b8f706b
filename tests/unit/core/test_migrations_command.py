"""`appliance migrations`: what ran and what would run, without writing."""

from __future__ import annotations

import json

from appliance.cli import cli
from appliance.console.schema import COMPONENT, MIGRATIONS
from appliance.lab.parts import write_toml
from appliance.store import migrate, open_db


def config_file(tmp_path):
    path = tmp_path / "appliance.toml"
    write_toml(path, {"appliance": {"id": "unit-1", "state_dir": str(tmp_path / "state")}})
    return path


def run(runner, path, *args):
    result = runner.invoke(cli, ["--config", str(path), "migrations", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_everything_is_pending_on_a_new_machine_and_nothing_is_created(runner, tmp_path):
    rows = json.loads(run(runner, config_file(tmp_path), "--pending", "--json"))
    assert {r["component"] for r in rows} == {"fleet.agent", "console", "provision", "network",
                                              "moodle", "devices", "content", "filter"}
    assert all(r["state"] == "pending" for r in rows)
    assert not (tmp_path / "state").exists()


def test_applied_migrations_are_listed_and_pending_leaves_the_file_untouched(runner, tmp_path):
    path = config_file(tmp_path)
    db_path = tmp_path / "state" / "console.db"
    db = open_db(db_path)
    migrate(db, COMPONENT, MIGRATIONS[:1])
    db.conn.close()
    before = db_path.read_bytes()

    rows = json.loads(run(runner, path, "--json"))
    console = [r for r in rows if r["component"] == "console"]
    assert [r["state"] for r in console] == ["applied"] + ["pending"] * (len(MIGRATIONS) - 1)
    pending_only = json.loads(run(runner, path, "--pending", "--json"))
    assert all(r["state"] == "pending" for r in pending_only)
    assert {r["version"] for r in pending_only if r["component"] == "console"} == {
        m.version for m in MIGRATIONS[1:]}
    assert db_path.read_bytes() == before
    assert "pending  console" in run(runner, path, "--pending")


def test_a_database_newer_than_the_software_is_a_clear_error(runner, tmp_path):
    path = config_file(tmp_path)
    db = open_db(tmp_path / "state" / "console.db")
    migrate(db, COMPONENT, MIGRATIONS)
    db.execute("INSERT INTO _migrations VALUES ('console', 999, 'future', 0)")
    db.conn.close()
    result = runner.invoke(cli, ["--config", str(path), "migrations"])
    assert result.exit_code == 1
    assert "newer than this software knows" in result.output
