"""The docs are part of the product: their examples must load, and every key must be there."""

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance import config

DOCS = Path(__file__).resolve().parents[3] / "docs"


def toml_examples() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", (DOCS / "configuration.md").read_text(), re.S)


def test_configuration_examples_are_valid():
    examples = [t for t in toml_examples() if not t.startswith("# illustration")]
    assert len(examples) >= 2
    for text in examples:
        config.from_dict(tomllib.loads(text))
    for text in toml_examples():  # illustrations of keys that do not exist must still be TOML
        tomllib.loads(text)


def tables(name: str, cls: type) -> list[tuple[str, type]]:
    """The headings configuration.md must have for `cls` at `name`: its own, `[name]`, and one
    per nested table, `[name.key]`, or array of tables, `[[name.key]]`, at any depth."""
    found = [(f"[{name}]", cls)]
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint, many = hints[f.name], False
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if typing.get_origin(hint) is tuple:
            hint, many = typing.get_args(hint)[0], True
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            for heading, inner in tables(f"{name}.{f.name}", hint):
                if many and heading == f"[{name}.{f.name}]":
                    heading = f"[{heading}]"
                found.append((heading, inner))
    return found


@dataclass(frozen=True)
class _Radio:
    channel: int = 6


@dataclass(frozen=True)
class _Source:
    url: str
    mirror: _Radio | None = None


@dataclass(frozen=True)
class _Network:
    radio: _Radio = field(default_factory=_Radio)
    lists: tuple[_Source, ...] = ()
    macs: tuple[str, ...] = ()


def test_tables_finds_nested_tables_and_arrays_of_tables():
    assert tables("network", _Network) == [
        ("[network]", _Network), ("[network.radio]", _Radio),
        ("[[network.lists]]", _Source), ("[network.lists.mirror]", _Radio),
    ]


@pytest.mark.parametrize(
    ("heading", "cls"),
    [pair for name, cls in config.SECTIONS.items() for pair in tables(name, cls)],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_every_key_is_documented_in_its_section(heading, cls):
    text = (DOCS / "configuration.md").read_text()
    assert f"## `{heading}`" in text
    part = text.split(f"## `{heading}`", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_][a-z0-9_]*)` \|", part, re.M))
    keys = {f.name for f in dataclasses.fields(cls)}
    assert keys == documented


def test_architecture_names_every_topic_the_code_builds():
    from appliance.fleet import topics

    text = (DOCS / "architecture.md").read_text()
    for kind in (topics.STATUS, topics.TELEMETRY, topics.ACK, topics.SUMMARY):
        assert f"edge/v1/dev/<id>/{kind}`" in text
