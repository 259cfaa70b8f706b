"""Provisioning commands. On the console: `appliance enrollment-token`, `appliance revoke-device`.
On a Pi: `appliance enroll`, `appliance firstboot` (the image's first-boot unit runs
`appliance firstboot --boot-dir /boot/firmware`)."""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path
from typing import Any

import click

from appliance.command import Output, json_option, pass_config
from appliance.config import Config, ConfigError

# `appliance enroll` and `firstboot` exit with this when the console could not be reached, so a
# unit or a script can tell "try again later" from "fix something" (sysexits EX_TEMPFAIL).
EXIT_TRY_LATER = 75


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


@click.command("enrollment-token")
@click.option("--device", "device_id", required=True,
              help="The appliance id the token enrolls (<site>-<building> of its firstboot.toml).")
@click.option("--ttl", default="24h", show_default=True,
              help="How long the token is valid: 90m, 24h, 7d (at most 30d).")
@json_option
@pass_config
def enrollment_token(cfg: Config, out: Output, device_id: str, ttl: str) -> None:
    """On the console: create a one-time enrollment token for one Pi (shown only now).

    Creates the fleet CA in <state_dir>/pki on first use and prints its fingerprint, which goes
    into the Pi's firstboot.toml (ca_fingerprint) or `appliance enroll --ca-fingerprint`."""
    from appliance.fleet.pki import CertificateAuthority
    from appliance.provision import enrollment, tokens

    try:
        ttl_s = tokens.parse_ttl(ttl)
        tokens.check_device_id(device_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    ca = CertificateAuthority.open(enrollment.ca_directory(cfg))
    if not ca.crl_file.exists():
        ca.crl()  # a broker configured with crlfile needs the file from the start
    issued = tokens.issue(enrollment.open_console_db(cfg), device_id, ttl_s, time.time())
    data = {"device_id": device_id, "token": issued.token, "token_id": issued.token_id,
            "expires_at": _iso(issued.expires_at), "ca_fingerprint": ca.fingerprint}
    out.emit(data, lambda d: (
        f"enrollment token for {d['device_id']} (one use, until {d['expires_at']}):\n"
        f"  {d['token']}\n"
        f"CA fingerprint (SHA-256): {d['ca_fingerprint']}\n"
        "It is shown only now; the console keeps only its hash."))


@click.command("revoke-device")
@click.argument("device_id")
@json_option
@pass_config
def revoke_device(cfg: Config, out: Output, device_id: str) -> None:
    """On the console: revoke a Pi's certificates and unused enrollment tokens; rewrite the CRL.

    The broker reads the CRL when it starts: restart it for the revocation to take effect."""
    from appliance.fleet.pki import CertificateAuthority, NotIssuedError
    from appliance.provision import enrollment, tokens

    now = time.time()
    db = enrollment.open_console_db(cfg)
    withdrawn = tokens.withdraw(db, device_id, now)
    ca_dir = enrollment.ca_directory(cfg)
    serials: list[int] = []
    known = withdrawn > 0
    if CertificateAuthority.exists(ca_dir):
        ca = CertificateAuthority.open(ca_dir)
        try:
            serials = ca.revoke(device_id)
            known = True
        except NotIssuedError:
            pass
    if not known:
        raise click.ClickException(f"no certificate or token was ever issued for {device_id}")
    hexes = [format(s, "x") for s in serials]
    tokens.audit(db, tokens.REVOKED, now, device_id=device_id,
                 detail=f"certificates {', '.join(hexes) or 'none new'}; "
                        f"{withdrawn} unused token(s) withdrawn")
    data = {"device_id": device_id, "revoked_serials": hexes, "tokens_withdrawn": withdrawn,
            "crl_file": str(ca_dir / "crl.pem")}
    out.emit(data, lambda d: (
        f"{d['device_id']}: {len(d['revoked_serials'])} certificate(s) revoked, "
        f"{d['tokens_withdrawn']} unused token(s) withdrawn; CRL {d['crl_file']}\n"
        "Restart the broker so it reads the new CRL."))


def _enrolled_data(enrolled: Any) -> dict[str, str]:
    return {"device_id": enrolled.device_id, "serial": enrolled.serial,
            "not_after": enrolled.not_after, "ca_fingerprint": enrolled.ca_fingerprint,
            "cert_file": str(enrolled.cert_file), "key_file": str(enrolled.key_file),
            "ca_file": str(enrolled.ca_file)}


@click.command("enroll")
@click.option("--console", "console_url", required=True,
              help="The console's URL, https://HOST[:PORT] (http only for a loopback console).")
@click.option("--token", required=True,
              help="The one-time enrollment token ('-' reads it from standard input).")
@click.option("--ca-fingerprint", default=None,
              help="SHA-256 fingerprint of the fleet CA to accept (pins the first contact).")
@json_option
@pass_config
def enroll(cfg: Config, out: Output, console_url: str, token: str,
           ca_fingerprint: str | None) -> None:
    """On a Pi: get its MQTT client certificate from the console with a one-time token.

    Makes the key on the Pi (it never leaves it) and writes key, certificate and CA where
    [mqtt] key_file, cert_file and ca_file point. Exit status 75: the console could not be
    reached, try again later; 1: refused or not trustworthy."""
    from appliance.provision import client

    if token == "-":  # noqa: S105 - the stdin marker, not a password
        token = sys.stdin.readline().strip()
    try:
        enrolled = client.enroll(cfg, console_url, token, ca_fingerprint)
    except client.EnrollError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_TRY_LATER if isinstance(exc, client.ConsoleUnreachable) else 1)
    out.emit(_enrolled_data(enrolled), lambda d: (
        f"enrolled {d['device_id']}: certificate {d['serial']} until {d['not_after']}, "
        f"written to {d['cert_file']}"))


@click.command("firstboot")
@click.option("--boot-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where firstboot.toml is (the boot partition, /boot/firmware).")
@click.option("--etc", "etc_dir", default=Path("/etc/appliance"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Where to write appliance.toml, tls/ and secrets/.")
@click.option("--root", default=Path("/"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Root of the system whose SSH host keys and machine-id are made.")
@click.option("--console-device", default=Path("/dev/console"), show_default=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where errors are also shown (the screen), if it can be written.")
@json_option
def firstboot(out: Output, boot_dir: Path, etc_dir: Path, root: Path,
              console_device: Path) -> None:
    """On a Pi's first boot: turn firstboot.toml into its configuration and enroll it.

    A bad key changes nothing: the error names it, on stderr, in firstboot-error.txt beside
    the file and on the console screen. firstboot.toml (it holds secrets) is deleted only once
    everything succeeded; exit status 75 means the console could not be reached (run again)."""
    from appliance.provision import firstboot as fb

    source = boot_dir / fb.FILE_NAME
    if not source.exists():
        out.emit({"done": False, "reason": f"no {source}"},
                 lambda d: f"{source}: not there, nothing to do")
        return
    try:
        settings = fb.parse(source.read_text(encoding="utf-8"), source)
    except (ConfigError, UnicodeDecodeError) as exc:
        message = str(exc) if isinstance(exc, ConfigError) else f"{source}: is not UTF-8 text"
        fb.report_error(message, boot_dir, console_device)
        click.echo(f"Error: {message}", err=True)
        sys.exit(2)
    try:
        outcome = fb.apply(settings, boot_dir, etc_dir, root)
    except ConfigError as exc:  # the image's own sections do not fit: nothing written yet
        fb.report_error(str(exc), boot_dir, console_device)
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    if outcome.error is not None:
        fb.report_error(outcome.error, boot_dir, console_device)
        click.echo(f"Error: {outcome.error}", err=True)
        sys.exit(outcome.exit_code)
    data = {"done": True, "device_id": outcome.device_id, "config": str(outcome.config),
            "ssh_host_keys": outcome.ssh_host_keys, "machine_id": outcome.machine_id,
            "enrolled": _enrolled_data(outcome.enrolled) if outcome.enrolled else None}
    out.emit(data, lambda d: (
        f"first boot done for {d['device_id']}: {d['config']} written, SSH host keys "
        f"{d['ssh_host_keys']}, machine-id {d['machine_id']}, "
        + ("enrolled" if d["enrolled"] else "not enrolled (no enrollment_token)")))


COMMANDS: tuple[click.Command, ...] = (enrollment_token, revoke_device, enroll, firstboot)
