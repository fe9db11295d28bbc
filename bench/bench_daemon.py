"""The door daemon end to end: frames per second, time to open, memory and start-up.

    python bench/bench_daemon.py [--quick] [--json bench/results/daemon.json]

- throughput: the decision loop on a replay of 640x480 frames with one enrolled face, as
  fast as the machine goes (the camera paced at 0 fps);
- time to open: replay at 15 fps, empty frames then an enrolled person; from the capture time
  of the first frame with the face to the relay energised (gpiozero mock pin's timestamps);
- memory and start-up: ``facegate run`` as a separate process with 10,000 templates enrolled,
  its peak resident memory (ru_maxrss) and the time until it reports itself running.
Prints a Markdown table and writes JSON with the machine it ran on.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpiozero.pins.mock import MockFactory, MockPin  # noqa: E402

from device.camera import ReplayCamera  # noqa: E402
from device.daemon.loop import DoorLoop, LoopSettings  # noqa: E402
from device.daemon.scenes import write_scene  # noqa: E402
from device.door import Door, DoorSettings  # noqa: E402
from device.enrolment import Actor, EnrolmentService  # noqa: E402
from device.events import EventLog  # noqa: E402
from device.gallery.store import Gallery  # noqa: E402
from device.identification import Decision, Identifier  # noqa: E402
from device.liveness import LivenessCheck, LivenessSettings, liveness_loader  # noqa: E402
from device.vision.image_io import read_image  # noqa: E402
from device.vision.pipeline import FacePipeline  # noqa: E402

DATA = ROOT / "tests" / "data"
PERSON = DATA / "people" / "Colin_Powell"
RELAY = 17


class TimedCamera:
    """Remembers when each frame was captured, so latency can be measured from it."""

    def __init__(self, camera: ReplayCamera) -> None:
        self.camera = camera
        self.captured: dict[int, float] = {}

    def read(self):
        frame = self.camera.read()
        self.captured[frame.index] = frame.timestamp
        return frame


def build(folder: Path, scene: Path, pipeline: FacePipeline, fps: float, factory: MockFactory,
          unlock_seconds: float = 0.2, liveness: bool = True):
    """A door loop as the daemon builds it; ``liveness`` on by default, as the door's is."""
    gallery = Gallery(folder / "facegate.db")
    if not gallery.list_people():
        frame, sha256 = read_image(PERSON / "Colin_Powell_0001.jpg")
        EnrolmentService.with_card_defaults(pipeline, gallery).enrol(
            "Colin Powell", frame, sha256, Actor(None, "cli"))
    events = EventLog(folder / "facegate.db", folder / "snapshots", door_id="bench",
                      stdout=io.StringIO())
    pin_created = time.monotonic()
    door = Door(DoorSettings(relay_pin=RELAY, unlock_seconds=unlock_seconds),
                pin_factory=factory)
    camera = ReplayCamera(scene, fps=fps, loop=False)
    camera.open()
    timed = TimedCamera(camera)
    loop = DoorLoop(camera=timed, identifier=Identifier(pipeline, gallery, Decision.from_card(
        pipeline.embedder_card.threshold)), door=door, events=events,
        settings=LoopSettings(cooldown_seconds=0.5),
        liveness=LivenessCheck(liveness_loader(), LivenessSettings()) if liveness else None)
    return loop, timed, door, pin_created, (gallery, events, camera)


def throughput(pipeline: FacePipeline, frames: int, liveness: bool = True) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        scene = folder / "scene"
        write_scene(scene, [PERSON / "Colin_Powell_0002.jpg"], frames_each=frames)
        factory = MockFactory(pin_class=MockPin)
        loop, _, door, _, parts = build(folder, scene, pipeline, 0, factory,
                                        liveness=liveness)
        started = time.perf_counter()
        loop.run(threading.Event())
        elapsed = time.perf_counter() - started
        door.close()
        for part in parts:
            part.close()
        factory.close()
    return {"frames": loop.frames, "seconds": round(elapsed, 2),
            "fps": round(loop.frames / elapsed, 1), "grants": loop.grants}


def time_to_open(pipeline: FacePipeline, trials: int) -> dict:
    latencies = []
    for _ in range(trials):
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            scene = folder / "scene"
            empty = 15
            write_scene(scene, [None], frames_each=empty)
            write_scene(scene, [PERSON / "Colin_Powell_0003.jpg"], frames_each=10, start=empty)
            factory = MockFactory(pin_class=MockPin)
            loop, timed, door, pin_created, parts = build(folder, scene, pipeline, 15, factory)
            loop.run(threading.Event())
            pin = factory.pin(RELAY)
            changes = np.cumsum([s.timestamp or 0.0 for s in pin.states]) + pin_created
            energised = [t for t, s in zip(changes, pin.states, strict=True) if s.state]
            if energised:
                latencies.append((energised[0] - timed.captured[empty]) * 1000)
            door.close()
            for part in parts:
                part.close()
            factory.close()
    latencies.sort()
    return {"trials": trials, "opened": len(latencies),
            "median_ms": round(statistics.median(latencies), 1) if latencies else None,
            "max_ms": round(latencies[-1], 1) if latencies else None,
            "camera_fps": 15}


def memory_and_startup(templates: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        data.mkdir()
        rng = np.random.default_rng(0)
        with Gallery(data / "facegate.db") as gallery:
            model = FacePipeline.from_models_dir().model_name
            for p in range(templates // 5):
                person = gallery.add_person(f"person {p:06d}")
                for t in range(5):
                    vector = rng.standard_normal(128).astype(np.float32)
                    gallery.add_template(person.id, vector / np.linalg.norm(vector), model,
                                         {}, None, f"{p * 5 + t:064x}")
        scene = Path(scratch) / "scene"
        write_scene(scene, [PERSON / "Colin_Powell_0002.jpg"], frames_each=30)
        env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock", "PYTHONUNBUFFERED": "1"}
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "device", "run", "--data-dir", str(data), "--camera",
             str(scene), "--exit-at-end", "--no-web"], stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True, env=env, cwd=ROOT)
        ready = None
        for line in process.stderr:
            if "facegate running" in line and ready is None:
                ready = time.perf_counter() - started
        process.wait()
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"templates": templates, "startup_seconds": round(ready or float("nan"), 2),
            "peak_rss_mb": round(peak_kib / 1024, 1), "exit_code": process.returncode}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and trials (CI)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    pipeline = FacePipeline.from_models_dir()
    results = {
        "throughput": throughput(pipeline, 60 if args.quick else 300),
        "time_to_open": time_to_open(pipeline, 2 if args.quick else 10),
        "memory_and_startup": memory_and_startup(10_000),
    }
    t, o, m = results["throughput"], results["time_to_open"], results["memory_and_startup"]
    print("| measure | value |\n|---|---|")
    print(f"| frames per second, 640x480, one face (decision loop) | {t['fps']} |")
    print(f"| first frame with an enrolled face -> relay energised, 15 fps camera "
          f"(median / max of {o['opened']}) | {o['median_ms']} ms / {o['max_ms']} ms |")
    print(f"| peak resident memory, {m['templates']:,} templates | {m['peak_rss_mb']} MB |")
    print(f"| start-up to running | {m['startup_seconds']} s |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "python": platform.python_version()},
            **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
