"""Console ingest throughput: our ingest worker against mosquitto_sub, side by side in one run.

Both subscribers drain the same backlog of N telemetry messages from a real Mosquitto, queued for
their persistent session while they were away (so the publisher's speed does not count):

- peer: `mosquitto_sub -c -q 1 -C N` (C, receives and prints; stores nothing);
- us:   `appliance.console.ingest.Ingest` (parses, validates, stores in SQLite, acknowledges).

Prints messages per second for each and the ratio. Run:

    .venv/bin/python bench/fleet_ingest.py [--messages 20000] [--devices 200]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from appliance import config as config_module
from appliance.console.ingest import Ingest
from appliance.fleet import payloads
from appliance.fleet.broker import Mosquitto
from appliance.store import open_db


def publish_backlog(port: int, messages: int, devices: int) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher",
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(200)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = []
    base_ms = int(time.time() * 1000) - messages * 1000
    for i in range(messages):
        device = f"bench-{i % devices:04d}"
        seq = i // devices + 1
        body = payloads.telemetry(seq, base_ms + i, {"cpu_pct": 12.5, "mem_pct": 40.0,
                                                     "disk_pct": 20.0, "uptime_s": 3600.0})
        infos.append(client.publish(f"edge/v1/dev/{device}/tele", body, qos=1))
    for info in infos:
        info.wait_for_publish(30)
    client.loop_stop()
    client.disconnect()


def peer(port: int, messages: int, devices: int) -> float:
    args = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-c",
            "-i", "bench-peer", "-x", "3600", "-q", "1", "-t", "edge/v1/dev/+/tele"]
    # Register the persistent session, then leave.
    subprocess.run([*args, "-W", "1"], capture_output=True, check=False)
    publish_backlog(port, messages, devices)
    start = time.perf_counter()
    subprocess.run([*args, "-C", str(messages)], stdout=subprocess.DEVNULL, check=True, timeout=600)
    return time.perf_counter() - start


def ours(port: int, messages: int, devices: int, workdir: Path) -> float:
    cfg = config_module.from_dict({
        "appliance": {"id": "bench-console", "state_dir": str(workdir / "console")},
        "mqtt": {"host": "127.0.0.1", "port": port, "tls": False},
    })
    db = open_db(cfg.console_database_path)

    def run_until(predicate: Callable[[Ingest], bool]) -> None:
        ingest = Ingest(cfg, db)
        stop = threading.Event()
        worker = threading.Thread(target=ingest.run, args=(stop,))
        worker.start()
        while not predicate(ingest):
            time.sleep(0.01)
        stop.set()
        worker.join()

    run_until(lambda i: i.session.connected)  # register the persistent session
    publish_backlog(port, messages, devices)
    start = time.perf_counter()
    run_until(lambda i: i.accepted >= messages)
    elapsed = time.perf_counter() - start
    stored = db.execute("SELECT count(*) FROM health").fetchone()[0]
    assert stored == messages, f"stored {stored} of {messages}"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--devices", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "broker", max_queued_messages=args.messages * 2).start()
        try:
            t_peer = peer(broker.port, args.messages, args.devices)
            t_ours = ours(broker.port, args.messages, args.devices, Path(tmp))
        finally:
            broker.stop()
    rate_peer, rate_ours = args.messages / t_peer, args.messages / t_ours
    print(f"messages: {args.messages} from {args.devices} devices, drained from a queued session")
    print(f"mosquitto_sub (receive only):          {rate_peer:10.0f} msg/s  ({t_peer:.2f} s)")
    print(f"appliance ingest (parse, store, ack):  {rate_ours:10.0f} msg/s  ({t_ours:.2f} s)")
    print(f"ratio ours/peer: {rate_ours / rate_peer:.2f}")
    print(f"fleet capacity at 1 sample/min/device: ~{rate_ours * 60:,.0f} appliances")


if __name__ == "__main__":
    main()
