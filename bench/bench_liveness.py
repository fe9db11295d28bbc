"""What liveness costs: milliseconds per face, and the door loop's frame rate with it on and off.

    python bench/bench_liveness.py [--quick] [--json bench/results/liveness-speed.json]

- per face: each liveness model in models/ scoring a 640x480 frame's face (crop, resize,
  interpreter), median and 95th percentile over a few hundred runs, at the daemon's thread
  count and at one thread;
- door loop: bench/bench_daemon.py's throughput run (one enrolled face, a replay as fast as
  the machine goes), with liveness off and on; the difference per frame is what the door pays.
Prints Markdown tables and writes JSON with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_daemon import PERSON, throughput  # noqa: E402
from device.vision.detector import FaceDetector  # noqa: E402
from device.vision.image_io import read_image  # noqa: E402
from device.vision.liveness import LivenessModel  # noqa: E402
from device.vision.models import DEFAULT_LIVENESS, DETECTOR, list_cards, load_card  # noqa: E402
from device.vision.pipeline import FacePipeline  # noqa: E402


def per_face(name: str, runs: int, threads: int | None) -> dict:
    model = LivenessModel.from_card(load_card(name), num_threads=threads)
    photo = read_image(PERSON / "Colin_Powell_0002.jpg")[0]
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[115:365, 195:445] = photo  # the photo in the middle of a 640x480 frame
    box = max(FaceDetector(load_card(DETECTOR).path).detect(frame), key=lambda f: f.area).box
    for _ in range(20):
        model.score(frame, box)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        model.score(frame, box)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"model": name, "threads": threads or os.cpu_count(), "runs": runs,
            "median_ms": round(statistics.median(times), 3),
            "p95_ms": round(times[int(0.95 * len(times)) - 1], 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and frames")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    runs, frames, rounds = (100, 60, 1) if args.quick else (500, 300, 5)
    names = sorted(c.name for c in list_cards() if c.task == "liveness")
    faces = [per_face(name, runs, threads) for name in names for threads in (None, 1)]
    pipeline = FacePipeline.from_models_dir()
    # Off and on in turn, several rounds, the median of each: on a shared machine the noise
    # between two single runs is larger than a millisecond per frame.
    rounds_of = {"off": [], "on": []}
    for _ in range(rounds):
        for state in ("off", "on"):
            rounds_of[state].append(throughput(pipeline, frames, liveness=state == "on"))
    loops = {state: {**min(runs_, key=lambda r: abs(r["fps"] - statistics.median(
        x["fps"] for x in runs_))), "rounds_fps": [r["fps"] for r in runs_]}
        for state, runs_ in rounds_of.items()}
    print("| liveness model | threads | median ms per face | p95 ms |\n|---|---|---|---|")
    for row in faces:
        marker = " (default)" if row["model"] == DEFAULT_LIVENESS else ""
        print(f"| {row['model']}{marker} | {row['threads']} | {row['median_ms']} | "
              f"{row['p95_ms']} |")
    added = 1000 / loops["on"]["fps"] - 1000 / loops["off"]["fps"]
    print("\n| door loop, 640x480, one enrolled face | frames per second |\n|---|---|")
    print(f"| liveness off | {loops['off']['fps']} |\n| liveness on | {loops['on']['fps']} |")
    print(f"| added per frame | {added:.2f} ms |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "python": platform.python_version()},
            "default": DEFAULT_LIVENESS, "per_face": faces, "door_loop": loops,
            "added_ms_per_frame": round(added, 3)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
