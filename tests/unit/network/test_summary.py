"""The network summary: counts from the leases, the sessions and the helper; never an error for
a network that is not set up."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
from pathlib import Path

from appliance import config
from appliance.fleet import summaries
from appliance.network import render, sessions, summary
from appliance.store import open_db


def with_network(cfg: config.Config, **keys: object) -> config.Config:
    return dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, **keys))


def test_a_network_not_set_up_reports_dashes_not_an_error(cfg, tmp_path):
    cfg = with_network(cfg, uplink="nosuch0", helper=config.HelperSection(socket=tmp_path / "none.sock"))
    db = open_db(tmp_path / "empty.db")
    values = summary.SUMMARY.validate(summary.collect(cfg, db))
    assert values == {"stations": None, "leases": None, "sessions": None, "uplink": None,
                      "portal_mode": "terms"}


def test_counts_leases_and_live_sessions(cfg, tmp_path):
    cfg = with_network(cfg, access_point="external", uplink="lo", portal_mode="open",
                       session_hours=1.0)
    directory = render.render_dir(cfg)
    directory.mkdir(parents=True)
    (directory / render.LEASES).write_text(
        "1767225600 02:ce:00:00:00:01 10.42.0.21 phone1 *\n"
        "1767225600 02:ce:00:00:00:02 10.42.0.22 * *\n")
    db = sessions.open_sessions_db(cfg.database_path)
    now = sessions.clock()
    sessions.accept(db, "02:ce:00:00:00:01", "10.42.0.21", (), now, 3600)
    over = sessions.Clock(now.wall - 7200, now.boot - 7200, now.boot_id)
    sessions.accept(db, "02:ce:00:00:00:02", "10.42.0.22", (), over, 3600)
    values = summary.SUMMARY.validate(summary.collect(cfg, db))
    # lo has carrier; an external access point has no station list.
    assert values == {"stations": None, "leases": 2, "sessions": 1, "uplink": True,
                      "portal_mode": "open"}


def test_stations_come_from_the_helper(cfg, tmp_path):
    path = Path(tmp_path / "helper.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    seen: list[bytes] = []

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            seen.append(conn.recv(4096))
            conn.sendall(json.dumps({"ok": True, "result": {"available": True, "count": 4,
                                                            "stations": []}}).encode() + b"\n")

    thread = threading.Thread(target=answer)
    thread.start()
    cfg = with_network(cfg, access_point="onboard", helper=config.HelperSection(socket=path))
    values = summary.collect(cfg, open_db(tmp_path / "x.db"))
    thread.join(5)
    server.close()
    assert values["stations"] == 4
    assert json.loads(seen[0])["verb"] == "stations"


def test_the_summary_is_registered():
    assert summaries.specs()["network"] is summary.SUMMARY
