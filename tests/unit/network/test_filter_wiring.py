"""The network with `[filter] enabled`: dnsmasq leaves DNS to the filter (DHCP and RAs still
name the Pi), the port-53 redirect goes through a chain the helper can point elsewhere, DoH
addresses are rejected on 443, the filter's ports are closed on the uplink; the helper's new
verbs parse; the address files round-trip."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from appliance import config
from appliance.network import dnssets, render, verbs
from appliance.network.helperd import health_query


def cfg_with(tmp_path: Path, enabled: bool = True, **network: object) -> config.Config:
    return config.from_dict({"appliance": {"id": "x", "state_dir": str(tmp_path / "state")},
                             "network": network,
                             "filter": {"enabled": enabled, "port": 5301, "baseline_port": 5336}})


def conf_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_dnsmasq_serves_dhcp_and_ra_only_and_names_the_pi_as_dns(tmp_path):
    cfg = cfg_with(tmp_path, walled_garden=["garden.example"])
    lines = conf_lines(render.dnsmasq_conf(cfg, tmp_path))
    assert "port=0" in lines
    assert not [x for x in lines if x.startswith(("addn-hosts", "servers-file", "nftset", "cache-size"))]
    assert "dhcp-option=option:dns-server,10.42.0.1" in lines
    assert any(x.startswith("dhcp-option=option6:dns-server,[") for x in lines)
    assert "enable-ra" in lines
    # Off: dnsmasq answers DNS as before.
    off = conf_lines(render.dnsmasq_conf(cfg_with(tmp_path, enabled=False,
                                                  walled_garden=["garden.example"]), tmp_path))
    assert "port=0" not in off and any(x.startswith("nftset=/garden.example/") for x in off)


def test_dnsmasq_accepts_the_filter_config(tmp_path):
    path = tmp_path / "dnsmasq.conf"
    path.write_text(render.dnsmasq_conf(cfg_with(tmp_path), tmp_path))
    exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    result = subprocess.run([exe, "--test", f"--conf-file={path}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_redirect_goes_to_the_filters_port_through_its_chain(tmp_path):
    cfg = cfg_with(tmp_path)
    text = render.nft_ruleset(cfg.network, dns=render.filter_ports(cfg))
    assert f"chain {render.DNS_CHAIN} {{" in text
    assert "dnat ip to 10.42.0.1:5301" in text
    assert "th dport 53 jump dns_redirect" in text
    assert "dnat ip to 10.42.0.1:53\n" not in text
    # The filter's and the baseline's ports: open from the classroom, closed on the uplink.
    assert 'iifname "eth0" meta l4proto { tcp, udp } th dport { 53, 5301, 5336 } drop' in text
    assert "meta l4proto { tcp, udp } th dport { 53, 5301, 5336 } accept" in text
    assert "ip daddr @doh_v4 tcp dport 443 reject with tcp reset" in text
    assert "ip6 daddr @doh_v6 udp dport 443 reject" in text
    fallback = render.dns_fallback_script(cfg.network, 5336)
    assert fallback.startswith(f"flush chain inet classroom {render.DNS_CHAIN}\n")
    assert "dnat ip to 10.42.0.1:5336" in fallback
    # Without the filter: no chain, dnsmasq's redirect as before.
    plain = render.nft_ruleset(cfg.network)
    assert render.DNS_CHAIN not in plain and "dnat ip to 10.42.0.1:53" in plain
    assert render.filter_ports(cfg_with(tmp_path, enabled=False)) is None
    # The helper's health check asks over loopback (never a neighbour-table lookup) when the
    # filter listens there, else on the Pi's classroom address.
    assert render.filter_ports(cfg).health_host == "127.0.0.1"
    only = config.from_dict({"appliance": {"id": "x"}, "filter": {"enabled": True,
                                                                  "listen": ["10.42.0.1"]}})
    assert render.filter_ports(only).health_host == "10.42.0.1"


def nft_check(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "ruleset.nft"
    path.write_text(text)
    return subprocess.run(["unshare", "-n", "nft", "-c", "-f", str(path)],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("network", [{}, {"ipv6": ""}, {"portal_mode": "open"}])
def test_nft_accepts_the_filter_ruleset_and_the_fallback(tmp_path, network):
    cfg = cfg_with(tmp_path, **network)
    text = render.nft_ruleset(cfg.network, dns=render.filter_ports(cfg)) + render.restore_elements(
        {"doh_v4": [("192.0.2.53", 60)], "doh_v6": [("2001:db8::53", 60)]})
    text += render.dns_fallback_script(cfg.network, 5336)
    result = nft_check(text, tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_new_verbs_parse():
    assert verbs.parse(b'{"verb": "dns-fallback", "args": {"state": "on"}}').args == {"state": "on"}
    assert verbs.parse(b'{"verb": "dns-sets"}').verb == "dns-sets"
    for raw in (b'{"verb": "dns-fallback", "args": {"state": "maybe"}}',
                b'{"verb": "dns-fallback"}', b'{"verb": "dns-sets", "args": {"ip": "1.2.3.4"}}'):
        with pytest.raises(verbs.Refused):
            verbs.parse(raw)


def test_the_filters_unit_may_switch_the_redirect_and_no_one_else_by_default(tmp_path):
    helper = cfg_with(tmp_path).network.helper
    filt = verbs.Caller(10, 0, "appliance-filter.service")
    portal = verbs.Caller(11, 0, "appliance-portal.service")
    assert verbs.allowed(filt, "dns-fallback", helper)  # root matches too; the unit is named
    assert helper.dns_fallback == ("root", "appliance:appliance-filter.service")
    assert not verbs.allowed(verbs.Caller(12, 4242, "appliance-portal.service"), "dns-fallback", helper)
    assert verbs.allowed(portal, "dns-sets", helper)  # uid 0 is root


def test_address_files_round_trip(tmp_path):
    cfg = cfg_with(tmp_path)
    path = dnssets.path(cfg, dnssets.DOH)
    assert path == tmp_path / "state" / "filter" / "doh-addresses"
    assert dnssets.read(path) == ([], [])
    dnssets.write(path, ["2001:db8::53", "192.0.2.53", "192.0.2.53"])
    assert path.read_text() == "192.0.2.53\n2001:db8::53\n"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert dnssets.parse("# x\n192.0.2.1\nbanana\n2001:DB8::1 # c\n") == (["192.0.2.1"], ["2001:db8::1"])


def test_the_health_query_is_a_dns_question():
    from appliance.filter import wire

    q = wire.parse_query(health_query("classroom.internal", 0x4242))
    assert (q.name, q.qtype) == ("classroom.internal", wire.A)


def test_ports_must_differ():
    with pytest.raises(config.ConfigError, match="baseline_port"):
        config.from_dict({"appliance": {"id": "x"}, "filter": {"port": 5336}})


def test_dns_fallback_waits_for_a_helper_that_is_not_up_yet(runner, tmp_path):
    """The filter's unit calls `dns-fallback off --wait 60` at start: at boot the helper may
    come up after the filter; without --wait an unreachable helper is an error at once."""
    import json
    import socket
    import threading
    import time

    from appliance.cli import cli
    from appliance.lab.parts import write_toml

    sock_path = tmp_path / "helper.sock"
    conf = tmp_path / "appliance.toml"
    write_toml(conf, {"appliance": {"id": "x", "state_dir": str(tmp_path / "state")},
                      "network": {"helper": {"socket": str(sock_path)}}})
    args = ["--config", str(conf), "network", "dns-fallback", "off", "--json"]
    refused = runner.invoke(cli, args)
    assert refused.exit_code == 1 and "unreachable" in refused.output

    asked = []

    def helper_later():
        time.sleep(1.0)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
            srv.bind(str(sock_path))
            srv.listen(1)
            conn, _ = srv.accept()
            with conn:
                asked.append(json.loads(conn.makefile("rb").readline()))
                conn.sendall(b'{"ok": true, "result": {"fallback": false, "port": 5301}}\n')

    thread = threading.Thread(target=helper_later, daemon=True)
    thread.start()
    waited = runner.invoke(cli, [*args[:5], "--wait", "10", "--json"])
    thread.join(5)
    assert waited.exit_code == 0, waited.output
    assert json.loads(waited.output) == {"fallback": False, "port": 5301}
    assert asked == [{"verb": "dns-fallback", "args": {"state": "off"}}]
