"""The renderers: each file key by key, and the real tools accept what we render."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from appliance import config
from appliance.network import answers, probes, render


def cfg_with(tmp_path: Path, **network: object) -> config.Config:
    return config.from_dict({"appliance": {"id": "x", "state_dir": str(tmp_path / "state")},
                             "network": network})


def keys(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_hostapd_conf_key_by_key(tmp_path):
    cfg = cfg_with(tmp_path, radio={"ssid": "Room 12 ☃", "country": "DE", "channel": 13,
                                    "max_num_sta": 30, "passphrase_file": "/x"})
    conf = keys(render.hostapd_conf(cfg.network, "correct horse"))
    assert conf == {
        "interface": "wlan0", "driver": "nl80211", "ctrl_interface": "/run/hostapd",
        "ssid2": '"Room 12 ☃"', "utf8_ssid": "1",
        "country_code": "DE", "ieee80211d": "1", "ieee80211h": "0", "hw_mode": "g", "channel": "13",
        "ieee80211n": "1", "ieee80211ac": "0", "wmm_enabled": "1", "ap_isolate": "1",
        "max_num_sta": "30", "auth_algs": "1", "ignore_broadcast_ssid": "0", "wpa": "2",
        "wpa_key_mgmt": "WPA-PSK", "rsn_pairwise": "CCMP", "wpa_passphrase": "correct horse",
    }


def test_hostapd_gives_its_socket_to_the_group_only_when_run_as_root(tmp_path):
    """Under systemd hostapd is not root and the socket is its Group='s (a chown of it would be
    refused by the unit's system call filter); run directly (as root) it chowns it itself."""
    assert "ctrl_interface_group" not in keys(
        render.hostapd_conf(cfg_with(tmp_path, services="systemd").network, "correct horse"))
    direct = keys(render.hostapd_conf(cfg_with(tmp_path, services="direct").network, "correct horse"))
    assert direct["ctrl_interface_group"] == render.SERVICE_USER


def test_hostapd_wpa3_5ghz_and_open(tmp_path):
    net = cfg_with(tmp_path, radio={"security": "wpa3", "band": "5", "channel": 36}).network
    conf = keys(render.hostapd_conf(net, "correct horse"))
    assert (conf["hw_mode"], conf["ieee80211h"], conf["ieee80211ac"]) == ("a", "1", "1")
    assert (conf["wpa_key_mgmt"], conf["ieee80211w"], conf["sae_require_mfp"]) == ("SAE", "2", "1")
    mixed = keys(render.hostapd_conf(
        cfg_with(tmp_path, radio={"security": "wpa2-wpa3"}).network, "correct horse"))
    assert (mixed["wpa_key_mgmt"], mixed["ieee80211w"]) == ("WPA-PSK SAE", "1")
    hexkey = "ab" * 32
    assert keys(render.hostapd_conf(cfg_with(tmp_path).network, hexkey))["wpa_psk"] == hexkey
    opened = keys(render.hostapd_conf(cfg_with(tmp_path, radio={"security": "open"}).network, None))
    assert not {"wpa", "wpa_passphrase", "wpa_key_mgmt"} & set(opened)
    with pytest.raises(ValueError):
        render.hostapd_conf(cfg_with(tmp_path).network, None)


@pytest.mark.parametrize(("secret", "security", "ok"), [
    ("12345678", "wpa2", True), ("x" * 63, "wpa2", True), ("1234567", "wpa2", False),
    ("x" * 65, "wpa2", False), ("ab" * 32, "wpa2", True), ("ab" * 32, "wpa3", False),
    ("pässwort1", "wpa2", False),
])
def test_passphrase_rules(secret, security, ok):
    assert (render.passphrase_problem(secret, security) is None) == ok


def test_dnsmasq_conf(tmp_path):
    cfg = cfg_with(tmp_path, walled_garden=["khanacademy.org"])
    d = render.render_dir(cfg)
    text = render.dnsmasq_conf(cfg, d)
    lines = text.splitlines()
    assert "interface=wlan0" in lines and "enable-ra" in lines
    assert "script-on-renewal" in lines
    assert f"addn-hosts={d / 'answers.hosts'}" in lines
    assert "dhcp-range=10.42.0.20,10.42.0.250,255.255.255.0,720m" in lines
    assert "dhcp-range=fd42:ce::,ra-stateless,ra-names,64,720m" in lines
    assert "nftset=/khanacademy.org/4#inet#classroom#walled_v4,6#inet#classroom#walled_v6" in lines
    assert not any(line.startswith("dhcp-option=114") for line in lines)  # no certificate
    with_cert = render.dnsmasq_conf(cfg_with(tmp_path, tls_cert="/etc/x.pem"), d)
    assert 'dhcp-option=114,"https://classroom.internal/captive/api"' in with_cert.splitlines()
    no6 = render.dnsmasq_conf(cfg_with(tmp_path, ipv6=""), d)
    assert "enable-ra" not in no6


def test_local_answers_online_and_offline(tmp_path):
    net = cfg_with(tmp_path).network
    online = answers.local_answers(net, online=True)
    assert answers.answer_for(online, "Classroom.Internal.") == ("10.42.0.1", "fd42:ce::1")
    assert answers.answer_for(online, "captive.apple.com") == ()
    offline = answers.local_answers(net, online=False)
    for host in probes.PROBE_HOSTS:
        assert answers.answer_for(offline, host) == ("198.51.100.1",)
    assert answers.answer_for(offline, "dns.msftncsi.com") == ("131.107.255.255",)
    hosts = answers.hosts_file(offline, online=False)
    assert "198.51.100.1 captive.apple.com\n" in hosts
    assert "server=/captive.apple.com/\n" in answers.servers_file(offline)


def test_ruleset_rules(tmp_path):
    net = cfg_with(tmp_path, trusted_macs=["02:00:00:00:00:01"]).network
    text = render.nft_ruleset(net)
    assert 'iifname "wlan0" tcp dport 80 dnat ip to 10.42.0.1:8081' in text
    assert "tcp dport 443 reject with tcp reset" in text
    assert "tcp dport 853 reject with tcp reset" in text
    assert "udp dport { 853, 784, 8853 } reject" in text
    assert 'iifname "wlan0" oifname "wlan0" drop' in text
    assert "elements = { 02:00:00:00:00:01 }" in text
    assert 'oifname "eth0" ether saddr . ip saddr @accepted_v4 accept' in text
    opened = render.nft_ruleset(cfg_with(tmp_path, portal_mode="open").network)
    assert 'oifname "eth0" accept' in opened
    assert "tcp dport 80 dnat ip to 10.42.0.1:8081" not in opened.replace("198.51.100.1 tcp", "")


def test_restore_elements_keeps_remaining_time():
    text = render.restore_elements({"accepted_v4": [("02:00:00:00:00:01 . 10.42.0.5", 3600),
                                                    ("02:00:00:00:00:02 . 10.42.0.6", 0)]})
    assert text == ("add element inet classroom accepted_v4 "
                    "{ 02:00:00:00:00:01 . 10.42.0.5 timeout 3600s }\n")
    assert render.restore_elements({}) == ""


def nft_check(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "rules.nft"
    path.write_text(text)
    # A fresh network namespace: checking never touches the machine's own ruleset.
    return subprocess.run(["unshare", "-n", "nft", "-c", "-f", str(path)],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("network", [
    {}, {"portal_mode": "open"}, {"ipv6": ""}, {"trusted_macs": ["02:00:00:00:00:01", "02:00:00:00:00:02"]},
    {"walled_garden": ["a.example"], "uplink": "end0", "interface": "br-class"},
])
def test_nft_accepts_the_ruleset(tmp_path, network):
    text = render.nft_ruleset(cfg_with(tmp_path, **network).network) + render.restore_elements(
        {"accepted_mac": [("02:00:00:00:00:09", 60)], "accepted_v4": [("02:00:00:00:00:09 . 10.42.0.9", 60)],
         "accepted_v6": [("02:00:00:00:00:09 . fd42:ce::9", 60)], "walled_v4": [("203.0.113.7", 60)]})
    result = nft_check(text, tmp_path)
    assert result.returncode == 0, result.stderr


def test_nft_check_catches_a_broken_ruleset(tmp_path):
    assert nft_check("table inet classroom { chain x { tcp dport banana accept } }", tmp_path).returncode != 0


@pytest.mark.parametrize("network", [{}, {"tls_cert": "/x.pem", "walled_garden": ["a.example"]},
                                     {"ipv6": ""}])
def test_dnsmasq_accepts_the_config(tmp_path, network):
    cfg = cfg_with(tmp_path, **network)
    path = tmp_path / "dnsmasq.conf"
    path.write_text(render.dnsmasq_conf(cfg, render.render_dir(cfg)))
    exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    result = subprocess.run([exe, "--test", f"--conf-file={path}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "syntax check OK" in result.stderr


def test_the_classroom_reaches_the_library_origin_and_mdns_only_when_configured(tmp_path):
    net = cfg_with(tmp_path).network
    plain = render.nft_ruleset(net)
    assert "8090" not in plain and "5353" not in plain
    both = render.nft_ruleset(net, archive_port=8090, mdns=True)
    assert "tcp dport { 80, 443, 8081, 8090 } accept" in both and "udp dport 5353 accept" in both
    (ruleset,) = [f for f in render.render_all(cfg_with(tmp_path, access_point="external"), None,
                                               online=True) if f.name == render.RULESET]
    assert "8090" in ruleset.text and "udp dport 5353 accept" in ruleset.text


def test_dnsmasq_runs_the_device_inventorys_hook_unprivileged(tmp_path):
    """One hook for DHCP events: the devices capability's shell script, on renewals too."""
    from appliance.devices.spool import HOOK

    text = render.dnsmasq_conf(cfg_with(tmp_path, services="systemd"), tmp_path)
    assert f"dhcp-script={HOOK}\n" in text and "script-on-renewal\n" in text
    # Started non-root by its unit: no user switch of its own, the hook runs as that user.
    assert not [line for line in text.splitlines()
                if line.startswith(("user=", "group=", "dhcp-scriptuser="))]
    direct = render.dnsmasq_conf(cfg_with(tmp_path, services="direct"), tmp_path)
    assert "dhcp-scriptuser=nobody\n" in direct
    files = render.render_all(cfg_with(tmp_path, access_point="external"), None, online=True)
    assert not any(f.name.startswith("dhcp") for f in files)

def test_render_all_modes(tmp_path):
    cfg = cfg_with(tmp_path)
    files = {f.name: f for f in render.render_all(cfg, "correct horse", online=True)}
    assert files["hostapd.conf"].mode == 0o600
    assert set(files) == {"hostapd.conf", "dnsmasq.conf", "classroom.nft", "answers.hosts",
                          "answers.servers"}
    external = render.render_all(cfg_with(tmp_path, access_point="external"), None, online=False)
    assert "hostapd.conf" not in {f.name for f in external}
