"""Read the machine's health with psutil: the figures an admin acts on, nothing about users."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

# Raspberry Pi OS exposes the SoC sensor as "cpu_thermal"; x86 boards use "coretemp" and friends.
PREFERRED_SENSORS = ("cpu_thermal", "soc_thermal", "coretemp", "k10temp", "acpitz")


def cpu_temperature() -> float | None:
    """SoC temperature in °C, or None when the machine has no sensor we can read."""
    try:
        sensors = psutil.sensors_temperatures()
    except (AttributeError, OSError):
        return None
    for name in (*PREFERRED_SENSORS, *sorted(sensors)):
        for entry in sensors.get(name, []):
            if entry.current is not None and -60 <= entry.current <= 150:
                return round(float(entry.current), 1)
    return None


def collect(disk_path: Path | str = "/") -> dict[str, float | None]:
    """One sample. cpu_pct is the average since the previous call (the first call primes it)."""
    mem = psutil.virtual_memory()
    try:
        disk_pct: float | None = psutil.disk_usage(str(disk_path)).percent
    except OSError:
        disk_pct = None
    return {
        "cpu_pct": round(psutil.cpu_percent(interval=None), 1),
        "mem_pct": round(mem.percent, 1),
        "disk_pct": disk_pct,
        "temp_c": cpu_temperature(),
        "load1": round(os.getloadavg()[0], 2),
        "uptime_s": round(max(0.0, time.time() - psutil.boot_time())),
    }
