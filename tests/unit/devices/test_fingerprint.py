"""Identification rules: option-55 orders and vendor classes of the research note, mDNS records,
probe counts, OUI only for global MACs."""

from __future__ import annotations

import pytest

from appliance.devices.fingerprint import Service, Signals, identify

ANDROID = (1, 3, 6, 15, 26, 28, 51, 58, 59, 43, 114, 108)
IOS = (1, 121, 3, 6, 15, 108, 114, 119, 252)
IOS_OLD = (1, 121, 3, 6, 15, 119, 252)
MACOS = (1, 121, 3, 6, 15, 108, 114, 119, 252, 95, 44, 46)
WINDOWS = (1, 3, 6, 15, 31, 33, 43, 44, 46, 47, 119, 121, 249, 252)
LINUX = (1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42)
CHROMEOS = (1, 121, 33, 3, 6, 12, 15, 26, 28, 51, 54, 58, 59, 119, 252)


@pytest.mark.parametrize(("prl", "vendor_class", "kind", "os"), [
    (ANDROID, "android-dhcp-14", "phone", "android"),
    (ANDROID[:10], None, "phone", "android"),
    ((*ANDROID[:10], 108), None, "phone", "android"),
    (IOS, None, "phone", "ios"),
    (IOS_OLD, None, "phone", "ios"),
    (MACOS, None, "laptop", "macos"),
    (WINDOWS, "MSFT 5.0", "laptop", "windows"),
    (LINUX, None, "computer", "linux"),
    (CHROMEOS, None, "chromebook", "chromeos"),
    (CHROMEOS[:-1], None, "chromebook", "chromeos"),  # the taxonomy's variant without 252
    (None, "android-dhcp-13", "phone", "android"),
    (None, "MSFT 5.0", "laptop", "windows"),
    ((1, 3, 6), None, "unknown", "unknown"),
])
def test_dhcp_fingerprints(prl, vendor_class, kind, os):
    got = identify(Signals(requested_options=prl, vendor_class=vendor_class))
    assert (got.kind, got.os) == (kind, os)
    assert got.evidence or os == "unknown"


def test_order_matters_not_just_the_set():
    # iOS's options in numeric order (what busybox udhcpc would send) are not iOS.
    assert identify(Signals(requested_options=tuple(sorted(IOS)))).os == "unknown"
    assert identify(Signals(requested_options=tuple(reversed(ANDROID)))).os == "unknown"


def test_android_version_comes_from_the_vendor_class():
    got = identify(Signals(requested_options=ANDROID, vendor_class="android-dhcp-14"))
    assert got.os_version == "14" and any("android-dhcp-14" in e for e in got.evidence)


def test_an_ipad_by_its_host_name_runs_ipados():
    got = identify(Signals(requested_options=IOS, hostname="Janes-iPad"))
    assert (got.kind, got.os) == ("tablet", "ipados")


@pytest.mark.parametrize(("service", "kind", "os", "model"), [
    (Service("_airplay._tcp.local.", {"model": "AppleTV6,2", "deviceid": "02:00:00:00:01:01"}),
     "display", "tvos", "AppleTV6,2"),
    (Service("_googlecast._tcp.local.", {"md": "Chromecast", "fn": "Room 101"}),
     "display", "cast", "Chromecast"),
    (Service("_googlecast._tcp.local.", {"md": "Google Home"}), "speaker", "cast", "Google Home"),
    (Service("_ipp._tcp.local.", {"ty": "Xerox Phaser 3020", "rp": "ipp/print"}),
     "printer", "printer", "Xerox Phaser 3020"),
    (Service("_ipps._tcp.local.", {"product": "(HP LaserJet)"}), "printer", "printer",
     "HP LaserJet"),
    (Service("_device-info._tcp.local.", {"model": "MacBookPro18,3"}), "laptop", "macos",
     "MacBookPro18,3"),
])
def test_mdns_records_name_kind_os_and_model(service, kind, os, model):
    got = identify(Signals(services=(service,)))
    assert (got.kind, got.os, got.model) == (kind, os, model)


def test_a_display_wins_over_a_weak_dhcp_clue():
    got = identify(Signals(vendor_class="udhcp 1.36.1",
                           services=(Service("_airplay._tcp.local.", {"model": "AppleTV6,2"}),
                                     Service("_raop._tcp.local.", {}))))
    assert (got.kind, got.os) == ("display", "tvos")


def test_probe_counts_decide_when_dhcp_says_nothing():
    got = identify(Signals(requested_options=(1, 3, 6), probe_counts={"chromeos": 3}))
    assert (got.kind, got.os) == ("chromebook", "chromeos")
    assert identify(Signals(probe_counts={"nonsense": 5})).os == "unknown"


def test_oui_vendor_is_evidence_for_global_macs_only():
    assert any("Apple" in e for e in identify(Signals(vendor="Apple, Inc.")).evidence)
    got = identify(Signals(randomized=True))
    assert any("randomized" in e for e in got.evidence)


def test_garbage_txt_does_not_break_identification():
    junk = {"model": "\x00" * 5000, "ty": None, "md": "🙂" * 10000}
    for t in ("_airplay._tcp.local.", "_googlecast._tcp.local.", "_ipp._tcp.local.", "_x._tcp.local."):
        got = identify(Signals(services=(Service(t, junk),)))
        assert got.model is None or len(got.model) <= 64
