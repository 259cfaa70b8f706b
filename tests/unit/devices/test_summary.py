"""The devices summary: counts only, valid against its own spec, nothing identifying."""

from __future__ import annotations

import time

from appliance.devices import inventory, schema, summary
from appliance.devices.events import DhcpEvent
from appliance.fleet import summaries
from appliance.store import migrate, open_db


def test_summary_before_the_service_ran_is_all_unknown(cfg, tmp_path):
    db = open_db(tmp_path / "a.db")
    values = summary.collect(cfg, db)
    assert set(values) == {f.key for f in summary.SUMMARY.fields}
    assert all(v is None for v in values.values())


def test_summary_counts_and_carries_no_mac_or_name(cfg, tmp_path):
    db = open_db(tmp_path / "a.db")
    migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    now = int(time.time())
    inventory.apply_dhcp(db, DhcpEvent(ts=now, action="add", mac="02:ce:00:00:00:01",
                                       ip="192.0.2.50", lease_expires=now + 600,
                                       vendor_class="android-dhcp-14",
                                       supplied_hostname="Janes-Phone"))
    values = summary.collect(cfg, db)
    assert values["now"] == 1 and values["kind_phone"] == 1 and values["os_android"] == 1
    raw = summaries.build(now * 1000, True, {"devices": values}, {"devices": summary.SUMMARY})
    assert b"02:ce" not in raw and b"Janes" not in raw
