"""Whether the wall clock can be believed. A Pi has no real-time clock and may boot offline.

Three states, from `ClockTrust.state()`:

- `synced`: the kernel says an NTP daemon keeps the clock (no `STA_UNSYNC`, max error < 16 s),
  or, where that cannot be read, `timedatectl` says `NTPSynchronized=yes`.
- `plausible`: not synchronised, but not earlier than the last known good time stored in
  `<state_dir>/clock-good`. The clock may still be behind (a Pi restores its last saved time
  at boot), but it has not gone back: good enough for "which lesson is it", not for a sample's
  timestamp.
- `unknown`: neither; no file, a corrupt one, or the clock is earlier than it.

`trusted()` is `synced` or `plausible`. `record_good_time()` advances the file while `synced`
only, so a wrong clock can never poison it, and never moves it backwards.

Everything but the one syscall (`kernel_synced`) and the file is pure; tests inject `now` and
`sync_probe`. The rules for each consumer are in docs/architecture.md, "Clock trust".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

State = Literal["synced", "plausible", "unknown"]
# The states as small integers (index), for stores that keep numbers.
STATES: tuple[State, ...] = ("unknown", "plausible", "synced")

GOOD_TIME_FILE = "clock-good"
# "host" on a machine whose clock is kept by its host (a container, a VM, a developer's machine
# running the lab), where the kernel has no NTP state to read; anything else means ask NTP.
SOURCE_ENV = "APPLIANCE_CLOCK_SOURCE"
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
# The kernel caps the maximum error at 16 s (NTP_PHASE_LIMIT) and sets STA_UNSYNC there;
# systemd's ntp_synced() uses the same limit.
MAX_ERROR_US = 16_000_000
STA_UNSYNC = 0x0040
# The good-time file is written at most this often: it only has to bound the clock from below,
# and an SD card should not see a write per sample.
ADVANCE_EVERY_S = 600.0


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    # struct timex of <sys/timex.h> (the legacy `adjtimex` symbol, so `long` is the ABI's
    # word); the trailing padding is what the header reserves, and more for safety.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 32),
    ]


def synced_from_timex(status: int, maxerror_us: int) -> bool:
    """The kernel's view, as ntp_adjtime() reports it: synchronised and the error bounded."""
    return not status & STA_UNSYNC and 0 <= maxerror_us < MAX_ERROR_US


def kernel_synced() -> bool | None:
    """Ask the kernel (adjtimex with modes 0: read only, no privilege needed); None if we can't."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        timex = _Timex()
        if libc.adjtimex(ctypes.byref(timex)) < 0:
            return None
    except (OSError, AttributeError):
        return None
    return synced_from_timex(timex.status, timex.maxerror)


def timedatectl_synced() -> bool | None:
    """`timedatectl show -p NTPSynchronized --value`; None when systemd cannot tell us."""
    try:
        out = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip()
    return {"yes": True, "no": False}.get(value) if out.returncode == 0 else None


def system_synced() -> bool:
    """The default probe: the kernel first, timedatectl where the kernel cannot be asked."""
    synced = kernel_synced()
    if synced is None:
        synced = timedatectl_synced()
    return bool(synced)


def default_probe(source: str = "ntp") -> Callable[[], bool]:
    """`system_synced`, or "always synced" when `source` ([agent] clock_source) or
    $APPLIANCE_CLOCK_SOURCE is `host`."""
    if source == "host" or os.environ.get(SOURCE_ENV, "").strip().lower() == "host":
        return lambda: True
    return system_synced


def boot_id(path: Path = BOOT_ID_FILE) -> str:
    """This boot's id (a new one every boot); "" when unknown, which never matches a stored one."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def retimed_ms(now_wall: float, now_mono: float, mono_then: float) -> int:
    """The wall time (ms) of an event seen at `mono_then`, by today's trusted wall clock.

    Valid only within one boot: CLOCK_MONOTONIC starts again at every boot.
    """
    return round((now_wall - (now_mono - mono_then)) * 1000)


class ClockTrust:
    """How far the wall clock can be believed. Cheap to ask: one syscall, one small file."""

    def __init__(
        self,
        state_dir: Path,
        *,
        now: Callable[[], float] = time.time,
        sync_probe: Callable[[], bool] | None = None,
        advance_every: float = ADVANCE_EVERY_S,
    ) -> None:
        self.path = Path(state_dir) / GOOD_TIME_FILE
        self.now = now
        self.sync_probe = sync_probe or default_probe()
        self.advance_every = advance_every

    def last_good(self) -> float | None:
        """The stored last known good time (seconds), or None if missing or unreadable."""
        try:
            text = self.path.read_text(encoding="ascii").strip()
            value = float(text)
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        # A value a real clock never shows (nan, inf, before 2020, negative) is as good as none.
        return value if 1_577_836_800.0 <= value < 1e11 else None

    def state(self) -> State:
        if self.sync_probe():
            return "synced"
        good = self.last_good()
        if good is not None and self.now() >= good:
            return "plausible"
        return "unknown"

    def trusted(self) -> bool:
        return self.state() != "unknown"

    def record_good_time(self) -> bool:
        """Advance the stored good time to now if the clock is synced; True if it was written.

        Never moves the stored time backwards, and writes at most every `advance_every` s. A
        missing or corrupt file is replaced (atomically: temporary file, fsync, rename).
        """
        if not self.sync_probe():
            return False
        now = self.now()
        good = self.last_good()
        if good is not None and now < good + self.advance_every:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="ascii") as f:
            f.write(f"{now:.3f}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        # The rename itself must survive a power cut, not only the file's bytes.
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True
