from appliance.console.live import FleetDiff


def snap(devices, t=1.0, online=None):
    return {
        "generated_at": t,
        "ingest": {"alive": True, "broker_connected": True, "broker_since": 0, "rejected_messages": 0},
        "counts": {"online": len(devices) if online is None else online, "total": len(devices)},
        "devices": devices,
    }


def dev(ident, cpu=1.0, state="online"):
    return {"id": ident, "state": state, "health": {"cpu_pct": cpu}}


def test_first_event_is_the_whole_fleet_then_only_changes():
    diff = FleetDiff()
    first = snap([dev("a"), dev("b")])
    assert diff.update(first) == ("fleet", first)
    assert diff.update(snap([dev("a"), dev("b")], t=2.0)) is None  # only the clock moved
    kind, patch = diff.update(snap([dev("a"), dev("b", cpu=50.0)], t=3.0))
    assert kind == "patch"
    assert patch["devices"] == [dev("b", cpu=50.0)]
    assert patch["removed"] == [] and "order" not in patch


def test_new_removed_and_reordered_devices_are_sent():
    diff = FleetDiff()
    diff.update(snap([dev("a"), dev("b")]))
    _, patch = diff.update(snap([dev("c"), dev("a")]))
    assert patch["devices"] == [dev("c")]
    assert patch["removed"] == ["b"]
    assert patch["order"] == ["c", "a"]


def test_a_change_of_counts_or_ingest_alone_is_sent():
    diff = FleetDiff()
    diff.update(snap([dev("a")]))
    changed = snap([dev("a")])
    changed["ingest"]["broker_connected"] = False
    kind, patch = diff.update(changed)
    assert kind == "patch" and patch["devices"] == [] and patch["ingest"]["broker_connected"] is False
