"""The portal's block page and its "why is this site blocked?" lookup.

With `[filter] block_page` set to the portal's addresses, the filter answers a blocked name's
A/AAAA with them, so a plain-HTTP visit to `http://blocked.example/anything` reaches the portal
with `Host: blocked.example`. Every request whose Host is not the portal's own (its name, an
address, `localhost`) is asked of the policy for the asking device (`service.explain`): a
blocked name gets a page saying which category and what to do next (403, never cached), built
from the Host header the device sent itself, so no student data is ever put in a URL. A name
that is not blocked (any more: an override, the end of a lesson) continues to the portal's own
routes, so the block page never hides another name the portal answers to.

For HTTPS no page can be shown without a certificate the device trusts: `/blocked/` is the
lookup by name ("why is this site blocked?"), for the students' group (`[filter]
default_group`), showing the category only, not the reasons (which name groups and MACs).
"""

from __future__ import annotations

import ipaddress
import subprocess

from flask import Blueprint, Response, current_app, render_template, request

from appliance.config import Config
from appliance.filter import service
from appliance.i18n import N_
from appliance.network import leases

bp = Blueprint("blocked", __name__, url_prefix="/blocked")

# What a student reads for a category (others are shown by their list's name).
CATEGORY_LABELS = {
    "adult": N_("adult content"),
    "mixed_adult": N_("adult content"),
    "gambling": N_("gambling"),
    "malware": N_("malware"),
    "phishing": N_("phishing (sites that steal passwords)"),
    "social_networks": N_("social networks"),
    "games": N_("games"),
    "doh": N_("encrypted DNS services"),
    "vpn": N_("VPN services"),
    "exam": N_("exam mode: only the exam's sites are open"),
    "canary": N_("bypassing the classroom's filter"),
    "blocklist": N_("the school's own blocklist"),
}
BLOCKED_ACTIONS = ("block", "nxdomain")
MAX_NAME = 253


def _cfg() -> Config:
    cfg: Config = current_app.config["APPLIANCE_CONFIG"]
    return cfg


def clean_name(raw: str) -> str | None:
    """A host name as a student might type it (a URL, upper case, a trailing dot), or None."""
    text = raw.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    if text.startswith("["):
        return None  # an IPv6 literal: not a name
    text = text.split(":", 1)[0].rstrip(".")
    if not text or len(text) > MAX_NAME or "." not in text:
        return None
    if not all(part and len(part) <= 63 and all(c.isalnum() or c in "-_" for c in part)
               for part in text.split(".")):
        return None
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return text
    return None  # an address: not a name


def is_own_host(host: str, portal_name: str) -> bool:
    """Whether a request's Host is the portal itself (pure)."""
    name = host.strip().lower()
    if name.startswith("["):
        return True  # an IPv6 address literal
    name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    if name in ("", "localhost", portal_name.lower()):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def client_ip() -> str:
    """The asking device's address as the filter knows it (a dual-stack listener's
    `::ffff:a.b.c.d` as IPv4)."""
    raw = str(request.remote_addr)
    return leases.canonical_ip(raw) or raw


def _label(category: str | None) -> str | None:
    return CATEGORY_LABELS.get(category or "", category)


@bp.before_app_request
def block_page() -> Response | None:
    """The block page for a request to a blocked name (see the module docstring)."""
    cfg = _cfg()
    if not cfg.filter.block_page or is_own_host(request.host, cfg.network.portal_name):
        return None
    name = clean_name(request.host)
    if name is None:
        return None
    try:
        decision = service.explain(cfg, name, device=client_ip())
    except (OSError, subprocess.SubprocessError) as exc:
        # The neighbour table could not be read from here: the students' policy, the default.
        current_app.logger.warning("block page: device lookup failed: %s", exc)
        decision = service.explain(cfg, name, group=cfg.filter.default_group)
    if decision["action"] not in BLOCKED_ACTIONS:
        return None
    page = render_template("blocked/page.html", name=name,
                           category=_label(str(decision["category"] or "")),
                           exam=decision["category"] == "exam",
                           portal=f"http://{cfg.network.portal_name}/blocked/")
    return Response(page, status=403, headers={"Cache-Control": "no-store"})


@bp.get("/")
def why() -> Response:
    """"Why is this site blocked?": `?name=` looked up for the students' group."""
    cfg = _cfg()
    raw = request.args.get("name", "")
    name = clean_name(raw) if raw else None
    result = None
    if name is not None:
        decision = service.explain(cfg, name, group=cfg.filter.default_group)
        blocked = decision["action"] in BLOCKED_ACTIONS
        result = {"name": name, "blocked": blocked,
                  "category": _label(str(decision["category"] or "")) if blocked else None}
    page = render_template("blocked/why.html", asked=raw[:MAX_NAME], invalid=bool(raw) and name is None,
                           result=result)
    return Response(page, headers={"Cache-Control": "no-store"})
