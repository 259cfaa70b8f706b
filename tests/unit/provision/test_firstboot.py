"""firstboot.toml: errors name the key and change nothing; a good file becomes the config."""

import os
import textwrap
import time

import pytest

from appliance import config as config_module
from appliance.cli import cli
from appliance.config import ConfigError
from appliance.provision import firstboot

FP = "ab" * 32
GOOD = f"""
site = "lincoln"
building = "main"
name = "Lincoln Elementary"
console_url = "https://console.district.example"
ca_fingerprint = "{FP}"

[uplink]
type = "wifi"
ssid = "District Staff"
passphrase = "uplink-secret-1"

[hotspot]
ssid = "Classroom"
passphrase = "hotspot-secret-1"
country = "us"
"""


def parse(text):
    return firstboot.parse(textwrap.dedent(text), firstboot.Path("/boot/firmware/firstboot.toml"))


def test_a_good_file():
    s = parse(GOOD)
    assert s.device_id == "lincoln-main"
    assert s.uplink == firstboot.Uplink("wifi", "District Staff", "uplink-secret-1")
    assert s.hotspot.country == "US"
    assert s.enrollment_token is None


@pytest.mark.parametrize("change, key, message", [
    (('site = "lincoln"', 'site = "Lincoln School"'), "site", "a-z"),
    (('site = "lincoln"', ""), "site", "is required"),
    (('building = "main"', f'building = "{"b" * 60}"'), "building", "62 characters"),
    (('console_url = "https://console.district.example"', 'console_url = "http://c.example"'),
     "console_url", "https"),
    ((f'ca_fingerprint = "{FP}"', 'ca_fingerprint = "abc"'), "ca_fingerprint", "64 hex"),
    (('name = "Lincoln Elementary"', 'colour = "blue"'), "colour", "unknown key"),
    (('type = "wifi"', 'type = "carrier pigeon"'), "uplink.type", "ethernet"),
    (('passphrase = "uplink-secret-1"', 'passphrase = "short"'), "uplink.passphrase", "8-63"),
    (('ssid = "Classroom"', f'ssid = "{"x" * 33}"'), "hotspot.ssid", "32 bytes"),
    (('country = "us"', 'country = "USA"'), "hotspot.country", "two-letter"),
    (('country = "us"', 'country = "us"\nchannel = 6'), "hotspot.channel", "unknown key"),
    (('site = "lincoln"', "site = 5"), "site", "must be a string"),
])
def test_errors_name_the_key(change, key, message):
    with pytest.raises(ConfigError) as error:
        parse(GOOD.replace(*change))
    assert error.value.key == key
    assert message in error.value.message


def test_a_token_needs_the_ca_fingerprint():
    text = GOOD.replace(f'ca_fingerprint = "{FP}"', 'enrollment_token = "tok"')
    with pytest.raises(ConfigError) as error:
        parse(text)
    assert error.value.key == "ca_fingerprint"


def test_errors_never_repeat_a_secret():
    with pytest.raises(ConfigError) as error:
        parse(GOOD.replace('passphrase = "hotspot-secret-1"', 'passphrase = "sekrit"'))
    assert "sekrit" not in str(error.value)


def test_ethernet_uplink_takes_no_wifi_keys():
    text = GOOD.replace('type = "wifi"', 'type = "ethernet"')
    with pytest.raises(ConfigError) as error:
        parse(text)
    assert error.value.key == "uplink.ssid"
    without = GOOD.split("[uplink]")[0] + "[hotspot]" + GOOD.split("[hotspot]")[1]
    assert parse(without).uplink == firstboot.Uplink("ethernet")


@pytest.fixture
def pi(tmp_path):
    boot, etc, root = tmp_path / "boot", tmp_path / "etc", tmp_path / "root"
    boot.mkdir()
    return boot, etc, root


def run(runner, boot, etc, root, *extra):
    return runner.invoke(cli, ["firstboot", "--boot-dir", str(boot), "--etc", str(etc),
                               "--root", str(root), "--console-device",
                               str(boot.parent / "screen"), *extra])


def test_a_bad_key_changes_nothing_and_is_left_where_an_admin_looks(runner, pi):
    boot, etc, root = pi
    bad = GOOD.replace('country = "us"', 'country = "USA"')
    (boot / "firstboot.toml").write_text(bad)
    result = run(runner, boot, etc, root)
    assert result.exit_code == 2
    assert "hotspot.country" in result.output
    assert not etc.exists() and not root.exists()
    assert (boot / "firstboot.toml").read_text() == bad
    assert "hotspot.country" in (boot / "firstboot-error.txt").read_text()
    assert "hotspot.country" in (boot.parent / "screen").read_text()


def test_without_a_token_it_writes_the_config_host_identity_and_deletes_the_file(runner, pi):
    boot, etc, root = pi
    (boot / "firstboot.toml").write_text(GOOD)
    (boot / "firstboot-error.txt").write_text("an old error")
    result = run(runner, boot, etc, root, "--json")
    assert result.exit_code == 0, result.output
    cfg = config_module.load(etc / "appliance.toml")
    assert cfg.appliance.id == "lincoln-main" and cfg.appliance.name == "Lincoln Elementary"
    assert cfg.mqtt.host == "console.district.example" and cfg.mqtt.port == 8883
    assert cfg.mqtt.key_file == etc / "tls" / "appliance.key"
    # The classroom network is configured: the hotspot, and the USB adapter as the uplink.
    assert cfg.network.radio.ssid == "Classroom" and cfg.network.radio.country == "US"
    assert cfg.network.radio.passphrase_file == etc / "secrets" / "hotspot-passphrase"
    assert cfg.network.uplink == "wlan1"
    assert (etc / "secrets" / "hotspot-passphrase").read_text().strip() == "hotspot-secret-1"
    assert "secret-1" not in (etc / "appliance.toml").read_text()
    stanza = (root / "etc" / "network" / "interfaces.d" / "uplink").read_text()
    assert "iface wlan1 inet dhcp" in stanza
    assert "wpa-conf /etc/wpa_supplicant/wpa_supplicant-wlan1.conf" in stanza
    wpa = root / "etc" / "wpa_supplicant" / "wpa_supplicant-wlan1.conf"
    assert os.stat(wpa).st_mode & 0o777 == 0o600
    assert f"ssid={b'District Staff'.hex()}" in wpa.read_text()
    assert "uplink-secret-1" not in wpa.read_text()  # the derived key only
    assert list((root / "etc" / "ssh").glob("ssh_host_*_key"))
    machine_id = (root / "etc" / "machine-id").read_text().strip()
    assert len(machine_id) == 32 and int(machine_id, 16) >= 0
    assert not (boot / "firstboot.toml").exists()
    assert not (boot / "firstboot-error.txt").exists()


def test_an_existing_machine_id_and_host_keys_are_kept(runner, pi):
    boot, etc, root = pi
    (root / "etc" / "ssh").mkdir(parents=True)
    (root / "etc" / "ssh" / "ssh_host_ed25519_key").write_text("kept")
    (root / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (boot / "firstboot.toml").write_text(GOOD)
    assert run(runner, boot, etc, root).exit_code == 0
    assert (root / "etc" / "machine-id").read_text() == "0123456789abcdef0123456789abcdef\n"
    assert sorted(p.name for p in (root / "etc" / "ssh").iterdir()) == ["ssh_host_ed25519_key"]


def test_an_unreachable_console_leaves_the_token_for_a_later_try(runner, pi):
    from appliance.fleet.broker import free_port

    boot, etc, root = pi
    text = GOOD.replace("https://console.district.example", f"http://127.0.0.1:{free_port()}")
    text = text.replace('name = "Lincoln Elementary"', 'enrollment_token = "tok-123"')
    (boot / "firstboot.toml").write_text(text)
    result = run(runner, boot, etc, root)
    assert result.exit_code == 75, result.output
    assert "cannot reach the console" in result.output
    assert (boot / "firstboot.toml").read_text() == text
    assert "cannot reach" in (boot / "firstboot-error.txt").read_text()
    assert "tok-123" not in result.output


def test_nothing_to_do_without_the_file(runner, pi):
    boot, etc, root = pi
    result = run(runner, boot, etc, root)
    assert result.exit_code == 0 and "nothing to do" in result.output


def test_the_documented_example_is_valid():
    import re

    docs = firstboot.Path(__file__).resolve().parents[3] / "docs" / "provision.md"
    (example,) = re.findall(r"```toml\n(.*?)```", docs.read_text(), re.S)
    settings = parse(example)
    assert settings.device_id == "lincoln-main" and settings.enrollment_token


def test_the_image_example_needs_only_its_secret_before_first_boot():
    """The image ships no usable secret: its example is complete but for the hotspot passphrase,
    so a Pi booted without editing it stops and names that key."""
    example = firstboot.Path(__file__).resolve().parents[3] / "image-build" / "firstboot.toml.example"
    text = example.read_text()
    with pytest.raises(ConfigError, match=r"hotspot\.passphrase"):
        parse(text)
    settings = parse(text.replace("[hotspot]\n", '[hotspot]\npassphrase = "a-real-passphrase"\n'))
    assert settings.device_id == "example-site-main" and not settings.enrollment_token


def test_the_wifi_uplink_key_is_derived_as_wpa2_does():
    # IEEE 802.11i-2004, annex H.4.1: passphrase "password", SSID "IEEE".
    text = firstboot.wpa_supplicant_uplink(firstboot.Uplink("wifi", "IEEE", "password"))
    assert "psk=f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e" in text
    assert f"ssid={b'IEEE'.hex()}" in text


def test_an_ethernet_uplink_gets_dhcp_on_eth0_and_no_wifi_files(runner, pi):
    boot, etc, root = pi
    ethernet = GOOD.split("[uplink]")[0] + "[hotspot]" + GOOD.split("[hotspot]")[1]
    (boot / "firstboot.toml").write_text(ethernet)
    result = run(runner, boot, etc, root)
    assert result.exit_code == 0, result.output
    assert config_module.load(etc / "appliance.toml").network.uplink == "eth0"
    stanza = (root / "etc" / "network" / "interfaces.d" / "uplink").read_text()
    assert "allow-hotplug eth0" in stanza and "iface eth0 inet dhcp" in stanza
    assert not (root / "etc" / "wpa_supplicant").exists()


def test_the_image_sections_are_kept_under_the_identity_and_the_hotspot(runner, pi):
    # What the edge role wrote into the image: its capabilities, a default hotspot.
    boot, etc, root = pi
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "image.toml").write_text(textwrap.dedent("""
        [portal]
        title = "District library"
        [filter]
        enabled = true
        timezone = "America/Chicago"
        [network]
        interface = "wlan0"
        dhcp_script_user = "appliance-dhcp"
        [network.radio]
        ssid = "Image default"
        channel = 11
    """))
    (boot / "firstboot.toml").write_text(GOOD)
    result = run(runner, boot, etc, root)
    assert result.exit_code == 0, result.output
    cfg = config_module.load(etc / "appliance.toml")
    assert cfg.filter.enabled and cfg.filter.timezone == "America/Chicago"
    assert cfg.portal.title == "District library"
    assert cfg.network.radio.ssid == "Classroom"  # firstboot.toml's, not the image's
    assert cfg.network.radio.channel == 11 and cfg.network.uplink == "wlan1"
    assert cfg.appliance.id == "lincoln-main"


def test_an_image_section_that_does_not_fit_changes_nothing(runner, pi):
    boot, etc, root = pi
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "image.toml").write_text('[filter]\nenabled = "very"\n')
    (boot / "firstboot.toml").write_text(GOOD)
    result = run(runner, boot, etc, root)
    assert result.exit_code == 2
    assert "filter.enabled" in result.output
    assert not (etc / "appliance.toml").exists()
    assert (boot / "firstboot.toml").exists()


def test_the_route_check_sends_nothing_and_tells_reachable_from_not():
    assert firstboot.has_route("127.0.0.1")
    assert not firstboot.has_route("no-such-host.invalid")
    started = time.monotonic()
    firstboot.wait_for_route("no-such-host.invalid", 1.5)
    assert 1.0 <= time.monotonic() - started < 5
