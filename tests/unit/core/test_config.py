import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import config
from appliance.config import ConfigError, RuleError

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


def test_tls_off_with_tls_files_names_tls(tmp_path):
    path = write(tmp_path, MINIMAL + '[mqtt]\ntls = false\nca_file = "/ca.pem"\n')
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert err.value.key == "mqtt.tls"
    assert str(err.value) == f"{path}: mqtt.tls: is false but TLS files are set; set tls = true"


def test_a_section_that_is_not_a_table_echoes_the_value(tmp_path):
    path = write(tmp_path, 'portal = 5\n' + MINIMAL)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert str(err.value) == f"{path}: portal: must be a table ([portal]) (got 5)"


def test_rules_across_sections_name_the_key_they_give(monkeypatch):
    def check(self: config.Config) -> None:
        if self.mqtt.host == self.appliance.id:
            raise RuleError("mqtt.host", "must not be this machine's id")

    monkeypatch.setattr(config.Config, "check", check)
    with pytest.raises(ConfigError) as err:
        config.from_dict({"appliance": {"id": "x"}, "mqtt": {"host": "x"}})
    assert (err.value.key, err.value.message) == ("mqtt.host", "must not be this machine's id")
    config.from_dict({"appliance": {"id": "x"}, "mqtt": {"host": "y"}})


# --- lists, nested tables, arrays of tables: test-only sections built with config.build() -----

MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def _mac(value: str) -> None:
    if not MAC.fullmatch(value):
        raise ValueError("must be a MAC address like 02:00:00:00:00:01")


def _channel(value: int) -> None:
    if not 1 <= value <= 165:
        raise ValueError("must be 1-165")


@dataclass(frozen=True)
class Radio:
    channel: int = field(default=6, metadata=config.rule(_channel))
    band: Literal["2.4", "5"] = "2.4"

    def check(self) -> None:
        if self.band == "5" and self.channel < 36:
            raise RuleError("channel", "must be 36 or more on band 5")


@dataclass(frozen=True)
class Source:
    url: str
    weight: float = 1.0
    tags: tuple[str, ...] = ()
    mirror: Radio | None = None  # an optional nested table, to cover "" / left out


@dataclass(frozen=True)
class Demo:
    trusted_macs: tuple[str, ...] = field(default=(), metadata=config.rule(each=_mac))
    ports: tuple[int, ...] = (80,)
    dirs: tuple[Path, ...] = ()
    modes: tuple[Literal["a", "b"], ...] = ("a",)
    flags: tuple[bool, ...] = ()
    ratios: tuple[float, ...] = ()
    radio: Radio = field(default_factory=Radio)
    lists: tuple[Source, ...] = ()
    state: Path | None = None

    def check(self) -> None:
        if len(set(self.trusted_macs)) != len(self.trusted_macs):
            raise RuleError("trusted_macs", "lists a MAC twice")
        if self.radio.band == "5" and 5 in self.ports:
            raise RuleError("radio.band", "5 is not allowed with port 5")


DEMO_TOML = """
[network]
trusted_macs = ["02:00:00:00:00:01", "02:00:00:00:00:02"]
ports = [80, 8080]
dirs = ["/srv/a", "/srv/b"]
modes = ["b", "a"]
ratios = [1, 2.5]

[network.radio]
channel = 40
band = "5"

[[network.lists]]
url = "https://lists.example/ads.txt"
tags = ["ads"]

[[network.lists]]
url = "https://lists.example/malware.txt"
weight = 2

[network.lists.mirror]
channel = 1
"""


def test_lists_nested_tables_and_arrays_of_tables_are_typed(tmp_path):
    demo = config.build(Demo, tomllib.loads(DEMO_TOML)["network"], "network", tmp_path / "x.toml")
    assert demo.trusted_macs == ("02:00:00:00:00:01", "02:00:00:00:00:02")
    assert demo.ports == (80, 8080)
    assert demo.dirs == (Path("/srv/a"), Path("/srv/b"))
    assert demo.ratios == (1.0, 2.5) and isinstance(demo.ratios[0], float)
    assert demo.radio == Radio(channel=40, band="5")
    assert demo.lists == (
        Source("https://lists.example/ads.txt", tags=("ads",)),
        Source("https://lists.example/malware.txt", weight=2.0, mirror=Radio(channel=1)),
    )
    assert demo.flags == () and demo.state is None
    assert config.build(Demo, {}, "network") == Demo()
    hash(demo)  # tuples, not lists: a section stays hashable


@pytest.mark.parametrize(
    ("values", "key", "message"),
    [
        ({"trusted_macs": "02:00:00:00:00:01"}, "network.trusted_macs",
         "must be an array [...] (got '02:00:00:00:00:01')"),
        ({"trusted_macs": ["02:00:00:00:00:01", 5]}, "network.trusted_macs[1]", "must be a string (got 5)"),
        ({"trusted_macs": ["02:00:00:00:00:01", "nope"]}, "network.trusted_macs[1]",
         "must be a MAC address like 02:00:00:00:00:01 (got 'nope')"),
        ({"trusted_macs": ["02:00:00:00:00:01"] * 2}, "network.trusted_macs", "lists a MAC twice"),
        ({"ports": [80, 80.5]}, "network.ports[1]", "must be a whole number (got 80.5)"),
        ({"dirs": [""]}, "network.dirs[0]", "must be a non-empty path string (got '')"),
        ({"modes": ["c"]}, "network.modes[0]", "must be one of 'a', 'b' (got 'c')"),
        ({"flags": [1]}, "network.flags[0]", "must be true or false (got 1)"),
        ({"radio": 5}, "network.radio", "must be a table ([network.radio]) (got 5)"),
        ({"radio": {"channel": 999}}, "network.radio.channel", "must be 1-165 (got 999)"),
        ({"radio": {"chanel": 1}}, "network.radio.chanel",
         "unknown key; [network.radio] accepts channel, band"),
        ({"radio": {"band": "5"}}, "network.radio.channel", "must be 36 or more on band 5"),
        ({"radio": {"band": "5", "channel": 36}, "ports": [5]}, "network.radio.band",
         "5 is not allowed with port 5"),
        ({"lists": {"url": "x"}}, "network.lists", "must be an array [...] (got {'url': 'x'})"),
        ({"lists": [{"url": "a"}, {"url": "b"}, {"weight": 2}]}, "network.lists[2].url", "is required"),
        ({"lists": [5]}, "network.lists[0]", "must be a table ([[network.lists]]) (got 5)"),
        ({"lists": [{"url": "a", "bogus": 1}]}, "network.lists[0].bogus",
         "unknown key; [[network.lists]] accepts url, weight, tags, mirror"),
        ({"lists": [{"url": "a", "tags": ["x", 1]}]}, "network.lists[0].tags[1]", "must be a string (got 1)"),
        ({"lists": [{"url": "a", "mirror": {"band": "5"}}]}, "network.lists[0].mirror.channel",
         "must be 36 or more on band 5"),
        ({"lists": [{"url": "a", "mirror": {"x": 1}}]}, "network.lists[0].mirror.x",
         "unknown key; [network.lists.mirror] accepts channel, band"),
    ],
)
def test_errors_in_lists_and_tables_name_the_full_key_path(tmp_path, values, key, message):
    path = tmp_path / "x.toml"
    with pytest.raises(ConfigError) as err:
        config.build(Demo, values, "network", path)
    assert (err.value.key, err.value.message) == (key, message)
    assert str(err.value) == f"{path}: {key}: {message}"


def test_optional_nested_table_is_unset_by_empty_string():
    demo = config.build(Demo, {"lists": [{"url": "a", "mirror": ""}]}, "network")
    assert demo.lists[0].mirror is None


def test_unsupported_field_types_are_a_bug_in_config_py():
    @dataclass(frozen=True)
    class Bad:
        pair: tuple[int, int] = (1, 2)

    with pytest.raises(TypeError, match="only tuple"):
        config.build(Bad, {"pair": [1, 2]}, "bad")


# --- dump: every key of every section, non-default, read back equal ------------------------------

# The URL first: [moodle] url accepts no other candidate.
STRINGS = ["https://moodle.example/school",
           'quote " back \\ tab\t new\nline é ☃ 😀 \x7f', "edge/v2", "node-7", "x", "02:00:00:00:00:0a",
           # valid values of the [network] keys (MACs, names, addresses, a country), in pairs
           "02:00:00:00:00:0b", "school.example", "www.school.example", "10.9.0.1/24",
           "10.9.0.10", "10.9.0.20", "fd00:1::1/64", "203.0.113.9", "DE", "_ipp._tcp",
           # [content] windows
           "22:00-06:00", "07:30-08:00",
           # what [filter] keys accept: a time zone, times of day, days, host:port, MACs and IP
           # addresses (two in a row: arrays are tried as neighbouring pairs), an IP range
           "Europe/Paris", "10:30", "11:45", "mon,wed", "127.0.0.1:53", "02:00:00:00:00:0a",
           "02:00:00:00:00:0b", "192.0.2.1", "2001:db8::1", "10.0.0.0/24",
           # [network.helper] usb_devices: globs of block device paths
           "/dev/sd[b-z]1", "/dev/sdb"]


def _candidates(hint, default):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        return _candidates(inner, None)
    if origin is Literal:
        return list(typing.get_args(hint))
    if origin is tuple:
        items = _candidates(typing.get_args(hint)[0], None)
        # Pairs first, then every item alone (a rule on each item may accept only one of them).
        return [tuple(items[i:i + 2]) for i in range(len(items))] + [(item,) for item in items]
    if dataclasses.is_dataclass(hint):
        return [non_default(hint)]
    if hint is bool:
        return [not default]
    if hint is int:
        base = default if isinstance(default, int) else 5
        return [base + 1, base - 1, 3, 42, 36, 65000]  # 36: a 5 GHz channel
    if hint is float:
        base = default if isinstance(default, float) else 1.0
        return [base * 2 + 0.5, base / 2, 1.5]
    if hint is str:
        return STRINGS
    if hint is Path:
        return [Path('/tmp/ünï "côde"/x\\y'), Path("/srv/b")]
    raise AssertionError(f"add candidates for {hint!r}")


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _passes(f, value) -> bool:
    try:
        if f.metadata.get("each"):
            for item in value:
                f.metadata["each"](item)
        if f.metadata.get("check"):
            f.metadata["check"](value)
    except ValueError:
        return False
    return True


def non_default(cls, only: str | None = None):
    """An instance of `cls` with each field (or just `only`) set to a valid non-default value.

    When a `check()` rule refuses, the field it names tries its next candidate; a field with no
    candidate left is put back to its default and recorded in `reset_by_rules`."""
    hints = typing.get_type_hints(cls)
    options, kwargs = {}, {}
    for f in dataclasses.fields(cls):
        default = _default(f)
        if only is not None and f.name != only and default is not dataclasses.MISSING:
            continue
        options[f.name] = iter(
            [v for v in _candidates(hints[f.name], default) if v != default and _passes(f, v)])
        kwargs[f.name] = next(options[f.name])
    while True:
        obj = cls(**kwargs)
        try:
            if hasattr(obj, "check"):
                obj.check()
            return obj
        except RuleError as exc:
            name = exc.key.split(".")[0].split("[")[0]
            if name not in kwargs:  # the rule wants a partner key set: give up on `only`
                name = only
            assert name in kwargs and _default(cls.__dataclass_fields__[name]) is not dataclasses.MISSING
            kwargs[name] = next(options[name], dataclasses.MISSING)
            if kwargs[name] is dataclasses.MISSING:
                reset_by_rules.add(f"{cls.__name__}.{name}")
                del kwargs[name]


reset_by_rules: set[str] = set()


def round_trip(cfg: config.Config, tmp_path: Path) -> config.Config:
    path = tmp_path / "dumped.toml"
    path.write_text(config.dump(cfg), encoding="utf-8")
    return config.load(path)


def test_every_key_of_every_section_survives_dump_and_load(tmp_path):
    reset_by_rules.clear()
    cfg = config.Config(**{name: non_default(cls) for name, cls in config.SECTIONS.items()})
    assert round_trip(cfg, tmp_path) == cfg
    written = tomllib.loads(config.dump(cfg))
    for name, cls in config.SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f"{cls.__name__}.{f.name}" in reset_by_rules:
                continue
            assert getattr(getattr(cfg, name), f.name) != _default(f), f"{name}.{f.name}"
            assert f.name in written[name], f"{name}.{f.name}"

    # A key a rule kept at its default above (mqtt.tls, as TLS files are set) on its own.
    kept = set(reset_by_rules)
    for name, cls in config.SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f"{cls.__name__}.{f.name}" in kept:
                reset_by_rules.clear()
                alone = config.Config(
                    appliance=non_default(config.ApplianceSection, only="id"),
                    **{name: non_default(cls, only=f.name)} if name != "appliance" else {},
                )
                assert not reset_by_rules, f"{name}.{f.name} cannot be set in any tested config"
                assert getattr(getattr(alone, name), f.name) != _default(f)
                assert round_trip(alone, tmp_path) == alone
    # Update when a rule keeps another key at its default. A filter list has a path or a url;
    # the path's layout rule follows it (both are covered by the filter's own tests).
    assert kept == {"MqttSection.tls", "FilterListTable.path", "FilterListTable.layout"}


def test_default_config_dumps_and_loads_equal(tmp_path):
    cfg = config.from_dict({"appliance": {"id": "x"}})
    assert round_trip(cfg, tmp_path) == cfg
    assert "ca_file" not in config.dump(cfg)  # None is left out: TOML has no null


def test_unset_optional_with_another_default_is_written_as_empty_string():
    @dataclass(frozen=True)
    class Opt:
        where: Path | None = Path("/default")

    table = config.to_table(Opt(where=None))
    assert table == {"where": ""}
    assert config.build(Opt, tomllib.loads(config.dump_toml({"o": table}))["o"], "o") == Opt(where=None)


def test_test_sections_with_lists_and_tables_survive_dump_and_build():
    demo = non_default(Demo)
    assert demo.lists and demo.lists[0].mirror and demo.radio != Radio()
    text = config.dump_toml({"network": config.to_table(demo)})
    assert "[[network.lists]]" in text and "[network.radio]" in text
    assert config.build(Demo, tomllib.loads(text)["network"], "network") == demo


# --- dump_toml -------------------------------------------------------------------------------------


def test_dump_toml_writes_sections_nested_tables_and_arrays_of_tables():
    text = config.dump_toml({
        "appliance": {"id": "x", "state_dir": Path("/var/lib/x"), "unset": None},
        "empty": {},
        "filter": {"lists": [{"url": "a", "sub": {"k": 1}}, {"url": "b"}], "n": 2,
                   "radio": {"channel": 6}, "mixed": [1, "a", {"inline": True}], "none": []},
    })
    assert text == (
        '[appliance]\nid = "x"\nstate_dir = "/var/lib/x"\n'
        "\n[empty]\n"
        '\n[filter]\nn = 2\nmixed = [1, "a", { inline = true }]\nnone = []\n'
        "\n[filter.radio]\nchannel = 6\n"
        '\n[[filter.lists]]\nurl = "a"\n'
        "\n[filter.lists.sub]\nk = 1\n"
        '\n[[filter.lists]]\nurl = "b"\n'
    )
    assert tomllib.loads(text)["filter"]["lists"] == [{"url": "a", "sub": {"k": 1}}, {"url": "b"}]


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ('say "hi"', r'"say \"hi\""'),
        ("C:\\dir\\", r'"C:\\dir\\"'),
        ("a\nb\tc\rd\be\ff", r'"a\nb\tc\rd\be\ff"'),
        ("nul\x00 esc\x1b del\x7f", r'"nul\u0000 esc\u001b del\u007f"'),
        ("é ☃ 😀 \u2028", '"é ☃ 😀 \u2028"'),
        ("", '""'),
    ],
)
def test_dump_toml_escapes_strings(value, written):
    text = config.dump_toml({"s": {"v": value}})
    assert text == f"[s]\nv = {written}\n"
    assert tomllib.loads(text)["s"]["v"] == value


def test_dump_toml_quotes_keys_that_are_not_bare():
    data = {"a b": {"x.y": 1, 'q"': 2, "": 3, "é": 4}, "ok-key_1": {"v": 1}}
    text = config.dump_toml(data)
    assert '["a b"]' in text and '"x.y" = 1' in text and "[ok-key_1]" in text
    assert tomllib.loads(text) == data


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"s": {"v": "\ud800"}}, ValueError),
        ({"s": {"v": [1, None]}}, ValueError),
        ({"s": {"v": object()}}, TypeError),
        ({"s": {1: 2}}, TypeError),
    ],
)
def test_dump_toml_refuses_what_toml_cannot_hold(data, error):
    with pytest.raises(error):
        config.dump_toml(data)


def test_lab_write_toml_keeps_its_header_and_writes_loadable_configs(tmp_path):
    from appliance.lab.parts import write_toml

    path = tmp_path / "sub" / "lab.toml"
    write_toml(path, {"appliance": {"id": "lab-1", "name": 'Lab "school" \\ 1 😀', "state_dir": tmp_path}})
    assert path.read_text().startswith("# generated by `appliance lab`; edits are overwritten")
    cfg = config.load(path)
    assert cfg.appliance.name == 'Lab "school" \\ 1 😀'
    assert cfg.appliance.state_dir == tmp_path


# --- property tests --------------------------------------------------------------------------------

keys = st.text(max_size=8)
scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, st.dictionaries(keys, values, max_size=5), max_size=4))
def test_dump_toml_reads_back_equal(data):
    assert tomllib.loads(config.dump_toml(data)) == data


@settings(max_examples=200, deadline=None)
@given(
    macs=st.lists(st.from_regex(MAC, fullmatch=True), unique=True, max_size=3),
    ports=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
    dirs=st.lists(st.text(min_size=1).filter(lambda s: "\x00" not in s), max_size=3),
    lists=st.lists(
        st.builds(Source, url=st.text(), weight=st.floats(allow_nan=False),
                  tags=st.lists(st.text(), max_size=3).map(tuple),
                  mirror=st.none() | st.builds(Radio, channel=st.integers(36, 165), band=st.just("5"))),
        max_size=3),
)
def test_build_reads_back_what_to_table_wrote(macs, ports, dirs, lists):
    demo = Demo(trusted_macs=tuple(macs), ports=tuple(p for p in ports if p != 5),
                dirs=tuple(Path(d) for d in dirs), lists=tuple(lists))
    text = config.dump_toml({"network": config.to_table(demo)})
    assert config.build(Demo, tomllib.loads(text)["network"], "network") == demo
