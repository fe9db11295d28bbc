"""Time each stage of the face pipeline, and the whole of it, on 640x480 frames.

    python bench/bench_pipeline.py [--quick] [--json bench/results/pipeline.json]

Frames are built from the real photos in tests/data: one face (an LFW photo placed on a
640x480 frame, the size a door camera's detection stream has) and several faces (the couple
photo scaled to 640x480). The stages are the door's: detection, FaceMesh, alignment, quality,
embedding, liveness (on by default at the door, ``device/liveness.py``) and matching; "whole
door frame" is ``door_step``: the pipeline and the liveness check of every face. Prints a
Markdown table; writes every figure and the machine to JSON.
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

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device.gallery.matcher import Matcher  # noqa: E402
from device.liveness import LivenessCheck, liveness_loader  # noqa: E402
from device.vision.pipeline import Face, FacePipeline  # noqa: E402
from device.vision.quality import measure_quality  # noqa: E402

DATA = ROOT / "tests" / "data"


def one_face_frame() -> np.ndarray:
    photo = cv2.imread(str(DATA / "people" / "Colin_Powell" / "Colin_Powell_0001.jpg"))
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[115:365, 195:445] = photo
    return frame


def several_faces_frame() -> np.ndarray:
    return cv2.resize(cv2.imread(str(DATA / "couple.jpg")), (640, 480),
                      interpolation=cv2.INTER_AREA)


def door_step(pipeline: FacePipeline, liveness: LivenessCheck | None, frame: np.ndarray,
              **process) -> list[Face]:
    """What the door does with a frame before it votes: every face found (``process``'s
    keywords: the door's ``max_faces`` and ``min_interocular_px``, or none for every face)
    detected, located, aligned and embedded, then judged by the liveness check (None: off)."""
    faces = pipeline.process(frame, **process)
    if liveness is not None:
        for face in faces:
            liveness.judge(frame, face.box)
    return faces


def machine() -> dict[str, object]:
    """What a benchmark ran on, for its JSON."""
    return {"platform": platform.platform(), "processor": platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "opencv": cv2.__version__, "numpy": np.__version__,
            "threads": os.environ.get("FACEGATE_THREADS", "all cores"),
            "load_average": round(os.getloadavg()[0], 2)}


def summarise(samples: list[float]) -> dict[str, float]:
    """Milliseconds as every benchmark here reports them: median, 90th percentile, runs."""
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered), 3),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 3), "runs": len(ordered)}


def timed(func, repeats: int, *, warm_up: int = 1) -> dict[str, float]:
    """``repeats`` calls of ``func`` after ``warm_up`` untimed ones (first runs allocate and
    pick kernels), summarised."""
    for _ in range(warm_up):
        func()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1000)
    return summarise(samples)


def bench_stages(pipeline: FacePipeline, repeats: int,
                 liveness: LivenessCheck | None = None) -> dict[str, dict[str, float]]:
    """Each stage on the one-face frame, then the whole of it; with ``liveness``, its cost
    per face and the whole door frame with it (as the door runs by default)."""
    frame = one_face_frame()
    encoded = cv2.imencode(".jpg", frame)[1].tobytes()
    detection = pipeline.detector.detect(frame)[0]
    landmarks = pipeline.mesh.locate(frame, detection)
    five = landmarks.five_points()
    crop = pipeline.aligner.align(frame, five, landmarks.points).crop
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((1000, pipeline.embedder.dim)).astype(np.float32)
    matcher = Matcher([f"p{i // 2}" for i in range(1000)], gallery)
    probe = pipeline.embed_crop(crop)
    stages = {
        "decode JPEG 640x480": timed(
            lambda: cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR), repeats),
        "detection": timed(lambda: pipeline.detector.detect(frame), repeats),
        "landmarks (FaceMesh)": timed(lambda: pipeline.mesh.locate(frame, detection), repeats),
        "alignment": timed(lambda: pipeline.aligner.align(frame, five, landmarks.points),
                           repeats),
        "quality": timed(lambda: measure_quality(five, landmarks.points, crop), repeats),
        "embedding": timed(lambda: pipeline.embed_crop(crop), repeats),
    }
    if liveness is not None:
        stages["liveness (per face)"] = timed(lambda: liveness.judge(frame, detection.box),
                                              repeats)
    stages["matching (1,000 templates)"] = timed(lambda: matcher.decide(probe, 0.5, 0.0),
                                                 repeats)
    stages["whole pipeline, 1 face"] = timed(lambda: pipeline.process(frame), repeats)
    two = several_faces_frame()
    stages["whole pipeline, 2 faces"] = timed(lambda: pipeline.process(two), repeats)
    if liveness is not None:
        stages["whole door frame, 1 face, liveness on"] = timed(
            lambda: door_step(pipeline, liveness, frame), repeats)
    return stages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (CI)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    repeats = 30 if args.quick else 200
    results = {}
    liveness = LivenessCheck(liveness_loader())
    for alignment in ("similarity", "homography"):
        pipeline = FacePipeline.from_models_dir(alignment=alignment)
        results[alignment] = bench_stages(pipeline, repeats, liveness)
    print(f"| stage ({pipeline.model_name}) | similarity median ms | p90 ms "
          "| homography median ms | p90 ms |")
    print("|---|---|---|---|---|")
    for stage, sim in results["similarity"].items():
        hom = results["homography"][stage]
        print(f"| {stage} | {sim['median_ms']:.2f} | {sim['p90_ms']:.2f} "
              f"| {hom['median_ms']:.2f} | {hom['p90_ms']:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": machine(),
            "embedder": pipeline.model_name,
            "liveness": liveness.model_name,
            "stages": results,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
