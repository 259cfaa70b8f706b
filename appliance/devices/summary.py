"""The devices summary the agent reports: how many devices now, by kind and OS family, new MACs
today, displays and printers. Counts only: no MAC, host name, model name or TXT value leaves
the Pi through it."""

from __future__ import annotations

import sqlite_utils

from appliance.config import Config
from appliance.fleet.summaries import N_, Field, SummarySpec, Value

KIND_FIELDS = (("phone", N_("Phones")), ("tablet", N_("Tablets")), ("laptop", N_("Laptops")),
               ("chromebook", N_("Chromebooks")), ("computer", N_("Other computers")),
               ("display", N_("Displays")), ("printer", N_("Printers")),
               ("speaker", N_("Speakers")))
OS_FIELDS = (("android", N_("Android")), ("ios", N_("iOS")), ("ipados", N_("iPadOS")),
             ("macos", N_("macOS")), ("windows", N_("Windows")), ("chromeos", N_("ChromeOS")),
             ("linux", N_("Linux")))

SUMMARY = SummarySpec(
    "devices",
    N_("Devices"),
    (
        Field("now", N_("Devices here now"), "count"),
        Field("new_today", N_("New MACs today"), "count"),
        Field("peak_today", N_("Most leases at once today"), "count"),
        *(Field(f"kind_{k}", label, "count") for k, label in KIND_FIELDS),
        Field("kind_other", N_("Other or unknown kind"), "count"),
        *(Field(f"os_{k}", label, "count") for k, label in OS_FIELDS),
        Field("os_other", N_("Other or unknown OS"), "count"),
    ),
)


def collect(config: Config, db: sqlite_utils.Database) -> dict[str, Value]:
    # Before the devices service first ran, its tables do not exist: nothing known yet.
    if not db["device_inventory"].exists():
        return {f.key: None for f in SUMMARY.fields}
    from appliance.devices.inventory import counts

    c = counts(db)
    values: dict[str, Value] = {"now": c["now"], "new_today": c["new_today"],
                                "peak_today": c["peak_leases_today"]}
    for prefix, known, found in (("kind", KIND_FIELDS, c["by_kind"]),
                                 ("os", OS_FIELDS, c["by_os"])):
        names = {k for k, _ in known}
        for k in names:
            values[f"{prefix}_{k}"] = int(found.get(k, 0))
        values[f"{prefix}_other"] = sum(n for k, n in found.items() if k not in names)
    return values
