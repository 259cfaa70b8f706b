"""The docs are part of the product: their examples must load, and every key must be there."""

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from appliance import config

DOCS = Path(__file__).resolve().parents[3] / "docs"


def toml_examples() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", (DOCS / "configuration.md").read_text(), re.S)


def test_configuration_examples_are_valid():
    examples = toml_examples()
    assert len(examples) >= 2
    for text in examples:
        config.from_dict(tomllib.loads(text))


@pytest.mark.parametrize("section", list(config.SECTIONS))
def test_every_key_is_documented_in_its_section(section):
    text = (DOCS / "configuration.md").read_text()
    part = text.split(f"## `[{section}]`", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", part, re.M))
    keys = {f.name for f in dataclasses.fields(config.SECTIONS[section])}
    assert keys == documented


def test_architecture_names_every_topic_the_code_builds():
    from appliance.fleet import topics

    text = (DOCS / "architecture.md").read_text()
    for kind in (topics.STATUS, topics.TELEMETRY, topics.ACK, topics.SUMMARY):
        assert f"edge/v1/dev/<id>/{kind}`" in text
