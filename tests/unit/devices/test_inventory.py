"""The inventory tables: DHCP events, services, bounds, expiry, counts."""

from __future__ import annotations

import json

import pytest

from appliance.devices import inventory, schema
from appliance.devices.events import DhcpEvent
from appliance.devices.inventory import ServiceRecord
from appliance.store import migrate, open_db

ANDROID = (1, 3, 6, 15, 26, 28, 51, 58, 59, 43, 114, 108)
T0 = 1_767_225_600


@pytest.fixture
def db(tmp_path):
    d = open_db(tmp_path / "appliance.db")
    migrate(d, schema.COMPONENT, schema.MIGRATIONS)
    return d


def add(db, mac="02:ce:00:00:00:01", ip="192.0.2.50", ts=T0, **kw):
    limit = kw.pop("max", 5000)
    inventory.apply_dhcp(db, DhcpEvent(ts=ts, action=kw.pop("action", "add"), mac=mac, ip=ip,
                                       lease_expires=ts + 3600, **kw),
                         vendor=lambda m: "Apple, Inc.", max_devices=limit)


def test_an_add_identifies_and_old_at_restart_keeps_the_fingerprint(db):
    add(db, requested_options=ANDROID, vendor_class="android-dhcp-14", supplied_hostname="Pixel")
    add(db, action="old", ts=T0 + 60, data_missing=True)  # dnsmasq restarted: no data
    d = inventory.device(db, "02:CE:00:00:00:01", now=T0 + 61)
    assert (d["kind"], d["os"], d["hostname"], d["vendor_class"]) == \
        ("phone", "android", "Pixel", "android-dhcp-14")
    assert d["present"] and d["randomized"] and d["vendor"] is None  # no OUI for a private MAC
    assert d["first_seen"] == T0 and d["last_seen"] == T0 + 60


def test_a_global_mac_gets_its_vendor(db):
    add(db, mac="f0:18:98:00:00:01")
    assert inventory.device(db, "f0:18:98:00:00:01")["vendor"] == "Apple, Inc."


def test_del_ends_the_lease_and_an_address_moves_to_its_new_holder(db):
    add(db)
    add(db, mac="02:ce:00:00:00:02", ts=T0 + 10)
    assert inventory.device(db, "02:ce:00:00:00:01")["ip"] is None
    assert inventory.mac_for_ip(db, "192.0.2.50") == "02:ce:00:00:00:02"
    add(db, mac="02:ce:00:00:00:02", action="del", ts=T0 + 20)
    assert not inventory.device(db, "02:ce:00:00:00:02", now=T0 + 4000)["present"]


def test_services_are_bounded_and_identifiers_are_not_stored(db):
    add(db)
    mac = "02:ce:00:00:00:01"
    for i in range(100):
        inventory.apply_service(db, mac, ServiceRecord(
            "_airplay._tcp.local.", f"<b>Screen</b> {i}\x1b[2J" + "x" * 1000, "tv.local.", 7000,
            "192.0.2.50", {"model": "AppleTV6,2", "deviceid": "02:ce:00:00:00:01",
                           "pk": "secret", "junk": "y" * 10_000}), now=T0 + i)
    d = inventory.device(db, mac, now=T0 + 100)
    assert len(d["services"]) == inventory.MAX_SERVICES_PER_DEVICE
    s = d["services"][0]
    assert s["txt"] == {"model": "AppleTV6,2"} and "\x1b" not in s["name"]
    assert len(s["name"]) <= inventory.MAX_SERVICE_NAME
    assert (d["kind"], d["model"]) == ("display", "AppleTV6,2")
    assert "02:ce:00:00:00:01" not in json.dumps(d["services"])
    inventory.remove_service(db, "_airplay._tcp.local.", s["name"])
    assert len(inventory.device(db, mac)["services"]) == inventory.MAX_SERVICES_PER_DEVICE - 1


def test_past_max_devices_the_least_recently_seen_goes(db):
    for i in range(15):
        add(db, mac=f"02:00:00:00:00:{i:02x}", ip=f"192.0.2.{i + 10}", ts=T0 + i, max=10)
    macs = {d["mac"] for d in inventory.devices(db)}
    assert len(macs) == 10 and "02:00:00:00:00:0e" in macs and "02:00:00:00:00:00" not in macs


def test_expiry_deletes_devices_unseen_for_the_retention(db):
    add(db, ts=T0)
    add(db, mac="02:ce:00:00:00:02", ip="192.0.2.51", ts=T0 + 5 * 86400)
    assert inventory.expire(db, 3, now=T0 + 6 * 86400) == 1
    assert [d["mac"] for d in inventory.devices(db)] == ["02:ce:00:00:00:02"]


def test_counts_by_kind_and_os_and_new_macs_today(db):
    add(db, requested_options=ANDROID)
    add(db, mac="02:ce:00:00:00:02", ip="192.0.2.51", vendor_class="MSFT 5.0")
    add(db, mac="02:ce:00:00:00:02", ip="192.0.2.51", ts=T0 + 5)  # a renewal is not new
    c = inventory.counts(db, now=T0 + 10)
    assert c["now"] == 2 and c["new_today"] == 2 and c["peak_leases_today"] == 2
    assert c["by_kind"] == {"laptop": 1, "phone": 1}
    assert c["by_os"] == {"android": 1, "windows": 1}


def test_probe_counts_and_groups(db):
    add(db, requested_options=(1, 3, 6))
    inventory.add_probes(db, "02:ce:00:00:00:01", "chromeos", 3)
    assert inventory.device(db, "02:ce:00:00:00:01")["os"] == "chromeos"
    assert inventory.set_group(db, "02:ce:00:00:00:01", "staff")
    assert not inventory.set_group(db, "02:ce:00:00:00:99", "staff")
    assert inventory.device(db, "02:ce:00:00:00:01")["group"] == "staff"
