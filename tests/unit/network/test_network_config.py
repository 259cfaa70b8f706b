"""The [network] section: what loads, and every refusal names its key."""

from __future__ import annotations

import pytest

from appliance import config, regdomain
from appliance.config import ConfigError


def load(network: dict[str, object]) -> config.NetworkSection:
    return config.from_dict({"appliance": {"id": "x"}, "network": network}).network


def test_defaults_load_without_a_network_section():
    net = config.from_dict({"appliance": {"id": "x"}}).network
    assert (net.access_point, net.portal_mode, net.captured_address) == ("onboard", "terms", "198.51.100.1")
    assert net.session_seconds == 10 * 3600
    assert net.radio.country == "US" and net.radio.channel == 6


@pytest.mark.parametrize(("network", "key", "fragment"), [
    ({"radio": {"country": "XX"}}, "network.radio.country", "ISO 3166-1"),
    ({"radio": {"country": "us"}}, "network.radio.country", "ISO 3166-1"),
    ({"radio": {"channel": 12}}, "network.radio.channel", "not allowed on 2.4 GHz in US"),
    ({"radio": {"channel": 14, "country": "JP"}}, "network.radio.channel", "not allowed"),
    ({"radio": {"band": "5", "channel": 52, "country": "DE"}}, "network.radio.channel", "DFS"),
    ({"radio": {"band": "5", "channel": 149, "country": "DE"}}, "network.radio.channel",
     "not allowed on 5 GHz in DE"),
    ({"radio": {"band": "5", "channel": 7}}, "network.radio.channel", "not allowed on 5 GHz"),
    ({"radio": {"ssid": "x" * 33}}, "network.radio.ssid", "1-32 bytes"),
    ({"radio": {"security": "wep"}}, "network.radio.security", "must be one of"),
    ({"ipv4": "10.42.0.0/24"}, "network.ipv4", "host address"),
    ({"ipv4": "10.42.0.1/31"}, "network.ipv4", "/30"),
    ({"ipv4": "banana"}, "network.ipv4", "IPv4 address"),
    ({"ipv6": "fd00::1/48"}, "network.ipv6", "/64"),
    ({"dhcp_first": "10.43.0.5"}, "network.dhcp_first", "not a host address"),
    ({"dhcp_first": "10.42.0.200", "dhcp_last": "10.42.0.100"}, "network.dhcp_last", "before"),
    ({"dhcp_first": "10.42.0.1"}, "network.dhcp_first", "Pi's own address"),
    ({"captured_address": "192.168.1.1"}, "network.captured_address", "private"),
    ({"captured_address": "10.42.0.9"}, "network.captured_address", "private"),
    ({"captured_address": "100.64.0.1"}, "network.captured_address", "shared"),
    ({"ipv4": "198.51.100.2/24", "dhcp_first": "198.51.100.20", "dhcp_last": "198.51.100.30"},
     "network.captured_address", "outside the classroom subnet"),
    ({"uplink": "wlan0"}, "network.uplink", "must differ"),
    ({"interface": "a-very-long-interface"}, "network.interface", "interface name"),
    ({"trusted_macs": ["02:00:00:00:00:01", "02:00:00:00:00:01"]}, "network.trusted_macs[1]", "twice"),
    ({"trusted_macs": ["02-00-00-00-00-01"]}, "network.trusted_macs[0]", "MAC address"),
    ({"walled_garden": ["ok.example", "no_underscores"]}, "network.walled_garden[1]", "DNS name"),
    ({"portal_name": "localhost"}, "network.portal_name", "DNS name"),
    ({"captive_port": 80}, "network.captive_port", "1025-65535"),
    ({"helper": {"session_accept": ["Bad User"]}}, "network.helper.session_accept[0]", "user name"),
    ({"radio": {"chanel": 6}}, "network.radio.chanel", "unknown key"),
])
def test_refusals_name_the_key(network, key, fragment):
    with pytest.raises(ConfigError) as err:
        load(network)
    assert err.value.key == key
    assert fragment in err.value.message


def test_dfs_channels_need_dfs_true_and_unii3_where_allowed():
    assert load({"radio": {"band": "5", "channel": 52, "country": "DE", "dfs": True}}).radio.channel == 52
    assert load({"radio": {"band": "5", "channel": 149, "country": "US"}}).radio.channel == 149
    assert load({"radio": {"channel": 13, "country": "DE"}}).radio.channel == 13


def test_callers_may_name_a_unit():
    helper = load({"helper": {"session_accept": ["appliance:appliance-portal.service", "0", "root"]}}).helper
    assert helper.session_accept == ("appliance:appliance-portal.service", "0", "root")


def test_regdomain_table_is_consistent():
    assert len(regdomain.COUNTRIES) == 249
    assert regdomain.FCC_24 <= regdomain.COUNTRIES
    assert set(regdomain.FIVE_GHZ) <= regdomain.COUNTRIES
    for table in [*regdomain.FIVE_GHZ.values(), regdomain.DEFAULT_5]:
        assert not set(table.free) & set(table.dfs)
    assert regdomain.channels_24("US") == tuple(range(1, 12))
    assert regdomain.channels_24("FR") == tuple(range(1, 14))
