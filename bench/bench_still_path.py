"""What a still photo costs over a door frame: the detector's ``thorough`` path, timed.

    python bench/bench_still_path.py [--quick] [--json bench/results/still-path.json]

Enrolment, the CLI and the page search every still photo harder than the door searches a
frame (``FaceDetector.detect(thorough=True)``: the full-range model on the whole frame and the
short-range model on a frame with a mirrored border, besides the door's one run). This times
both paths on the same images, interleaved in one process (door, still, still, door, ... so a
burst of load on a shared machine falls on both), and reports medians, and the median of each
still run's difference from the door run of the same image just before or after it:

- 200 LFW photos (250x250, lfw-a-singles evenly spaced: the photos ``bench/compare.py`` gives
  ``facegate embed``), decoded once beforehand;
- the 640x480 frames ``bench/compare.py`` builds from tests/data: one face, two faces, a group.

For each, the detector alone and the whole pipeline (detection, FaceMesh, alignment, quality,
embedding of every face found). Prints a Markdown table; writes the figures and the machine
to JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_pipeline import machine  # noqa: E402

from device.vision.pipeline import FacePipeline  # noqa: E402

DATA = ROOT / "tests" / "data"
STILLS = ROOT.parent / "shared" / "data" / "lfw-a-singles"


def still_photos(folder: Path, count: int) -> list[np.ndarray]:
    """``count`` photos evenly spaced through ``folder``'s sorted list, decoded."""
    paths = sorted(folder.glob("*/*.jpg"))
    if len(paths) < count:
        raise SystemExit(f"bench_still_path: {folder} has {len(paths)} photos, {count} needed")
    return [cv2.imread(str(paths[i * len(paths) // count])) for i in range(count)]


def frames_640x480() -> dict[str, np.ndarray]:
    """One face and two faces as bench_pipeline.py builds them, and the group bench/compare.py
    builds (tests/data's selfie scaled to 480 rows, centred on a grey frame)."""
    one = np.full((480, 640, 3), 90, np.uint8)
    one[115:365, 195:445] = cv2.imread(str(DATA / "people" / "Colin_Powell" /
                                           "Colin_Powell_0001.jpg"))
    two = cv2.resize(cv2.imread(str(DATA / "couple.jpg")), (640, 480),
                     interpolation=cv2.INTER_AREA)
    selfie = cv2.imread(str(DATA / "selfie-many-people.jpg"))
    height, width = selfie.shape[:2]
    selfie = cv2.resize(selfie, (round(width * 480 / height), 480), interpolation=cv2.INTER_AREA)
    group = np.full((480, 640, 3), 90, np.uint8)
    left = (640 - selfie.shape[1]) // 2
    group[:, left:left + selfie.shape[1]] = selfie
    return {"640x480, one face": one, "640x480, two faces": two, "640x480, group": group}


def interleaved(images: list[np.ndarray], repeats: int,
                paths: dict[str, Callable[[np.ndarray], object]]) -> dict[str, dict]:
    """Milliseconds per image of each path, the paths alternating in order image by image."""
    names = list(paths)
    for image in images[:3]:  # warm-up: first runs allocate and pick kernels
        for name in names:
            paths[name](image)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for index, image in enumerate(images):
            order = names if (round_ + index) % 2 == 0 else names[::-1]
            for name in order:
                start = time.perf_counter()
                paths[name](image)
                samples[name].append((time.perf_counter() - start) * 1000)
    result = {}
    for name, values in samples.items():
        ordered = sorted(values)
        result[name] = {"median_ms": round(statistics.median(ordered), 3),
                        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
                        "runs": len(ordered)}
    # Each still run against the door run of the same image in the same round: load that comes
    # and goes on a shared machine moves both, so the median of the differences is steadier
    # than the difference of the medians.
    for kind in ("detection", "whole pipeline"):
        door, still = samples[f"{kind}, door"], samples[f"{kind}, still"]
        result[f"{kind}, still - door"] = {"median_ms": round(statistics.median(
            [s - d for s, d in zip(still, door, strict=True)]), 3)}
    return result


def bench(pipeline: FacePipeline, images: list[np.ndarray], repeats: int) -> dict:
    detector = pipeline.detector
    figures = interleaved(images, repeats, {
        "detection, door": lambda frame: detector.detect(frame),
        "detection, still": lambda frame: detector.detect(frame, thorough=True),
        "whole pipeline, door": lambda frame: pipeline.process(frame),
        "whole pipeline, still": lambda frame: pipeline.process(frame, thorough=True),
    })
    figures["faces found, door / still"] = [
        sum(len(pipeline.process(frame)) for frame in images),
        sum(len(pipeline.process(frame, thorough=True)) for frame in images)]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer photos and repeats (CI)")
    parser.add_argument("--stills", type=Path, default=STILLS,
                        help="folder of people folders of photos (default: lfw-a-singles)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    count, still_repeats, frame_repeats = (50, 1, 20) if args.quick else (200, 3, 100)
    pipeline = FacePipeline.from_models_dir()
    sets = {f"{count} LFW photos, 250x250": bench(pipeline, still_photos(args.stills, count),
                                                   still_repeats)}
    for name, frame in frames_640x480().items():
        sets[name] = bench(pipeline, [frame], frame_repeats)

    print(f"| images ({pipeline.model_name}) | detection: door / still, median ms "
          "| still - door | whole pipeline: door / still, median ms | still - door "
          "| faces: door / still |")
    print("|---|---|---|---|---|---|")
    for name, figures in sets.items():
        def ms(key: str, figures: dict = figures) -> float:
            return figures[key]["median_ms"]

        print(f"| {name} | {ms('detection, door'):.2f} / {ms('detection, still'):.2f} "
              f"| {ms('detection, still - door'):+.2f} "
              f"| {ms('whole pipeline, door'):.2f} / {ms('whole pipeline, still'):.2f} "
              f"| {ms('whole pipeline, still - door'):+.2f} "
              f"| {figures['faces found, door / still'][0]} / "
              f"{figures['faces found, door / still'][1]} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": machine(),
            "embedder": pipeline.model_name,
            "sets": sets,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
