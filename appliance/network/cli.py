"""`appliance network ...`: render, check and apply the classroom network; sessions; the helper
and the captive responder services."""

from __future__ import annotations

import dataclasses
import stat
import time
from pathlib import Path
from typing import Any

import click

from appliance.command import Output, json_option, pass_config, stop_on_signal
from appliance.config import Config


def _is_current(path: Path, text: str, mode: int) -> bool:
    """Whether `path` already holds exactly this text with this mode (rewriting it would change
    nothing)."""
    try:
        return stat.S_IMODE(path.stat().st_mode) == mode and path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False


@click.group("network")
def network() -> None:
    """The classroom network: hotspot, DHCP/RA, firewall, captive portal and sessions."""


@network.command("render")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the files here instead of [network] render_dir.")
@json_option
@pass_config
def render_cmd(cfg: Config, out: Output, directory: Path | None) -> None:
    """Write hostapd.conf, dnsmasq.conf, the nftables ruleset and the local answers (nothing is
    loaded or restarted). Only files whose text or mode differ are rewritten; `changed` lists
    them (provisioning reports a run as changed by it)."""
    from appliance.network import apply, render
    from appliance.network.helperd import write_atomic

    files = render.render_all(cfg, apply.read_passphrase(cfg), online=True)
    target = directory or render.render_dir(cfg)
    changed = [f.name for f in files if not _is_current(target / f.name, f.text, f.mode)]
    for f in files:
        if f.name in changed:
            write_atomic(target / f.name, f.text, f.mode)
    if directory is None:
        # The units start the daemons unprivileged: hostapd must read its file (an image build
        # renders, the Pi's first start of hostapd comes before any apply). Rendering needs
        # no users; `apply`, which starts hostapd, insists on its user.
        apply.give_to_daemons(cfg, target, need_users=False)
    out.emit({"dir": str(target), "files": [f.name for f in files], "changed": changed},
             lambda d: "\n".join(f"{d['dir']}/{name}" + (" (written)" if name in d["changed"] else "")
                                 for name in d["files"]))


@network.command("check")
@json_option
@pass_config
def check_cmd(cfg: Config, out: Output) -> None:
    """Check everything apply would use: secrets, terms, interfaces, `nft -c`, `dnsmasq --test`."""
    from appliance.network import apply

    files = apply.prepare(cfg)
    out.emit({"ok": True, "files": [f.name for f in files]},
             lambda d: f"network: ok ({', '.join(d['files'])})")


@network.command("apply")
@json_option
@pass_config
def apply_cmd(cfg: Config, out: Output) -> None:
    """Check, swap the files in atomically, reload the ruleset (keeping live sessions) and
    restart what changed; roll back if any step fails."""
    from appliance.network import apply

    done = apply.apply(cfg)
    out.emit(dataclasses.asdict(done), lambda d: (
        f"network applied: wrote {', '.join(d['written']) or 'nothing new'}; "
        f"restarted {', '.join(d['restarted']) or 'nothing'}; kept {d['kept_elements']} set members"))


@network.command("up")
@json_option
@pass_config
def up_cmd(cfg: Config, out: Output) -> None:
    """At boot, before dnsmasq and hostapd: render, set the classroom addresses and load the
    ruleset, restarting nothing (the helper's unit runs it; see docs/network.md)."""
    from appliance.network import apply

    done = apply.up(cfg)
    out.emit(dataclasses.asdict(done), lambda d: (
        f"network up: wrote {', '.join(d['written']) or 'nothing new'}; "
        f"kept {d['kept_elements']} set members"))


@network.command("show")
@json_option
@pass_config
def show_cmd(cfg: Config, out: Output) -> None:
    """Print the effective state: mode, addresses, uplink, ruleset, dnsmasq, leases, sessions."""
    from appliance.network import status

    data = status.collect(cfg)
    out.emit(data, status.text)


@network.group("sessions")
def sessions_group() -> None:
    """Captive-portal sessions (through the helper)."""


@sessions_group.command("list")
@json_option
@pass_config
def sessions_list(cfg: Config, out: Output) -> None:
    """List the accepted clients and their remaining time."""
    found = _call(cfg, "session-list")
    out.emit(found, lambda rows: "\n".join(
        f"{r['mac']}  {', '.join(r['addresses'])}  {r['seconds_remaining']} s left" for r in rows)
        or "no sessions")


@sessions_group.command("revoke")
@click.argument("mac")
@json_option
@pass_config
def sessions_revoke(cfg: Config, out: Output, mac: str) -> None:
    """End the session of MAC at once (its connections are cut)."""
    out.emit(_call(cfg, "session-revoke", mac=mac.lower()), lambda d: f"revoked {d['mac']}")


@network.command("dns-fallback")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.option("--wait", "wait_s", type=click.FloatRange(0, 600), default=0.0, show_default=True,
              help="Seconds to wait for the helper when it is not up yet (the filter's unit at boot).")
@json_option
@pass_config
def dns_fallback(cfg: Config, out: Output, state: str, wait_s: float) -> None:
    """Point the classroom's DNS at the baseline unbound (on) or the filter (off)."""
    out.emit(_call(cfg, "dns-fallback", wait_s=wait_s, state=state),
             lambda d: f"classroom DNS -> {'baseline unbound' if d['fallback'] else 'filter'} "
                       f"(port {d['port']})")


def _call(cfg: Config, verb: str, *, wait_s: float = 0.0, **args: str) -> Any:
    """The helper's answer; `wait_s`: keep trying that long while its socket is unreachable."""
    from appliance.network.client import HelperError, HelperUnreachable, call

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return call(cfg.network.helper.socket, verb, args)
        except HelperUnreachable as exc:
            if time.monotonic() >= deadline:
                raise click.ClickException(str(exc)) from None
            time.sleep(0.5)
        except HelperError as exc:
            raise click.ClickException(str(exc)) from None


@network.command("helper")
@pass_config
def helper_cmd(cfg: Config) -> None:
    """Run the privileged helper on [network.helper] socket (systemd runs it; CAP_NET_ADMIN)."""
    from appliance.network import helperd

    helperd.serve(cfg, stop_on_signal())


@network.command("captive")
@pass_config
def captive_cmd(cfg: Config) -> None:
    """Run the captive responder on [network] captive_port (systemd runs it)."""
    from appliance.network import captive

    captive.serve(cfg, stop_on_signal())


COMMANDS: tuple[click.Command, ...] = (network,)
