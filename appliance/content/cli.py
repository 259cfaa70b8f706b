"""`appliance content ...`: add, remove, list, sync, import and verify the library's items.

Every command is a thin shell over one function of `library` or `sync`, so the console's desired
state can later run the same operations. Progress bars go to stderr; `--json` prints results.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import click
import sqlite_utils

from appliance.command import Output, json_option, pass_config
from appliance.config import Config


@click.group("content")
def group() -> None:
    """The content library: ZIM archives and OER packs (see docs/content.md)."""


def _open(cfg: Config) -> tuple[Any, sqlite_utils.Database]:
    from appliance.content import schema
    from appliance.content.store import ContentStore
    from appliance.store import migrate, open_db

    db = open_db(cfg.database_path)
    migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    return ContentStore(cfg.content.root, db, require_mount=cfg.content.require_mount), db


def _item_dict(item: Any, views: dict[str, int] | None = None) -> dict[str, Any]:
    from appliance.content.usage import shown

    data = {k: getattr(item, k) for k in ("name", "kind", "title", "language", "subject", "size",
                                          "state", "problem", "sha256", "source", "version")}
    if views is not None:
        data["views_7d"] = shown(views.get(item.name, 0))
    return data


def _add_one(store: Any, path: Path, **options: Any) -> Any:
    from appliance.content import library

    if path.is_dir():
        return library.add_pack(store, path, **{k: v for k, v in options.items() if k != "expect_sha256"})
    size = sum(p.stat().st_size for p in library.zim_parts(path))
    bar: Any
    with click.progressbar(length=size, label=f"checking and storing {path.name}",
                           file=sys.stderr) as bar:
        return library.add_zim(store, path, progress=lambda n: bar.update(n), **options)


@group.command("add")
@click.argument("source")
@click.option("--name", help="Item name (default: from the archive or folder).")
@click.option("--language", default="", help="Language code shown for browsing (e.g. en, ru).")
@click.option("--subject", default="", help="Subject shown for browsing.")
@click.option("--sha256", "expect_sha256", help="Refuse the file unless it has this SHA-256.")
@json_option
@pass_config
def add(cfg: Config, out: Output, source: str, name: str | None, language: str, subject: str,
        expect_sha256: str | None) -> None:
    """Add a ZIM archive (x.zim or split x.zimaa...), a pack folder, or queue a URL (.zim or .meta4)."""
    from appliance.content import library, sync
    from appliance.content.jobs import JobQueue
    from appliance.content.store import StoreError

    store, db = _open(cfg)
    try:
        if source.startswith(("http://", "https://")):
            from appliance.content.catalog import Book

            book = Book(name=name or library.item_name(source.rsplit("/", 1)[-1].split(".zim")[0]),
                        title=name or "", url=source, sha256=expect_sha256, language=language,
                        subject=subject)
            job = sync.enqueue_book(JobQueue(db), book)
            out.emit({"queued": job.id, "name": job.name, "url": job.url},
                     lambda d: f"queued job {d['queued']} for {d['name']}; run `appliance content sync`")
            return
        item = _add_one(store, Path(source), name=name, language=language, subject=subject,
                        expect_sha256=expect_sha256)
    except (library.LibraryError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    out.emit(_item_dict(item), lambda d: f"added {d['name']}: {d['title']} ({d['size']} bytes)")


@group.command("remove")
@click.argument("name")
@json_option
@pass_config
def remove(cfg: Config, out: Output, name: str) -> None:
    """Take an item out of the library (its files go once nothing else uses them)."""
    from appliance.content import library

    store, _ = _open(cfg)
    if not library.remove(store, name):
        raise click.ClickException(f"no item {name!r} (see `appliance content list`)")
    out.emit({"removed": name}, lambda d: f"removed {d['removed']}")


@group.command("list")
@json_option
@pass_config
def list_items(cfg: Config, out: Output) -> None:
    """List the library, its root's state, and the download queue."""
    from appliance.content import library, usage
    from appliance.content.jobs import JobQueue

    store, db = _open(cfg)
    views = usage.views(db)
    data = {"root": str(store.root), "root_problem": store.problem(),
            "items": [_item_dict(i, views) for i in library.items(db)],
            "jobs": [{"id": j.id, "name": j.name, "state": j.state, "attempts": j.attempts,
                      "done_bytes": j.done_bytes, "size": j.size, "error": j.error}
                     for j in JobQueue(db).list(states=("queued", "running", "failed"))]}

    def text(d: dict[str, Any]) -> str:
        lines = [f"root {d['root']}: " + (f"MISSING: {d['root_problem']}" if d["root_problem"] else "ok")]
        lines += [f"{i['state']:4} {i['kind']:4} {i['name']:30} {i['size']:>12}  "
                  f"views(7d) {i['views_7d']:>4}  {i['title']}"
                  + (f"  ({i['problem']})" if i["problem"] else "") for i in d["items"]]
        if not d["items"]:
            lines.append("no items")
        lines += [f"job {j['id']} {j['state']} {j['name']} {j['done_bytes']}/{j['size']}"
                  + (f": {j['error']}" if j["error"] else "") for j in d["jobs"]]
        return "\n".join(lines)

    out.emit(data, text)


@group.command("sync")
@click.option("--catalog", "catalogs", multiple=True,
              help="OPDS feed or bundle manifest (URL or file) to queue books from.")
@click.option("--book", "books", multiple=True, help="Only these book names from the catalog (default: all).")
@click.option("--verify/--no-verify", "verify_one", default=True,
              help="Afterwards, fully verify the next listed item in turn (default: on).")
@json_option
@pass_config
def sync_command(cfg: Config, out: Output, catalogs: tuple[str, ...], books: tuple[str, ...],
                 verify_one: bool) -> None:
    """Queue books from catalogs, then download, verify and swap in everything queued
    (at low CPU and I/O priority, within [content] windows and bandwidth_kbps); then check one
    listed item in full, the next in name order each run (the background integrity check: an
    item that turned bad on disk is taken out of the library)."""
    import psutil

    from appliance.content import catalog, library, sync
    from appliance.content.download import DownloadError
    from appliance.content.jobs import JobQueue

    store, db = _open(cfg)
    queue = JobQueue(db)
    os.nice(10)
    # Not Linux, or not allowed: the nice value still applies.
    with contextlib.suppress(AttributeError, psutil.Error, OSError):
        psutil.Process().ionice(psutil.IOPRIO_CLASS_IDLE)
    for source in catalogs:
        try:
            for book in sync.read_catalog(source):
                if not books or book.name in books:
                    sync.enqueue_book(queue, book)
        except (catalog.CatalogError, DownloadError, OSError) as exc:
            raise click.ClickException(f"{source}: {exc}") from None
    bar: Any
    with click.progressbar(length=0, label="syncing", file=sys.stderr) as bar:
        outcome: dict[str, Any] = sync.run(cfg, store, queue, progress=lambda job, n: bar.update(n))
    checked = library.verify_next(store) if verify_one else None
    if checked is not None:
        outcome["verified"] = {"name": checked[0], "problem": checked[1]}

    def text(d: dict[str, Any]) -> str:
        line = ", ".join(f"{v} {k}" for k, v in d.items() if k != "verified")
        if "verified" in d:
            line += f"; verified {d['verified']['name']}: {d['verified']['problem'] or 'ok'}"
        return line

    out.emit(outcome, text)


@group.command("import")
@click.argument("folder", required=False,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--usb", "device", metavar="DEVICE",
              help="Import from this USB drive (e.g. /dev/sda1; see `appliance content usb`), "
                   "mounted read-only by the network helper and released afterwards.")
@json_option
@pass_config
def import_command(cfg: Config, out: Output, folder: Path | None, device: str | None) -> None:
    """Import a folder or a USB drive: every .zim (or split .zimaa) at its top and every
    sub-folder with a manifest.json, each verified before it is listed (a corrupt one is
    refused, with the reason, and the rest still imported; exit status 1 if any was)."""
    from appliance.content import importing
    from appliance.network.client import HelperError

    if (folder is None) == (device is None):
        raise click.UsageError("give either FOLDER or --usb DEVICE")
    store, _ = _open(cfg)

    def add(st: Any, path: Path, origin: str) -> Any:
        extra: dict[str, Any] = {} if path.is_dir() else {"expect_sha256": None}
        return _add_one(st, path, name=None, language="", subject="", origin=origin, **extra)

    def lines(rs: list[dict[str, str]]) -> str:
        return "\n".join(f"{r['source']}: " + (f"added {r['added']}" if "added" in r
                                               else f"REFUSED: {r['error']}") for r in rs) \
            or "nothing to import"

    if device is not None:
        try:
            done = importing.import_usb(cfg.network.helper.socket, store, device, add=add)
        except HelperError as exc:
            raise click.ClickException(f"{device}: {exc}") from None
        results = done["results"]
        out.emit(done, lambda d: f"{d['device']} ({d['filesystem']}), now unmounted:\n"
                 + lines(d["results"]))
    else:
        assert folder is not None
        results = importing.import_folder(store, folder, add=add)
        out.emit(results, lines)
    if any("error" in r for r in results):
        raise SystemExit(1)


@group.command("usb")
@json_option
@pass_config
def usb_command(cfg: Config, out: Output) -> None:
    """List the block devices `import --usb` may use ([network.helper] usb_devices): size,
    whether removable, the model, and where one is mounted already."""
    from appliance.content import importing

    devices = importing.usb_candidates(cfg.network.helper.usb_devices)
    out.emit(devices, lambda ds: "\n".join(
        f"{d['device']:14} {d['size'] / 1e6:10.1f} MB  {'removable' if d['removable'] else 'fixed':9}  "
        f"{d['model'] or '-'}" + (f"  (mounted at {d['mounted']})" if d["mounted"] else "")
        for d in ds) or "no USB drive found (plug one in; see [network.helper] usb_devices)")


@group.command("verify")
@click.argument("names", nargs=-1)
@click.option("--quick", is_flag=True, help="Only the cheap check (header, sample of entries).")
@json_option
@pass_config
def verify(cfg: Config, out: Output, names: tuple[str, ...], quick: bool) -> None:
    """Check items against their checksums; a bad one is taken out of the library."""
    from appliance.content import library
    from appliance.content.store import RootMissing

    store, db = _open(cfg)
    os.nice(10)
    results = {}
    for name in names or tuple(i.name for i in library.items(db)):
        try:
            results[name] = library.verify(store, name, full=not quick) or "ok"
        except (library.LibraryError, RootMissing) as exc:
            raise click.ClickException(str(exc)) from None
    out.emit(results, lambda d: "\n".join(f"{k}: {v}" for k, v in d.items()) or "no items")
    if any(v != "ok" for v in results.values()):
        raise SystemExit(1)


COMMANDS: tuple[click.Command, ...] = (group,)
