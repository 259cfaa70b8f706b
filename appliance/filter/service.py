"""The filter's long-running process and the one-shot operations the CLI (and later the console)
call, each a function of (Config, ...): `serve`, `start_exam`, `stop_exam`, `add_override`,
`explain`, `update_lists`, `show_lists`, `unbound_config`.

Paths, under `[appliance] state_dir`: `filter/lists.bin` (the compiled lists),
`filter/doh-addresses` and `filter/walled-addresses` (for the network helper's sets,
`appliance.network.dnssets`), `appliance.db` (state).

With `[filter] enabled` the filter is wired to the classroom network: devices are identified by
the network's lease and neighbour reader on `[network] interface`, and the network's local
answers are honoured. Without it (a filter tried alone) every interface's neighbours count and
there are no local answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from appliance import config as config_module
from appliance.clock import ClockTrust, default_probe
from appliance.config import Config, ConfigError
from appliance.filter import lists, policy, unbound
from appliance.filter.identity import (
    Identity,
    LeaseIdentity,
    LocalAnswers,
    NetworkAnswers,
    NoLocalAnswers,
)
from appliance.filter.resolver import Resolver
from appliance.filter.server import Server, sd_notify
from appliance.filter.state import Store
from appliance.network import dnssets, leases

log = logging.getLogger(__name__)

STATS_EVERY_S = 10.0


def filter_dir(cfg: Config) -> Path:
    return cfg.appliance.state_dir / "filter"


def lists_path(cfg: Config) -> Path:
    return filter_dir(cfg) / "lists.bin"


def doh_path(cfg: Config) -> Path:
    """Addresses of the DoH resolvers clients asked for, one per line (rewritten atomically):
    what the network helper loads into the set whose port 443 it rejects."""
    return dnssets.path(cfg, dnssets.DOH)


def walled_path(cfg: Config) -> Path:
    """Addresses the walled-garden names resolved to, for the helper's walled sets."""
    return dnssets.path(cfg, dnssets.WALLED)


def identity_for(cfg: Config, on_change: Callable[[str], None] | None = None) -> LeaseIdentity:
    """The network's lease and neighbour reader for this configuration (see the docstring)."""
    wired = cfg.filter.enabled
    return LeaseIdentity(interface=cfg.network.interface if wired else None,
                         lease_file=leases.lease_file(cfg) if wired else None, on_change=on_change)


def local_answers_for(cfg: Config) -> LocalAnswers:
    return NetworkAnswers(cfg.network) if cfg.filter.enabled else NoLocalAnswers()


def policy_hash(cfg: Config) -> str:
    data = json.dumps(config_module.to_table(cfg.filter), sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def load_policy(cfg: Config, store: Store) -> policy.Policy:
    off = sorted({g.name for g in cfg.filter.groups if g.filtering is False})
    version = store.record_policy(policy_hash(cfg), off)
    return policy.from_section(cfg.filter, version)


class _StateCache:
    """`Store.load()`, only when the store's version moved (one small query a second)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.version = -1
        self.state = policy.State()

    def __call__(self) -> policy.State:
        v = self.store.version()
        if v != self.version:
            self.state, self.version = self.store.load(), v
        return self.state


def build_resolver(cfg: Config, store: Store, *, identity: Identity | None = None,
                   local: LocalAnswers | None = None, clock: Callable[[], float] = time.time,
                   trusted: Callable[[], bool] | None = None) -> tuple[Resolver, lists.Lists]:
    working = lists.Lists(lists_path(cfg))
    if trusted is None:
        trust = ClockTrust(cfg.appliance.state_dir, now=clock,
                           sync_probe=default_probe(cfg.agent.clock_source))
        trusted = trust.trusted
    resolver = Resolver(
        load_policy(cfg, store), matcher=working.current, state=_StateCache(store),
        identity=identity, local=local or local_answers_for(cfg),
        clock=clock, trusted=trusted, cache_size=cfg.filter.cache_size,
        block_page=cfg.filter.block_page,
        walled=cfg.network.walled_garden if cfg.filter.enabled else ())
    if identity is None:
        # A lease that moved an address to another device: its group is asked again at once.
        resolver.identity = identity_for(cfg, on_change=resolver.forget_client)
    return resolver, working


class Stats:
    """Moves the resolver's counters into SQLite every 10 s, with the attestation figures."""

    def __init__(self, resolver: Resolver, store: Store, working: lists.Lists) -> None:
        self.resolver, self.store, self.working = resolver, store, working
        self.last = time.monotonic()

    def __call__(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.last < STATS_EVERY_S:
            return
        self.last = time.monotonic()
        r = self.resolver
        counts, r.stats = r.stats, type(r.stats)()
        names, r.blocked_names = r.blocked_names, type(r.blocked_names)()
        merged: dict[tuple[str, str], tuple[int, int]] = {}
        for (group, cat), n in counts.items():
            merged[(group, cat)] = (n, 0) if cat == "" else (0, n)
        self.store.add_stats(merged)
        top = json.loads(str(self.store.value("top_blocked") or "{}"))
        for name, n in names.items():
            top[name] = top.get(name, 0) + n
        top = dict(sorted(top.items(), key=lambda kv: -kv[1])[:20])
        m = self.working.current()
        for key, value in (("top_blocked", json.dumps(top)), ("active_at", time.time()),
                           ("lists_built_at", m.header.get("built_at")),
                           ("policy_version", r.policy.version), ("cache_hits", r.hits),
                           ("cache_misses", r.misses)):
            self.store.set_value(key, value)


def baseline_path(cfg: Config) -> Path:
    return cfg.appliance.state_dir / "unbound" / "baseline.conf"


class BaselineFollower:
    """Keeps the baseline unbound's exam allowlist current: when the exams change, renders its
    config again (if it runs: its file exists) and has it reloaded through its control socket."""

    def __init__(self, cfg: Config, store: Store,
                 render: Callable[[], str] | None = None) -> None:
        self.cfg, self.store = cfg, store
        self.render = render or (lambda: unbound_config(cfg, baseline=True))
        self.exams: tuple[object, ...] | None = None

    def __call__(self) -> None:
        now = time.time()
        exams = tuple((e.scope, e.until) for e in self.store.load().exams if e.until > now)
        if exams == self.exams:
            return
        first = self.exams is None
        self.exams = exams
        path = baseline_path(self.cfg)
        if first or not path.exists():
            return
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.render())
        tmp.replace(path)
        result = subprocess.run(["unbound-control", "-c", str(path), "reload"], capture_output=True,
                                text=True, timeout=30, check=False)
        if result.returncode:
            log.warning("baseline unbound not reloaded: %s", (result.stderr or result.stdout).strip())


def serve(cfg: Config, stop: threading.Event, *, identity: Identity | None = None,
          clock: Callable[[], float] = time.time, ready: Callable[[Server], None] | None = None) -> None:
    """Run the filter until `stop` is set. SIGHUP reads the configuration again; a file that does
    not validate is logged (naming file and key) and the running policy stays. With `[filter]
    workers` > 1 (and called from the CLI, before any thread exists) it forks that many worker
    processes sharing the port (SO_REUSEPORT: the kernel keeps each client on one worker)."""
    if cfg.filter.workers > 1 and identity is None and ready is None:
        serve_workers(cfg, stop)
        return
    serve_one(cfg, stop, identity=identity, clock=clock, ready=ready)


def serve_workers(cfg: Config, stop: threading.Event) -> None:
    """The parent of `workers` processes: tells systemd READY and WATCHDOG for them (children
    never notify), passes SIGHUP and SIGTERM on, and exits with status 1 if one dies (systemd
    then restarts the whole filter)."""
    children: list[int] = []
    for _ in range(cfg.filter.workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.environ.pop("NOTIFY_SOCKET", None)
            code = 0
            try:
                serve_one(cfg, stop)
            except BaseException:
                log.exception("filter worker failed")
                code = 1
            os._exit(code)
        children.append(pid)

    def forward(signum: int, frame: Any) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        if signum != signal.SIGHUP:
            stop.set()

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    sd_notify("READY=1")
    failed = False
    while not stop.wait(1.0):
        for pid in children:
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done:
                log.error("filter worker %d ended: stopping the others (systemd restarts us)", pid)
                failed = True
        if failed:
            break
        sd_notify("WATCHDOG=1")
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    if failed:
        raise SystemExit(1)


def serve_one(cfg: Config, stop: threading.Event, *, identity: Identity | None = None,
              clock: Callable[[], float] = time.time,
              ready: Callable[[Server], None] | None = None) -> None:
    store = Store.open(cfg.database_path)
    resolver, working = build_resolver(cfg, store, identity=identity, clock=clock)
    stats = Stats(resolver, store, working)
    follower = BaselineFollower(cfg, store)

    def tick() -> None:
        stats()
        follower()

    refused: list[bool] = []

    def publish_walled(path: Path, addresses: dict[str, float]) -> None:
        if not dnssets.publish(cfg, path, addresses) and not refused:
            refused.append(True)
            log.warning("the network helper did not load %s at once (down, or [network.helper] "
                        "dns_sets does not list this unit); it reloads it within a second", path)

    server = Server(cfg.filter, resolver, on_tick=tick, doh_file=doh_path(cfg),
                    walled_file=walled_path(cfg) if cfg.filter.enabled else None,
                    publish_walled=publish_walled)
    server.bind()
    server.start()

    def reload(signum: int, frame: Any) -> None:
        try:
            new = config_module.load(cfg.source)
            resolver.refresh(load_policy(new, store))
            log.info("policy reloaded from %s", cfg.source)
        except ConfigError as exc:
            log.error("kept the running policy: %s", exc)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, reload)
    log.info("filter serving DNS on %s port %d, upstream %s", ", ".join(cfg.filter.listen),
             server.port, ", ".join(cfg.filter.upstreams))
    sd_notify("READY=1")
    if ready:
        ready(server)
    stop.wait()
    server.stop()
    stats(force=True)


# -- one-shot operations -----------------------------------------------------------------------

def parse_at(text: str, cfg: Config, now: float) -> float:
    """`11:30` (today, in the filter's time zone) or an ISO date and time (in that zone unless it
    says its own)."""
    zone = policy.zone(cfg.filter.timezone)
    try:
        if len(text) <= 5 and ":" in text:
            hhmm = policy.parse_hhmm(text)
            local = datetime.fromtimestamp(now, zone)
            at = local.replace(hour=hhmm.hour, minute=hhmm.minute, second=0, microsecond=0)
        else:
            at = datetime.fromisoformat(text)
            if at.tzinfo is None:
                at = at.replace(tzinfo=zone)
    except ValueError:
        raise ValueError(f"{text!r}: give HH:MM or YYYY-MM-DDTHH:MM") from None
    return at.timestamp()


def parse_until(text: str, cfg: Config, now: float) -> float:
    """`parse_at`, which must be in the future."""
    ts = parse_at(text, cfg, now)
    if ts <= now:
        raise ValueError(f"{text} is in the past")
    return ts


def parse_duration(text: str) -> float:
    """`30m`, `2h`, `90s`, `45` (minutes)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    spec = text.strip().lower()
    try:
        value = (float(spec[:-1]) * units[spec[-1]] if spec and spec[-1] in units
                 else float(spec) * 60)
    except ValueError:
        raise ValueError(f"{text!r}: give a duration such as 30m or 2h") from None
    if value <= 0:
        raise ValueError("the duration must be positive")
    return value


def _group_or_all(cfg: Config, group: str | None) -> str:
    if group is None:
        return policy.EXAM_ALL
    known = policy.from_section(cfg.filter).groups
    if group not in known:
        raise ValueError(f"unknown group {group!r}; groups: {', '.join(known)}")
    return group


def start_exam(cfg: Config, group: str | None, until: str, allow: tuple[str, ...] = (),
               actor: str = "cli", now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    scope = _group_or_all(cfg, group)
    exam = Store.open(cfg.database_path).start_exam(scope, parse_until(until, cfg, now), allow,
                                                     actor=actor, now=now)
    return {"scope": exam.scope, "until": exam.until, "allow": sorted(exam.allow),
            "until_local": _local(cfg, exam.until)}


def stop_exam(cfg: Config, group: str | None, actor: str = "cli") -> dict[str, Any]:
    scope = _group_or_all(cfg, group)
    return {"scope": scope, "stopped": Store.open(cfg.database_path).stop_exam(scope, actor=actor)}


def add_override(cfg: Config, domain: str, group: str, duration: str, actor: str = "cli",
                 now: float | None = None) -> dict[str, Any]:
    scope = _group_or_all(cfg, group)
    o = Store.open(cfg.database_path).add_override(domain, scope, parse_duration(duration),
                                                   actor=actor, now=now)
    return {"domain": o.domain, "group": o.group, "until": o.until, "until_local": _local(cfg, o.until)}


def explain(cfg: Config, domain: str, *, device: str | None = None, group: str | None = None,
            at: str | None = None, identity: Identity | None = None) -> dict[str, object]:
    store = Store.open(cfg.database_path)
    pol = policy.from_section(cfg.filter)
    now = time.time()
    if at:
        now = parse_at(at, cfg, now)
    m = lists.Lists(lists_path(cfg)).current()
    mac = ip = None
    if device:
        try:
            mac = policy.normalize_mac(device) if device.count(":") == 5 or device.count("-") == 5 else None
        except ValueError:
            mac = None
        if mac is None:
            ip = device
            mac = (identity or identity_for(cfg)).lookup(device)
    trust = ClockTrust(cfg.appliance.state_dir, sync_probe=default_probe(cfg.agent.clock_source))
    out = policy.explain(pol, store.load(), domain, lambda n: m.names(m.mask(n)), now,
                         trust.trusted() or at is not None, group=group, mac=mac, ip=ip)
    out["lists_built_at"] = m.header.get("built_at")
    out["matches"] = [{"listed": s, "categories": c} for s, c in m.matches(str(out["domain"]))]
    return out


def _local(cfg: Config, ts: float) -> str:
    return datetime.fromtimestamp(ts, policy.zone(cfg.filter.timezone)).isoformat(timespec="minutes")


def sources(cfg: Config) -> list[lists.Source]:
    out: list[lists.Source] = []
    for table in cfg.filter.lists:
        if table.layout == "ut1" and table.path is not None:
            found = lists.ut1_sources(table.path, table.categories or None)
            if not found:
                raise lists.ListError(f"{table.path}: no <category>/domains files (a UT1 folder?)")
            out += found
        else:
            out.append(lists.Source(table.category,
                                    str(table.path) if table.path is not None else table.url))
    return out


def update_lists(cfg: Config) -> dict[str, Any]:
    """Read every configured list and compile them; ListError (working lists kept) on failure."""
    started = time.monotonic()
    header = lists.update(sources(cfg), lists_path(cfg))
    header["seconds"] = round(time.monotonic() - started, 2)
    return header


def show_lists(cfg: Config) -> dict[str, Any]:
    path = lists_path(cfg)
    if not path.exists():
        return {"path": str(path), "entries": 0, "categories": [], "sources": [], "built_at": None}
    header = dict(lists.Matcher.open(path).header)
    header["path"] = str(path)
    return header


def unbound_config(cfg: Config, *, baseline: bool, listen: tuple[str, ...] = (),
                   port: int | None = None, trust_anchor: Path | bool | None = True,
                   forward: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> str:
    """The upstream's unbound.conf, or (`baseline`) the fallback's: the baseline policy (with the
    running exam's allowlist), forwarding to `forward` (`host@port`; the baseline's default is
    the filter's own unbound, so both share one validated cache)."""
    folder = cfg.appliance.state_dir / "unbound"
    if trust_anchor is True:
        trust_anchor = unbound.ROOT_ANCHOR
    if baseline:
        forward = forward or (f"127.0.0.1@{cfg.filter.unbound_port}",)
        trust_anchor = None  # what it forwards to validates
    if not listen:
        listen = cfg.filter.listen if baseline else ("127.0.0.1",)
    opts = unbound.UnboundOptions(
        interfaces=listen,
        port=port or (cfg.filter.baseline_port if baseline else cfg.filter.unbound_port),
        directory=folder, trust_anchor=trust_anchor or None, forward=forward,
        access=("0.0.0.0/0", "::/0") if baseline else ("127.0.0.0/8", "::1/128"),
        control_socket=cfg.appliance.state_dir / "unbound" / (
            "baseline.sock" if baseline else "control.sock"))
    lines: list[str] = list(extra)
    if baseline:
        adult: list[str] = []
        with tempfile.TemporaryDirectory() as tmp:
            for s in sources(cfg):
                if s.category == "adult" and len(adult) < unbound.BASELINE_MAX:
                    report = lists.SourceReport(s.category, s.location)
                    names = lists.iter_domains(lists.read_lines(lists.fetch(s, Path(tmp)), s), report)
                    adult += itertools.islice(names, unbound.BASELINE_MAX - len(adult))
        state = Store.open(cfg.database_path).load()
        now = time.time()
        running = [e for e in state.exams if e.until > now]
        allow = None
        if running:
            allow = set(cfg.filter.exam_allow)
            for e in running:
                allow |= e.allow
        lines += unbound.baseline_lines(adult, allow)
    return unbound.render(opts, lines)
