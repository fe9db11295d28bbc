"""The door on MQTT: how many events per second it publishes, and how long an event takes from
the access log to a subscriber, on loopback against a real Mosquitto (Debian's, started here
on a free port with a configuration of its own, as the tests do).

    python bench/bench_mqtt.py [--quick] [--json bench/results/mqtt.json]

- recording: ``EventLog.record`` of a face decision (no snapshots) with MQTT off and on, so
  the outbox row's cost to the door loop is seen (its transaction is the same one);
- backlog: events recorded while the broker was away, then the publisher started: events per
  second until a subscriber (QoS 1) has them all; the drain after an outage;
- live: events recorded as fast as the loop can while the publisher runs; events per second
  from the first recorded to the last received;
- latency: one event at a time (every 20 ms), from ``record`` returning (the event and its
  outbox row committed) to the subscriber's receipt, median, p90 and max.

Prints a Markdown table and writes JSON with the machine it ran on. Not a test.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device.config import Places, load_config  # noqa: E402
from device.events import EventLog  # noqa: E402
from device.mqtt.publisher import MqttPublisher  # noqa: E402
from device.mqtt.settings import MqttSettings  # noqa: E402
from tests.mqtt_support import Listener, Mosquitto, mosquitto_missing  # noqa: E402

DOOR = "bench-door"
EVENTS = f"facegate/{DOOR}/event"
DETAIL = {"runner_up_score": 0.21, "liveness": 0.93, "liveness_threshold": 0.5,
          "quality": {"interocular_px": 88.0, "sharpness": 140.2, "yaw": 4.1, "pitch": 2.0,
                      "brightness": 121.0}}


def settings_for(folder: Path, broker: Mosquitto) -> MqttSettings:
    config = load_config(None, {"door.id": DOOR, "paths.data_dir": str(folder),
                                "mqtt.url": broker.url,
                                "mqtt.snapshot_base_url": "http://door.example:8080"},
                         environ={}, places=Places(system_config=folder / "no.toml",
                                                   system_data_dir=folder / "none",
                                                   project_dir=None))
    return MqttSettings.from_config(config)


def record_one(log: EventLog, number: int):
    return log.record("granted", person_id="4f1d2c3b-person", person_name="Ada Lovelace",
                      score=0.71, detail={**DETAIL, "n": number})


def bench_recording(folder: Path, settings: MqttSettings, count: int) -> dict:
    """Milliseconds per ``record`` with MQTT off and on (median of ``count``)."""
    result = {}
    for name, feed in (("off", None), ("on", settings.outbox_feed())):
        path = folder / f"record-{name}.db"
        with EventLog(path, folder / "snapshots", door_id=DOOR, stdout=io.StringIO(),
                      outbox=feed) as log:
            times = []
            for number in range(count):
                started = time.perf_counter()
                record_one(log, number)
                times.append((time.perf_counter() - started) * 1000)
        result[f"mqtt_{name}_median_ms"] = round(statistics.median(times), 3)
    return result


def bench_backlog(folder: Path, broker: Mosquitto, settings: MqttSettings, count: int) -> dict:
    db = folder / "backlog.db"
    with EventLog(db, folder / "snapshots", door_id=DOOR, stdout=io.StringIO(),
                  outbox=settings.outbox_feed()) as log:
        for number in range(count):
            record_one(log, number)
    listener = Listener(broker, [EVENTS])
    publisher = MqttPublisher(settings, db)
    started = time.monotonic()
    publisher.start()
    listener.wait_for(lambda got: len(got.on(EVENTS)) >= count, timeout=600, what="the backlog")
    seconds = listener.on(EVENTS)[-1].received - started
    publisher.close()
    listener.close()
    received = [message.json["id"] for message in listener.on(EVENTS)]
    return {"events": count, "seconds": round(seconds, 3),
            "events_per_second": round(count / seconds), "received": len(received),
            "distinct": len(set(received))}


def bench_live(folder: Path, broker: Mosquitto, settings: MqttSettings, count: int) -> dict:
    db = folder / "live.db"
    listener = Listener(broker, [EVENTS])
    publisher = MqttPublisher(settings, db)
    with EventLog(db, folder / "snapshots", door_id=DOOR, stdout=io.StringIO(),
                  outbox=settings.outbox_feed(publisher.wake)) as log:
        publisher.start()
        while not publisher.connected:
            time.sleep(0.01)
        started = time.monotonic()
        for number in range(count):
            record_one(log, number)
        recorded = time.monotonic() - started
        listener.wait_for(lambda got: len(got.on(EVENTS)) >= count, timeout=600,
                          what="the live events")
        seconds = listener.on(EVENTS)[-1].received - started
    publisher.close()
    listener.close()
    return {"events": count, "seconds": round(seconds, 3),
            "events_per_second": round(count / seconds),
            "recording_events_per_second": round(count / recorded)}


def bench_latency(folder: Path, broker: Mosquitto, settings: MqttSettings, count: int) -> dict:
    db = folder / "latency.db"
    listener = Listener(broker, [EVENTS])
    publisher = MqttPublisher(settings, db)
    recorded: dict[str, float] = {}
    with EventLog(db, folder / "snapshots", door_id=DOOR, stdout=io.StringIO(),
                  outbox=settings.outbox_feed(publisher.wake)) as log:
        publisher.start()
        while not publisher.connected:
            time.sleep(0.01)
        time.sleep(0.2)
        for number in range(count):
            event = record_one(log, number)
            recorded[event.id] = time.monotonic()
            time.sleep(0.02)
        listener.wait_for(lambda got: len(got.on(EVENTS)) >= count, timeout=60,
                          what="the timed events")
    publisher.close()
    listener.close()
    delays = sorted((m.received - recorded[m.json["id"]]) * 1000 for m in listener.on(EVENTS))
    return {"events": count, "median_ms": round(statistics.median(delays), 2),
            "p90_ms": round(delays[int(0.9 * (len(delays) - 1))], 2),
            "max_ms": round(delays[-1], 2)}


def mosquitto_version() -> str:
    from tests.mqtt_support import MOSQUITTO

    shown = subprocess.run([str(MOSQUITTO), "-h"], capture_output=True, text=True).stdout
    return shown.splitlines()[0] if shown else "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer events (seconds, not a minute)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "mqtt.json")
    args = parser.parse_args(argv)
    missing = mosquitto_missing()
    if missing:
        print(f"bench_mqtt: {missing}", file=sys.stderr)
        return 1
    backlog_n, live_n, latency_n, record_n = (
        (1000, 500, 50, 200) if args.quick else (10_000, 3000, 300, 1000))
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as scratch:
        folder = Path(scratch)
        with Mosquitto(folder / "broker") as broker:
            settings = settings_for(folder, broker)
            recording = bench_recording(folder, settings, record_n)
            backlog = bench_backlog(folder, broker, settings, backlog_n)
            live = bench_live(folder, broker, settings, live_n)
            latency = bench_latency(folder, broker, settings, latency_n)
    print("| measure (loopback, Mosquitto, QoS 1, one subscriber) | value |\n|---|---|")
    print(f"| `EventLog.record` of a face decision, MQTT off / on (outbox row), median | "
          f"{recording['mqtt_off_median_ms']} / {recording['mqtt_on_median_ms']} ms |")
    print(f"| backlog after an outage: {backlog['events']:,} events drained to a subscriber | "
          f"{backlog['events_per_second']:,} events/s ({backlog['seconds']} s) |")
    print(f"| live: {live['events']:,} events recorded back to back, first recorded to last "
          f"received | {live['events_per_second']:,} events/s |")
    print(f"| event recorded -> subscriber's receipt, one every 20 ms, median / p90 / max | "
          f"{latency['median_ms']} / {latency['p90_ms']} / {latency['max_ms']} ms |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                        "load_average_1m": round(os.getloadavg()[0], 2),
                        "broker": mosquitto_version()},
            "window": 64, "quick": args.quick,
            "recording": recording, "backlog": backlog, "live": live, "latency": latency,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
