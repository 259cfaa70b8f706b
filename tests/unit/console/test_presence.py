from appliance.console.presence import Presence, apply_status, shown
from appliance.fleet.payloads import Status


def online(session):
    return Status(state="online", session=session)


def offline(session, reason="lwt"):
    return Status(state="offline", session=session, reason=reason)


def test_birth_makes_a_device_online():
    p = apply_status(None, online(1), now=10)
    assert p == Presence("online", 1, None, 10)


def test_late_will_of_an_older_session_is_ignored():
    current = apply_status(None, online(5), now=10)
    assert apply_status(current, offline(4), now=11) is None


def test_will_of_the_current_session_makes_it_offline():
    current = apply_status(None, online(5), now=10)
    assert apply_status(current, offline(5), now=11) == Presence("offline", 5, "lwt", 11)


def test_duplicate_keeps_the_original_since():
    current = apply_status(None, online(5), now=10)
    assert apply_status(current, online(5), now=20).since == 10


def test_reimaged_device_with_lower_counter_comes_back_online():
    gone = Presence("offline", 40, "shutdown", 10)
    assert apply_status(gone, online(1), now=11).state == "online"


def test_lower_counter_birth_does_not_displace_a_live_session():
    live = Presence("online", 40, None, 10)
    assert apply_status(live, online(1), now=11) is None


def kw(**over):
    base = {"fallback_silent_after": 180.0, "broker_connected": True, "ingest_alive": True}
    return base | over


def test_online_but_silent_is_shown_offline():
    assert shown("online", None, last_seen=100, interval=2, now=105, **kw()).state == "online"
    s = shown("online", None, last_seen=100, interval=2, now=107, **kw())
    assert (s.state, s.reason) == ("offline", "silent")


def test_broker_loss_and_dead_ingest_override_stored_state():
    assert shown("online", None, 100, 2, 101, **kw(broker_connected=False)).reason == "broker"
    assert shown("online", None, 100, 2, 101, **kw(ingest_alive=False)).state == "unknown"
