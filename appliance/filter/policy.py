"""Who may resolve what, now: groups, categories, SafeSearch, schedules, exam mode, overrides and
the bypass canaries. Pure: no sockets, no files, no clock of its own (callers pass `now` and
whether the clock is trusted).

Decision order for one name (every query type, and every name of a CNAME chain):

1. bypass canaries (Firefox DoH, iCloud Private Relay, DDR `_dns.resolver.arpa`), if the group
   has them (every default group does);
2. a group with filtering off: forward;
3. exam mode for the group or the whole building: only the exam's allowlist resolves;
4. timed overrides, then the group's allowlist: forward;
5. the group's blocklist: block;
6. SafeSearch and YouTube rewrites (a CNAME to the engine's safe host);
7. categories blocked for the group now (always-on ones plus those of the schedules in force):
   block, naming the category;
8. forward, with the answer's TTLs capped so a later change reaches the client within 60 s.

While the clock is not trusted the strictest reading applies: every schedule of the group is in
force, every exam that has not been stopped is running, and overrides do not apply.

`decide()` is what the server calls (memoized per group state and name); `explain()` is the same
decision with the device-to-group step and every reason, for `appliance filter explain` and the
portal's "why is this site blocked?".
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from appliance.config import FilterSection

Youtube = Literal["off", "moderate", "strict"]
Action = Literal["forward", "block", "nxdomain", "nodata", "rewrite"]

# Answers to filtered groups live at most this long in clients' caches, so an exam, an override
# or a schedule boundary reaches every client within a minute.
FILTERED_TTL_CAP = 60
BLOCK_TTL = 10
EXAM_ALL = "*"  # an exam for the whole building

CANARIES_NXDOMAIN = ("use-application-dns.net", "mask.icloud.com", "mask-h2.icloud.com")
CANARIES_NODATA = ("_dns.resolver.arpa",)

# www.google.<ccTLD>, google.<ccTLD>, google.co(m).<cc>: every Google search front end.
_GOOGLE = re.compile(r"(www\.)?google\.(com?\.)?[a-z]{2,3}")
GOOGLE_SAFE = "forcesafesearch.google.com"
SAFESEARCH: dict[str, str] = {
    "www.bing.com": "strict.bing.com", "bing.com": "strict.bing.com",
    "duckduckgo.com": "safe.duckduckgo.com", "www.duckduckgo.com": "safe.duckduckgo.com",
    "start.duckduckgo.com": "safe.duckduckgo.com", "html.duckduckgo.com": "safe.duckduckgo.com",
    "yandex.ru": "familysearch.yandex.ru", "www.yandex.ru": "familysearch.yandex.ru",
    "yandex.com": "familysearch.yandex.ru", "www.yandex.com": "familysearch.yandex.ru",
    "ya.ru": "familysearch.yandex.ru", "www.ya.ru": "familysearch.yandex.ru",
}
YOUTUBE_HOSTS = ("www.youtube.com", "m.youtube.com", "youtubei.googleapis.com",
                 "youtube.googleapis.com", "www.youtube-nocookie.com")
YOUTUBE_TARGET = {"strict": "restrict.youtube.com", "moderate": "restrictmoderate.youtube.com"}
# The safe hosts themselves never match a rewrite (they would loop) nor a category.
SAFE_TARGETS = frozenset({GOOGLE_SAFE, *SAFESEARCH.values(), *YOUTUBE_TARGET.values()})

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class PolicyError(ValueError):
    """A policy that cannot be used; `key` names the config key at fault."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


def suffixes(name: str) -> list[str]:
    """`name` and each of its parents: a.b.c, b.c, c."""
    parts = name.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def _listed(name: str, domains: frozenset[str]) -> str | None:
    """The entry of `domains` that covers `name` (itself or a parent), if any."""
    if not domains:
        return None
    for s in suffixes(name):
        if s in domains:
            return s
    return None


@dataclass(frozen=True)
class Group:
    """One group's policy. `categories` are blocked at all times; `filtering = False` forwards
    everything (a staff group; every change to it is audited by the state store)."""

    name: str
    categories: frozenset[str] = frozenset()
    allow: frozenset[str] = frozenset()
    block: frozenset[str] = frozenset()
    safesearch: bool = False
    youtube: Youtube = "off"
    canaries: bool = True
    filtering: bool = True
    macs: frozenset[str] = frozenset()
    ranges: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@dataclass(frozen=True)
class Schedule:
    """`categories` blocked for `group` on `days` (0 = Monday) from `start` to `end` local time."""

    group: str
    categories: frozenset[str]
    days: frozenset[int]
    start: time
    end: time

    def active(self, local: datetime) -> bool:
        if local.weekday() not in self.days:
            return False
        clock = local.time()
        if self.start <= self.end:
            return self.start <= clock < self.end
        return clock >= self.start or clock < self.end  # across midnight


@dataclass(frozen=True)
class Exam:
    """Allowlist-only for `scope` (a group name or `*` for the building) until `until`."""

    scope: str
    until: float
    allow: frozenset[str] = frozenset()
    started_at: float = 0.0


@dataclass(frozen=True)
class Override:
    """`domain` (and its subdomains) allowed for `group` until `until`."""

    domain: str
    group: str
    until: float
    created_at: float = 0.0


@dataclass(frozen=True)
class State:
    """What changes while the filter runs (persisted by `state.Store`)."""

    exams: tuple[Exam, ...] = ()
    overrides: tuple[Override, ...] = ()
    version: int = 0


@dataclass(frozen=True)
class Policy:
    groups: Mapping[str, Group]
    schedules: tuple[Schedule, ...] = ()
    timezone: str = "UTC"
    default_group: str = "students"
    exam_allow: frozenset[str] = frozenset()  # resolvable during every exam (the exam platform)
    version: int = 1
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"), compare=False)

    def group_for(self, mac: str | None, ip: str | None) -> tuple[str, str]:
        """(group, why) for a device: by MAC first, then by IP range; unknown and randomized
        (locally administered) MACs fall into the default group."""
        mac = normalize_mac(mac) if mac else None
        if mac:
            for g in self.groups.values():
                if mac in g.macs:
                    return g.name, f"MAC {mac} is a member of group {g.name}"
        if ip:
            try:
                addr = ipaddress.ip_address(ip.split("%", 1)[0])
            except ValueError:
                addr = None
            if addr is not None:
                for g in self.groups.values():
                    for net in g.ranges:
                        if addr.version == net.version and addr in net:
                            return g.name, f"address {addr} is in {net}, a range of group {g.name}"
        if mac and int(mac[:2], 16) & 0x02:
            return self.default_group, (f"MAC {mac} is randomized (locally administered): "
                                        f"default group {self.default_group}")
        who = f"MAC {mac}" if mac else f"address {ip}" if ip else "the device"
        return self.default_group, f"{who} is in no group: default group {self.default_group}"


@dataclass(frozen=True)
class Active:
    """A group's policy in force at one moment: what `decide()` needs besides the name. Equal
    values give equal decisions, so the server memoizes on (Active, name)."""

    group: Group
    categories: frozenset[str]
    scheduled: frozenset[str]
    exam: Exam | None
    overrides: frozenset[str]
    trusted: bool


@dataclass(frozen=True)
class Decision:
    action: Action
    group: str
    reasons: tuple[str, ...]
    category: str = ""  # of a block: the category, "blocklist", "exam" or "canary"
    target: str = ""  # of a rewrite: the CNAME target
    ttl_cap: int | None = None  # answers to this group are cached by clients at most this long
    inspect: bool = False  # check every name of the answer's CNAME chain


def normalize_mac(mac: str) -> str:
    """`aa:bb:cc:dd:ee:ff` from any common spelling; ValueError if it is not a MAC."""
    digits = re.sub(r"[^0-9a-fA-F]", "", mac)
    if len(digits) != 12:
        raise ValueError(f"{mac!r} is not a MAC address")
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2)).lower()


def active(policy: Policy, group: str, state: State, now: float, trusted: bool) -> Active:
    """The policy in force for `group` at `now` (strictest while the clock is untrusted)."""
    g = policy.groups.get(group) or policy.groups[policy.default_group]
    local = datetime.fromtimestamp(now, policy.zone)
    scheduled: set[str] = set()
    for s in policy.schedules:
        if s.group == g.name and (not trusted or s.active(local)):
            scheduled |= s.categories
    exam = None
    for e in state.exams:
        if e.scope in (EXAM_ALL, g.name) and (not trusted or e.until > now) and (
                exam is None or e.until > exam.until):
            exam = e
    overrides = frozenset(o.domain for o in state.overrides
                          if trusted and o.group == g.name and o.until > now)
    return Active(g, g.categories | scheduled, frozenset(scheduled), exam, overrides, trusted)


def decide(policy: Policy, act: Active, name: str,
           categories: Callable[[str], Iterable[str]]) -> Decision:
    """The decision for `name` (lower case, no trailing dot). `categories(name)` gives the
    categories the compiled lists put `name` (or a parent) in."""
    g = act.group
    cap = FILTERED_TTL_CAP
    if g.canaries:
        if name in CANARIES_NXDOMAIN:
            return Decision("nxdomain", g.name, (f"{name} is a bypass canary: answered NXDOMAIN "
                                                 "so devices keep using this resolver",),
                            "canary", ttl_cap=BLOCK_TTL)
        if name in CANARIES_NODATA:
            return Decision("nodata", g.name, (f"{name} is the DDR canary: no encrypted resolver "
                                               "is advertised",), "canary", ttl_cap=BLOCK_TTL)
    if not g.filtering:
        return Decision("forward", g.name, (f"filtering is off for group {g.name}",))
    reasons: list[str] = []
    if not act.trusted:
        reasons.append("the clock is not trusted: the strictest schedule and exam state apply")
    if act.exam is not None:
        allowed = _listed(name, act.exam.allow | policy.exam_allow)
        scope = "the whole building" if act.exam.scope == EXAM_ALL else f"group {act.exam.scope}"
        if allowed is None:
            reasons.append(f"exam mode for {scope} until {_when(policy, act.exam.until)}: only "
                           "the exam allowlist resolves")
            return Decision("block", g.name, tuple(reasons), "exam", ttl_cap=BLOCK_TTL)
        reasons.append(f"exam mode for {scope}: {allowed} is on the exam allowlist")
        return Decision("forward", g.name, tuple(reasons), ttl_cap=cap, inspect=True)
    hit = _listed(name, act.overrides)
    if hit:
        reasons.append(f"{hit} is unblocked for group {g.name} by a timed override")
        return Decision("forward", g.name, tuple(reasons), ttl_cap=cap)
    hit = _listed(name, g.allow)
    if hit:
        reasons.append(f"{hit} is on the allowlist of group {g.name}")
        return Decision("forward", g.name, tuple(reasons), ttl_cap=cap)
    hit = _listed(name, g.block)
    if hit:
        reasons.append(f"{hit} is on the blocklist of group {g.name}")
        return Decision("block", g.name, tuple(reasons), "blocklist", ttl_cap=BLOCK_TTL)
    target = rewrite(g, name)
    if target:
        reasons.append(f"SafeSearch/YouTube restriction for group {g.name}: {name} -> {target}")
        return Decision("rewrite", g.name, tuple(reasons), target=target, ttl_cap=cap)
    if name not in SAFE_TARGETS:
        listed = sorted(set(categories(name)))
        blocked = [c for c in listed if c in act.categories]
        if blocked:
            when = ("by the schedule in force" if blocked[0] in act.scheduled
                    and blocked[0] not in g.categories else "always")
            reasons.append(f"{name} is in category {', '.join(blocked)}, blocked for group "
                           f"{g.name} {when}")
            return Decision("block", g.name, tuple(reasons), blocked[0], ttl_cap=BLOCK_TTL)
        if listed:
            reasons.append(f"{name} is in category {', '.join(listed)}, not blocked for group "
                           f"{g.name} now")
    reasons.append(f"allowed for group {g.name}")
    return Decision("forward", g.name, tuple(reasons), ttl_cap=cap, inspect=True)


def rewrite(g: Group, name: str) -> str:
    """The safe host `name` is sent to for group `g`, or ""."""
    if g.youtube != "off" and name in YOUTUBE_HOSTS:
        return YOUTUBE_TARGET[g.youtube]
    if g.safesearch:
        if _GOOGLE.fullmatch(name):
            return GOOGLE_SAFE
        return SAFESEARCH.get(name, "")
    return ""


def _when(policy: Policy, ts: float) -> str:
    return datetime.fromtimestamp(ts, policy.zone).strftime("%Y-%m-%d %H:%M %Z")


def explain(policy: Policy, state: State, name: str, categories: Callable[[str], Iterable[str]],
            now: float, trusted: bool, *, group: str | None = None, mac: str | None = None,
            ip: str | None = None) -> dict[str, object]:
    """The decision for `name` asked by a device (`mac`/`ip`) or a `group` at `now`, and every
    reason, as a JSON-ready dict: {"domain", "group", "action", "category", "target", "reasons"}."""
    name = name.strip().rstrip(".").lower()
    why: list[str] = []
    if group is None:
        group, reason = policy.group_for(mac, ip)
        why.append(reason)
    elif group not in policy.groups:
        raise PolicyError("group", f"unknown group {group!r}; groups: {', '.join(policy.groups)}")
    act = active(policy, group, state, now, trusted)
    d = decide(policy, act, name, categories)
    listed = sorted(set(categories(name)))
    return {"domain": name, "group": d.group, "action": d.action, "category": d.category,
            "target": d.target, "categories": listed, "at": _when(policy, now),
            "reasons": [*why, *d.reasons]}


# -- building a policy from its configuration --------------------------------------------------

def parse_days(text: str) -> frozenset[int]:
    """`mon-fri`, `mon,wed,fri`, `sat-sun`, `daily`."""
    text = text.strip().lower()
    if text in ("daily", "*", "all"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, _, b = part.partition("-")
            if a not in DAYS or b not in DAYS:
                raise ValueError(f"{part!r}: days are {', '.join(DAYS)}")
            i, j = DAYS.index(a), DAYS.index(b)
            days |= set(range(i, j + 1)) if i <= j else set(range(i, 7)) | set(range(0, j + 1))
        elif part in DAYS:
            days.add(DAYS.index(part))
        else:
            raise ValueError(f"{part!r}: days are {', '.join(DAYS)} (e.g. mon-fri)")
    return frozenset(days)


def parse_hhmm(text: str) -> time:
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a time of day HH:MM")
    return time(int(m.group(1)), int(m.group(2)))


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a time zone (e.g. Europe/Paris)") from None


def domains(items: Iterable[str]) -> frozenset[str]:
    return frozenset(d.strip().rstrip(".").lower() for d in items if d.strip())


# The groups a school gets without configuring any: students (and guests) with SafeSearch,
# YouTube moderate and the four categories CIPA-minded schools block first; teachers and
# displays with the harmful ones; staff with malware and phishing only.
CORE = frozenset({"adult", "gambling", "malware", "phishing"})
DEFAULT_GROUPS: dict[str, Group] = {
    "students": Group("students", CORE | {"mixed_adult"}, safesearch=True, youtube="moderate"),
    "teachers": Group("teachers", frozenset({"adult", "malware", "phishing"}), safesearch=True),
    "staff": Group("staff", frozenset({"malware", "phishing"})),
    "guests": Group("guests", CORE | {"mixed_adult"}, safesearch=True, youtube="moderate"),
    "displays": Group("displays", frozenset({"adult", "malware", "phishing"}), safesearch=True,
                      youtube="strict"),
}


def from_section(section: FilterSection, version: int = 1) -> Policy:
    """The policy of a validated `[filter]` section: the built-in groups, each overlaid with the
    keys its `[[filter.groups]]` table sets, then the school's own groups (based on students)."""
    groups = dict(DEFAULT_GROUPS)
    for table in section.groups:
        base = groups.get(table.name, DEFAULT_GROUPS["students"])
        groups[table.name] = Group(
            name=table.name,
            categories=frozenset(table.categories) if table.categories is not None else base.categories,
            allow=domains(table.allow) or base.allow,
            block=domains(table.block) or base.block,
            safesearch=base.safesearch if table.safesearch is None else table.safesearch,
            youtube=base.youtube if table.youtube is None else table.youtube,
            canaries=base.canaries if table.canaries is None else table.canaries,
            filtering=base.filtering if table.filtering is None else table.filtering,
            macs=frozenset(normalize_mac(m) for m in table.macs),
            ranges=tuple(ipaddress.ip_network(r, strict=False) for r in table.ranges),
        )
    schedules = tuple(
        Schedule(s.group, frozenset(s.categories), parse_days(s.days), parse_hhmm(s.start),
                 parse_hhmm(s.end))
        for s in section.schedules)
    return Policy(groups, schedules, section.timezone, section.default_group,
                  domains(section.exam_allow), version, zone(section.timezone))
