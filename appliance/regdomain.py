"""Wi-Fi regulatory facts our configuration checks, since hostapd has no check mode.

Pure data: the ISO 3166-1 alpha-2 country codes, and a compact table of the channels an access
point may use per band and country group. It is deliberately coarser than the kernel's wireless
regulatory database (which has the last word on a real radio): it refuses what is wrong
everywhere (channel 12 in the US, 149 in Europe, 14 anywhere) and DFS channels unless asked,
since an AP on a DFS channel must listen for radar for a minute before it may send and must
leave the channel when radar appears, which an unattended classroom radio should not do.
"""

from __future__ import annotations

from dataclasses import dataclass


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


# ISO 3166-1 alpha-2 (officially assigned codes), as hostapd's country_code expects them.
COUNTRIES: frozenset[str] = _codes("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
""")

# Countries whose 2.4 GHz band ends at channel 11 (FCC and the regulators that follow it).
FCC_24 = _codes("US CA MX PR GU AS VI MP UM TW CO DO GT PA PH")

_UNII1 = (36, 40, 44, 48)
_UNII2 = (52, 56, 60, 64)  # DFS
_UNII2E = (100, 104, 108, 112, 116, 120, 124, 128, 132, 136, 140)  # DFS
_UNII2E_144 = (*_UNII2E, 144)
_UNII3 = (149, 153, 157, 161, 165)


@dataclass(frozen=True)
class Channels:
    """The 5 GHz channels of a country group: usable at once, and DFS (radar detection)."""

    free: tuple[int, ...]
    dfs: tuple[int, ...]


# 5 GHz per country group; any country not listed gets DEFAULT_5 (ETSI-like: no UNII-3).
_AMERICAS = Channels(free=(*_UNII1, *_UNII3), dfs=(*_UNII2, *_UNII2E_144))
_ASIA_UNII3 = Channels(free=(*_UNII1, *_UNII3), dfs=(*_UNII2,))
FIVE_GHZ: dict[str, Channels] = {
    **{c: _AMERICAS for c in _codes("US CA MX PR GU AS VI MP UM CO")},
    **{c: Channels(free=(*_UNII1, *_UNII3), dfs=(*_UNII2, *_UNII2E)) for c in _codes("AU NZ IN")},
    **{c: _ASIA_UNII3 for c in _codes("CN ID")},
}
DEFAULT_5 = Channels(free=_UNII1, dfs=(*_UNII2, *_UNII2E))


def channels_24(country: str) -> tuple[int, ...]:
    """The 2.4 GHz channels an AP may use in `country` (14 is refused everywhere: 802.11b only)."""
    return tuple(range(1, 12 if country in FCC_24 else 14))


def channel_problem(country: str, band: str, channel: int, *, allow_dfs: bool = False) -> str | None:
    """Why `channel` is not allowed for an AP in `country` on `band` ("2.4" or "5"), or None."""
    if band == "2.4":
        allowed = channels_24(country)
        if channel not in allowed:
            return (f"channel {channel} is not allowed on 2.4 GHz in {country} "
                    f"(use {allowed[0]}-{allowed[-1]})")
        return None
    table = FIVE_GHZ.get(country, DEFAULT_5)
    if channel in table.free:
        return None
    if channel in table.dfs:
        if allow_dfs:
            return None
        return (f"channel {channel} is a DFS (radar) channel in {country}; pick one of "
                f"{', '.join(map(str, table.free))} or set dfs = true")
    return (f"channel {channel} is not allowed on 5 GHz in {country} (allowed: "
            f"{', '.join(map(str, table.free))}; DFS: {', '.join(map(str, table.dfs))})")
