"""Every command is documented: help text of its own, and a row in the README's command table."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from appliance.cli import cli

README = Path(__file__).resolve().parents[3] / "README.md"


def command_paths(group: click.Group, prefix: str = "appliance") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found += command_paths(command, path)
    return found


def documented_commands(readme: str) -> set[str]:
    """Commands in the README's table rows: `| \\`appliance lab\\` | ... |` (arguments dropped)."""
    rows = re.findall(r"^\| `(appliance [^`]*)` \|", readme, re.M)
    return {" ".join(w for w in row.split() if re.fullmatch(r"[a-z][a-z0-9-]*", w)) for row in rows}


def undocumented(group: click.Group, readme: str) -> list[str]:
    table = documented_commands(readme)
    return [path for path, _ in command_paths(group) if path not in table]


def without_help(group: click.Group) -> list[str]:
    return [path for path, command in command_paths(group) if not (command.help or "").strip()]


def test_every_command_has_help_text():
    assert without_help(cli) == []


def test_every_command_is_in_the_readme_table():
    assert undocumented(cli, README.read_text()) == []


@pytest.mark.parametrize("path", [p for p, _ in command_paths(cli)])
def test_help_runs(runner, path):
    result = runner.invoke(cli, [*path.split()[1:], "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_the_guards_catch_a_new_command_without_help_or_docs():
    group = click.Group("appliance")
    sub = click.Group("widget", help="Widgets.")
    group.add_command(sub)

    @sub.command("spin")
    def spin() -> None:
        pass

    readme = "| `appliance widget` | widgets |\n"
    assert without_help(group) == ["appliance widget spin"]
    assert undocumented(group, readme) == ["appliance widget spin"]
    assert undocumented(group, readme + "| `appliance widget spin [--fast]` | spin |\n") == []
