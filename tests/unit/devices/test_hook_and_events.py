"""The DHCP hook (the real shell script) and the parsing of its lines."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from appliance.devices.events import MAX_HOSTNAME, clean_text, is_randomized, parse_line
from appliance.devices.spool import HOOK, Spool


def run_hook(spool, *args, **env):
    full = {"PATH": os.environ["PATH"], "DEVICES_SPOOL": str(spool),
            **{f"DNSMASQ_{k}": v for k, v in env.items()}}
    return subprocess.run(["/bin/sh", str(HOOK), *args], env=full, capture_output=True,
                          timeout=10, check=True)


def lines(spool):
    path = spool / "events"
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


def test_an_add_event_carries_the_fingerprint(tmp_path):
    run_hook(tmp_path, "add", "02:CE:00:00:00:01", "192.0.2.50", "pixel",
             REQUESTED_OPTIONS="1,3,6,15,26,28,51,58,59,43,114,108",
             VENDOR_CLASS="android-dhcp-14", SUPPLIED_HOSTNAME="Pixel-7", CLIENT_ID="01:02:ce",
             INTERFACE="wlan0", TAGS="wlan0 known", LEASE_EXPIRES="1767229200")
    [raw] = lines(tmp_path)
    event = parse_line(raw)
    assert event is not None
    assert (event.action, event.mac, event.ip) == ("add", "02:ce:00:00:00:01", "192.0.2.50")
    assert event.requested_options == (1, 3, 6, 15, 26, 28, 51, 58, 59, 43, 114, 108)
    assert event.vendor_class == "android-dhcp-14" and event.name == "Pixel-7"
    assert event.tags == ("wlan0", "known") and event.lease_expires == 1767229200
    assert abs(event.ts - time.time()) < 5 and not event.data_missing


def test_values_with_tabs_and_newlines_stay_on_one_line(tmp_path):
    nasty = "evil\tname\nsecond line\r<script>alert(1)</script>\x1b[31m"
    run_hook(tmp_path, "add", "02:ce:00:00:00:02", "192.0.2.51", VENDOR_CLASS=nasty,
             SUPPLIED_HOSTNAME="a\nb")
    [raw] = lines(tmp_path)
    assert raw.count(b"\n") == 1
    event = parse_line(raw)
    assert event is not None
    assert "\n" not in event.vendor_class and "\x1b" not in event.vendor_class
    assert event.vendor_class.startswith("evil name second line")
    assert event.supplied_hostname == "a b"


def test_an_oversized_event_is_cut_to_its_lease_and_stays_one_write(tmp_path):
    huge = "x" * 3000
    run_hook(tmp_path, "add", "02:ce:00:00:00:03", "192.0.2.52", VENDOR_CLASS=huge,
             CLIENT_ID=huge)
    [raw] = lines(tmp_path)
    assert len(raw) < 4096
    event = parse_line(raw)
    assert event is not None and event.truncated and event.vendor_class is None
    assert event.mac == "02:ce:00:00:00:03"


def test_old_at_start_says_data_is_missing_and_unknown_actions_write_nothing(tmp_path):
    run_hook(tmp_path, "init")
    run_hook(tmp_path, "tftp", "1", "2")
    assert lines(tmp_path) == []
    run_hook(tmp_path, "old", "02:ce:00:00:00:04", "192.0.2.53", DATA_MISSING="1")
    event = parse_line(lines(tmp_path)[0])
    assert event is not None and event.action == "old" and event.data_missing


def test_the_hook_returns_at_once_even_without_a_spool(tmp_path):
    started = time.monotonic()
    result = run_hook(tmp_path / "missing", "add", "02:ce:00:00:00:05", "192.0.2.54")
    assert result.returncode == 0 and time.monotonic() - started < 2


@pytest.mark.parametrize("raw", [
    b"", b"\n", b"garbage\n", b"ce1\tts=1\taction=add\tmac=zz:zz:zz:zz:zz:zz\n",
    b"ce1\tts=1\taction=reboot\tmac=02:00:00:00:00:01\n", b"ce1\taction=add\tmac=02:00:00:00:00:01\n",
    b"ce2\tts=1\taction=add\tmac=02:00:00:00:00:01\n", b"ce1\t" + b"x" * 10000 + b"\n",
    b"\xff\xfe\x00\t\t\t=\n",
])
def test_lines_that_are_not_events_are_dropped(raw):
    assert parse_line(raw) is None


def test_a_bad_option_list_or_address_is_not_trusted():
    event = parse_line(b"ce1\tts=5\taction=add\tmac=02:00:00:00:00:01\tip=300.1.2.3x\t"
                       b"requested_options=1,3,x\tunknown=1\tmac=02:00:00:00:00:02\n")
    assert event is not None and event.ip is None and event.requested_options is None
    assert event.mac == "02:00:00:00:00:01"  # the first of a repeated key wins


def test_clean_text_bounds_and_strips_what_a_terminal_or_page_would_act_on():
    assert clean_text("A\u202eB\u200bC\x00D\x7fE  \t F", 100) == "ABCDE F"
    assert len(clean_text("é" * 1_000_000, MAX_HOSTNAME)) == MAX_HOSTNAME


def test_randomized_macs_are_the_locally_administered_ones():
    assert is_randomized("02:ce:00:00:00:01") and is_randomized("da:a1:19:00:00:01")
    assert not is_randomized("f0:18:98:00:00:01") and not is_randomized("00:1b:63:00:00:01")


def test_the_spool_reads_a_taken_file_only_once_it_is_quiet(tmp_path):
    spool = Spool(tmp_path)
    run_hook(tmp_path, "add", "02:ce:00:00:00:06", "192.0.2.55")
    spool.take()
    assert not (tmp_path / "events").exists()
    [taken] = list(tmp_path.glob("taken-*"))
    assert spool.ready() == []
    # A hook that opened `events` before the rename still lands in the taken file.
    with taken.open("ab") as late:
        late.write(b"ce1\tts=1\taction=del\tmac=02:ce:00:00:00:06\n")
    run_hook(tmp_path, "add", "02:ce:00:00:00:07", "192.0.2.56")  # a fresh `events`
    [ready] = spool.ready(now=time.time() + 2)
    got = [parse_line(x) for batch in spool.batches(ready) for x in batch]
    assert [(e.action, e.mac) for e in got] == [("add", "02:ce:00:00:00:06"),
                                                 ("del", "02:ce:00:00:00:06")]
    spool.done(ready)
    assert len(lines(tmp_path)) == 1


def test_a_torn_last_line_is_not_read(tmp_path):
    path = tmp_path / "taken-1"
    path.write_bytes(b"ce1\tts=1\taction=add\tmac=02:00:00:00:00:01\nce1\tts=1\tact")
    assert [len(b) for b in Spool.batches(path)] == [1]
