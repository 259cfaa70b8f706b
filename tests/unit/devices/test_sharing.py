"""Which staff devices get an opening to which shared service, and keeping the helper in line."""

from __future__ import annotations

import pytest

from appliance.devices import inventory, schema, sharing
from appliance.devices.events import DhcpEvent
from appliance.devices.inventory import ServiceRecord
from appliance.network.client import HelperError
from appliance.store import migrate, open_db

T0 = 1_767_225_600
TYPES = ("_airplay._tcp", "_ipp._tcp")


@pytest.fixture
def db(tmp_path):
    d = open_db(tmp_path / "appliance.db")
    migrate(d, schema.COMPONENT, schema.MIGRATIONS)
    return d


def lease(db, mac, ip, ts=T0):
    inventory.apply_dhcp(db, DhcpEvent(ts=ts, action="add", mac=mac, ip=ip,
                                       lease_expires=ts + 3600), vendor=lambda m: None)


def test_staff_devices_get_the_services_ports_and_students_nothing(db):
    lease(db, "02:ce:00:00:00:21", "10.42.0.21")  # staff
    lease(db, "02:ce:00:00:00:22", "10.42.0.22")  # student
    lease(db, "f0:18:98:00:00:10", "10.42.0.10")  # display
    lease(db, "02:ce:00:00:00:12", "10.42.0.12")  # printer
    inventory.set_group(db, "02:ce:00:00:00:21", "staff")
    inventory.apply_service(db, "f0:18:98:00:00:10", ServiceRecord(
        "_airplay._tcp.local.", "Room 101._airplay._tcp.local.", "atv.local.", 7000, "10.42.0.10",
        {}), vendor=lambda m: None)
    inventory.apply_service(db, "02:ce:00:00:00:12", ServiceRecord(
        "_ipp._tcp.local.", "Printer._ipp._tcp.local.", "prn.local.", 631, "10.42.0.12", {}),
        vendor=lambda m: None)
    inventory.apply_service(db, "02:ce:00:00:00:22", ServiceRecord(  # not a shared type
        "_ssh._tcp.local.", "x._ssh._tcp.local.", "x.local.", 22, "10.42.0.22", {}),
        vendor=lambda m: None)
    want = sharing.wanted(db, ("staff",), TYPES, T0 + 60)
    assert set(want) == {("02:ce:00:00:00:21", "f0:18:98:00:00:10"),
                         ("02:ce:00:00:00:21", "02:ce:00:00:00:12")}
    assert want[("02:ce:00:00:00:21", "02:ce:00:00:00:12")] == "tcp:631"
    airplay = want[("02:ce:00:00:00:21", "f0:18:98:00:00:10")].split(",")
    assert airplay[0] == "tcp:7000" and "udp:319-320" in airplay and len(airplay) <= 16
    assert len(airplay) == len(set(airplay))
    # Gone from the network (no lease, unseen for long): nothing wanted any more.
    assert sharing.wanted(db, ("staff",), TYPES, T0 + 3600 + 601) == {}
    assert sharing.wanted(db, (), TYPES, T0 + 60) == {}


def test_openings_renew_change_and_close():
    calls: list[tuple[str, dict[str, str]]] = []
    refuse = {"flag": False}

    def call(verb, args):
        calls.append((verb, args))
        if refuse["flag"]:
            raise HelperError("network helper unreachable")

    o = sharing.Openings(call, seconds=900)
    pair = ("02:ce:00:00:00:21", "f0:18:98:00:00:10")
    o.sync({pair: "tcp:7000"}, now=0)
    o.sync({pair: "tcp:7000"}, now=100)  # not due yet
    assert [c[0] for c in calls] == ["open-service"]
    assert calls[0][1] == {"from_mac": pair[0], "to_mac": pair[1], "ports": "tcp:7000",
                           "seconds": "900"}
    o.sync({pair: "tcp:7000"}, now=301)  # a third of the timeout: renewed
    o.sync({pair: "tcp:7000,tcp:7100"}, now=302)  # the service changed its ports
    assert [c[0] for c in calls] == ["open-service"] * 3
    o.sync({}, now=303)
    assert calls[-1] == ("close-service", {"from_mac": pair[0], "to_mac": pair[1]})
    refuse["flag"] = True
    o.sync({pair: "tcp:7000"}, now=400)
    assert o.opened == {}  # a refused opening is not remembered: retried at the next sync
    o.sync({pair: "tcp:7000"}, now=401)
    assert len(calls) == 6


def test_a_service_heard_before_its_lease_is_kept_until_the_lease_names_it(tmp_path):
    """At start the service hears running displays within ms; the spool's first file is read a
    second later. The record waits, and lands once the DHCP event names its address."""
    import time

    from appliance import config
    from appliance.devices.service import DevicesService

    cfg = config.from_dict({"appliance": {"id": "u", "state_dir": str(tmp_path / "state")},
                            "devices": {"spool_dir": str(tmp_path / "spool")}})
    db = open_db(tmp_path / "appliance.db")
    migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    svc = DevicesService(cfg, db)
    record = ServiceRecord("_airplay._tcp.local.", "Room 101._airplay._tcp.local.", "atv.local.",
                           7000, "203.0.113.77", {"model": "AppleTV6,2"})
    svc.on_service(record)
    assert svc.pending and inventory.devices(db) == []
    (tmp_path / "spool").mkdir()
    now = int(time.time())
    (tmp_path / "spool" / "events").write_text(
        f"ce1\tts={now}\taction=add\tmac=f0:18:98:00:00:10\tip=203.0.113.77\t"
        f"lease_expires={now + 600}\n")
    svc.spool.take()
    assert svc.drain_spool(now=time.time() + 5) == 1
    (found,) = inventory.devices(db)
    assert (found["mac"], found["kind"], found["model"]) == ("f0:18:98:00:00:10", "display",
                                                            "AppleTV6,2")
    assert svc.pending == {}
