"""unbound's configuration, rendered by us: the validating upstream on a loopback port, and the
baseline policy the network helper switches the DNS redirect to when the filter is down.

The baseline is what unbound alone can enforce for everyone: the bypass canaries, SafeSearch and
YouTube moderate as CNAMEs (unbound resolves the targets), a core adult list as
`always_nxdomain` zones, and while an exam runs, nothing but the exam allowlist (a root
`always_nxdomain` zone with `transparent` holes). So filtering degrades, never fails open.
Pure text building; `appliance filter unbound-config` writes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from appliance.filter.policy import (
    CANARIES_NODATA,
    CANARIES_NXDOMAIN,
    GOOGLE_SAFE,
    SAFESEARCH,
    YOUTUBE_HOSTS,
    YOUTUBE_TARGET,
)

# Google's search front ends (google.com/supported_domains): unbound cannot match a pattern, so
# the baseline lists them.
GOOGLE_TLDS = (  # noqa: SIM905 - 190 words read better as text
    "com ad ae com.af com.ag al am co.ao com.ar as at com.au az ba com.bd be bf bg com.bh bi bj "
    "com.bn com.bo com.br bs bt co.bw by com.bz ca cd cf cg ch ci co.ck cl cm cn com.co co.cr "
    "com.cu cv com.cy cz de dj dk dm com.do dz com.ec ee com.eg es com.et fi com.fj fm fr ga ge "
    "gg com.gh com.gi gl gm gr com.gt gy com.hk hn hr ht hu co.id ie co.il im co.in iq is it je "
    "com.jm jo co.jp co.ke com.kh ki kg co.kr com.kw kz la com.lb li lk co.ls lt lu lv com.ly "
    "co.ma md me mg mk ml com.mm mn com.mt mu mv mw com.mx com.my co.mz com.na com.ng com.ni ne "
    "nl no com.np nr nu co.nz com.om com.pa com.pe com.pg com.ph com.pk pl pn com.pr ps pt "
    "com.py com.qa ro ru rw com.sa com.sb sc se com.sg sh si sk com.sl sn so sm sr st com.sv td "
    "tg co.th com.tj tl tm tn to com.tr tt com.tw co.tz com.ua co.ug co.uk com.uy co.uz com.vc "
    "co.ve co.vi com.vn vu ws rs co.za co.zm co.zw cat"
).split()
ROOT_ANCHOR = Path("/usr/share/dns/root.key")
BASELINE_MAX = 100_000  # core adult domains; unbound holds each as a zone (~0.5 KB)


@dataclass(frozen=True)
class UnboundOptions:
    interfaces: tuple[str, ...] = ("127.0.0.1",)
    port: int = 5335
    directory: Path = Path("/var/lib/appliance/unbound")
    # Debian's dns-root-data: the root's DS records, kept current by the package (so unbound
    # needs no writable anchor file). None: no DNSSEC validation.
    trust_anchor: Path | None = ROOT_ANCHOR
    forward: tuple[str, ...] = ()  # host@port of resolvers to forward to (else: recursion)
    insecure: tuple[str, ...] = ()  # zones not validated (a test's local zone)
    stubs: tuple[tuple[str, str], ...] = ()  # (zone, host@port) of authoritative servers
    control_socket: Path | None = None
    access: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


def _q(name: str) -> str:
    return f'"{name.rstrip(".")}."'


def render(opts: UnboundOptions, extra: Iterable[str] = ()) -> str:
    """An unbound.conf: one server on `interfaces`@`port`, small caches for a Pi, validating with
    the trust anchor unless it is None, logging to stderr (the journal)."""
    lines = [
        "# Rendered by `appliance filter unbound-config`; do not edit (it is written again).",
        "server:",
        *(f"    interface: {i}@{opts.port}" for i in opts.interfaces),
        f"    port: {opts.port}",
        "    do-daemonize: no",
        "    use-syslog: no",
        '    logfile: ""',
        '    chroot: ""',
        '    username: ""',
        '    pidfile: ""',
        f'    directory: "{opts.directory}"',
        "    num-threads: 1",
        "    msg-cache-size: 8m",
        "    rrset-cache-size: 16m",
        "    prefetch: yes",
        "    qname-minimisation: yes",
        "    hide-identity: yes",
        "    hide-version: yes",
        "    do-ip6: yes",
        "    so-reuseport: yes",
        *(f"    access-control: {a} allow" for a in opts.access),
    ]
    if opts.trust_anchor is not None:
        lines += ['    module-config: "validator iterator"',
                  f'    trust-anchor-file: "{opts.trust_anchor}"']
    else:
        lines.append('    module-config: "iterator"')
    if opts.stubs or opts.forward:
        # Local test zones and forwarders live on private addresses.
        lines += ["    do-not-query-localhost: no"]
    lines += [f"    domain-insecure: {_q(z)}" for z in opts.insecure]
    lines += [f"    private-domain: {_q(z)}" for z, _ in opts.stubs]
    lines += [f"    local-zone: {_q(z)} transparent" for z, _ in opts.stubs]
    lines += list(extra)
    for zone, addr in opts.stubs:
        lines += ["stub-zone:", f"    name: {_q(zone)}", f"    stub-addr: {addr}"]
    if opts.forward:
        lines += ["forward-zone:", '    name: "."', *(f"    forward-addr: {a}" for a in opts.forward)]
    if opts.control_socket is not None:
        lines += ["remote-control:", "    control-enable: yes",
                  f'    control-interface: "{opts.control_socket}"', "    control-use-cert: no"]
    return "\n".join(lines) + "\n"


def baseline_lines(adult: Iterable[str], exam_allow: Iterable[str] | None = None,
                   youtube: str = "moderate") -> list[str]:
    """The baseline policy as `server:` lines: canaries, SafeSearch, the core adult list, and
    (with `exam_allow` not None) allowlist-only."""
    out = [f"    local-zone: {_q(n)} always_nxdomain" for n in CANARIES_NXDOMAIN]
    out += [f"    local-zone: {_q(n)} always_nodata" for n in CANARIES_NODATA]
    rewrites = {f"www.google.{t}": GOOGLE_SAFE for t in GOOGLE_TLDS}
    rewrites |= {f"google.{t}": GOOGLE_SAFE for t in GOOGLE_TLDS}
    rewrites |= dict(SAFESEARCH)
    rewrites |= {h: YOUTUBE_TARGET[youtube] for h in YOUTUBE_HOSTS} if youtube != "off" else {}
    for name, target in sorted(rewrites.items()):
        out += [f"    local-zone: {_q(name)} redirect",
                f"    local-data: \"{name}. 300 IN CNAME {target}.\""]
    seen: set[str] = set()
    for name in adult:
        if len(seen) >= BASELINE_MAX:
            break
        if name not in seen and name not in rewrites:
            seen.add(name)
            out.append(f"    local-zone: {_q(name)} always_nxdomain")
    if exam_allow is not None:
        out.append('    local-zone: "." always_nxdomain')
        out += [f"    local-zone: {_q(n)} transparent" for n in sorted(set(exam_allow))]
    return out
