"""Clock trust: synchronised, plausible or unknown, and the last known good time on disk."""

import pytest

from appliance import clock
from appliance.clock import ClockTrust

GOOD = 1_800_000_000.0


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def trust(tmp_path, now, synced):
    return ClockTrust(tmp_path, now=Clock(now), sync_probe=lambda: synced)


def stored(tmp_path):
    return float((tmp_path / clock.GOOD_TIME_FILE).read_text())


def test_synced_clock_is_trusted_and_recorded(tmp_path):
    t = trust(tmp_path, GOOD, synced=True)
    assert t.state() == "synced" and t.trusted()
    assert t.record_good_time()
    assert stored(tmp_path) == GOOD


def test_without_sync_or_file_the_clock_is_unknown(tmp_path):
    t = trust(tmp_path, GOOD, synced=False)
    assert t.state() == "unknown" and not t.trusted()
    assert not t.record_good_time()  # an unsynced clock never becomes the good time
    assert not (tmp_path / clock.GOOD_TIME_FILE).exists()


def test_unsynced_clock_not_earlier_than_last_good_is_plausible(tmp_path):
    trust(tmp_path, GOOD, synced=True).record_good_time()
    assert trust(tmp_path, GOOD, synced=False).state() == "plausible"
    assert trust(tmp_path, GOOD + 86400, synced=False).trusted()


def test_unsynced_clock_earlier_than_last_good_is_unknown(tmp_path):
    trust(tmp_path, GOOD, synced=True).record_good_time()
    earlier = trust(tmp_path, GOOD - 1, synced=False)
    assert earlier.state() == "unknown" and not earlier.trusted()
    # 1970 after a boot without any saved time: unknown too.
    assert trust(tmp_path, 0.0, synced=False).state() == "unknown"


def test_good_time_never_moves_backwards(tmp_path):
    assert trust(tmp_path, GOOD, synced=True).record_good_time()
    # A synced clock behind the file (NTP stepped it back): the file keeps the later time.
    assert not trust(tmp_path, GOOD - 3600, synced=True).record_good_time()
    assert stored(tmp_path) == GOOD


def test_good_time_is_advanced_at_most_every_ten_minutes(tmp_path):
    now = Clock(GOOD)
    t = ClockTrust(tmp_path, now=now, sync_probe=lambda: True)
    assert t.record_good_time()
    now.t += clock.ADVANCE_EVERY_S - 1
    assert not t.record_good_time()
    assert stored(tmp_path) == GOOD
    now.t += 1
    assert t.record_good_time()
    assert stored(tmp_path) == GOOD + clock.ADVANCE_EVERY_S


@pytest.mark.parametrize("content", [b"", b"garbage\n", b"\xff\xfe", b"nan", b"inf", b"-5", b"12"])
def test_corrupt_file_means_unknown_and_is_rewritten_once_synced(tmp_path, content):
    (tmp_path / clock.GOOD_TIME_FILE).write_bytes(content)
    assert trust(tmp_path, GOOD, synced=False).state() == "unknown"
    assert trust(tmp_path, GOOD, synced=True).record_good_time()
    assert stored(tmp_path) == GOOD
    assert [p.name for p in tmp_path.iterdir()] == [clock.GOOD_TIME_FILE]  # no temporary left


def test_state_dir_is_created_when_first_recording(tmp_path):
    t = ClockTrust(tmp_path / "new" / "state", now=Clock(GOOD), sync_probe=lambda: True)
    assert t.record_good_time()
    assert t.last_good() == GOOD


@pytest.mark.parametrize(("status", "maxerror", "synced"), [
    (0x0001, 20_000, True),               # STA_PLL, small error: an NTP daemon keeps the clock
    (0x0041, 20_000, False),              # STA_UNSYNC set
    (0x0001, 16_000_000, False),          # the kernel's maximum error: no update for hours
    (0x0000, -1, False),
])
def test_kernel_state_decides_synchronisation(status, maxerror, synced):
    assert clock.synced_from_timex(status, maxerror) is synced


def test_kernel_probe_answers_on_this_machine():
    # A real syscall: whatever the machine's state, it reads without privilege.
    assert clock.kernel_synced() in (True, False)


def test_host_clock_source_trusts_the_clock(monkeypatch, tmp_path):
    monkeypatch.setenv(clock.SOURCE_ENV, "host")
    assert ClockTrust(tmp_path).state() == "synced"
    monkeypatch.setenv(clock.SOURCE_ENV, "ntp")
    assert clock.default_probe() is clock.system_synced


def test_retimed_ms_counts_back_from_now_by_monotonic_time():
    # Taken at monotonic 100 s; now monotonic 400 s and the trusted wall clock says GOOD.
    assert clock.retimed_ms(GOOD, 400.0, 100.0) == int((GOOD - 300) * 1000)
    assert clock.retimed_ms(GOOD, 400.0, 400.0) == int(GOOD * 1000)


def test_boot_id_is_empty_when_unreadable(tmp_path):
    assert clock.boot_id(tmp_path / "missing") == ""
    (tmp_path / "id").write_text("abc-123\n")
    assert clock.boot_id(tmp_path / "id") == "abc-123"
