"""The door frame and the still-photo path on one core and one thread, stage by stage.

    python bench/bench_one_core.py [--quick] [--core N] [--json bench/results/one-core.json]

The closest stand-in for a Raspberry Pi-class board this machine has: the process pins itself
to one core (``os.sched_setaffinity``, as ``taskset -c N`` would) and runs again with every
TFLite interpreter at one thread (``FACEGATE_THREADS=1``), OpenCV's pool at one thread and
numpy's BLAS at one thread, so no stage borrows a second core. (The first process imports
everything only to start again: thread pools size themselves when their libraries load.)

- **door frame**: a 640x480 frame with one face (``bench_pipeline.one_face_frame``, the frame
  ``compare.py`` times every system on), as the door runs it (``LoopSettings``' ``max_faces``):
  detection, FaceMesh, alignment, quality, embedding, liveness (on by default) and matching
  against 1,000 templates, each stage alone and the whole frame, and the frames per second
  that makes. The face's eyes are 38 px apart, under the door's ``min_interocular_px`` (40),
  at which the door would skip its embedding as too far away: that limit is set to 0 here,
  so the frame costs what a face at the door costs.
  Decoding a 640x480 JPEG is listed apart: picamera2 hands the door decoded frames, a USB
  camera's MJPEG is decoded by OpenCV before the frame reaches it.
- **still path** (``thorough=True``: what ``facegate embed``, ``enroll`` and the page's upload
  run): a 250x250 LFW photo from ``tests/data`` stage by stage (reading and decoding the
  file, the thorough detection, FaceMesh, alignment, quality, embedding) and whole, then the
  640x480 frames (one face, two faces) whole.

Median and 90th percentile of every figure; prints a Markdown table and writes JSON with the
machine, the core and the threads in force. Runs on a Pi with the door's own packages
(``make install``): nothing here needs the dev extra.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "bench")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bench_pipeline import one_face_frame, several_faces_frame  # noqa: E402
from bench_pipeline import timed as pipeline_timed  # noqa: E402
from bench_search import _cpu_model  # noqa: E402
from summary import one_core_table  # noqa: E402

from device.daemon.loop import LoopSettings  # noqa: E402
from device.gallery.matcher import Matcher  # noqa: E402
from device.liveness import LivenessCheck, liveness_loader  # noqa: E402
from device.vision.image_io import read_image  # noqa: E402
from device.vision.interpreter import default_num_threads  # noqa: E402
from device.vision.pipeline import FacePipeline  # noqa: E402
from device.vision.quality import measure_quality  # noqa: E402

PINNED = "FACEGATE_BENCH_PINNED"  # set in the re-executed process: the core it is pinned to
ONE_THREAD = {"FACEGATE_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}
STILL_PHOTO = ROOT / "tests" / "data" / "people" / "Colin_Powell" / "Colin_Powell_0001.jpg"
FPS_TARGET = 15.0  # a door camera's usual rate; the budget per frame is 1000 / this


def pin_and_reexec(core: int, argv: list[str]) -> None:
    """Pin this process to ``core`` and start it again with one thread everywhere: thread
    pools size themselves when their libraries load, so the settings must be there before
    numpy, OpenCV or the interpreter are imported. Returns only in the pinned process."""
    if os.environ.get(PINNED) == str(core):
        return
    available = sorted(os.sched_getaffinity(0))
    if core not in available:
        raise SystemExit(f"bench_one_core: core {core} is not available here "
                         f"(this process may run on {available})")
    os.sched_setaffinity(0, {core})
    env = {**os.environ, **ONE_THREAD, PINNED: str(core)}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv], env)


def timed(function, repeats: int) -> dict[str, float]:
    """Milliseconds of ``repeats`` calls after two warm-up calls: median and p90."""
    return pipeline_timed(function, repeats, warm_up=2)


def door_frame(pipeline, liveness, matcher, settings, repeats: int) -> dict:
    """The door frame stage by stage, and whole: what one pass of the door loop computes."""
    frame = one_face_frame()
    encoded = cv2.imencode(".jpg", frame)[1].tobytes()
    detection = max(pipeline.detector.detect(frame), key=lambda d: d.area)
    landmarks = pipeline.mesh.locate(frame, detection)
    five = landmarks.five_points()
    crop = pipeline.aligner.align(frame, five, landmarks.points).crop
    probe = pipeline.embed_crop(crop)
    # min_interocular_px 0: this face is just under the door's limit (see the docstring).
    process = {"max_faces": settings.max_faces, "min_interocular_px": 0.0}

    def whole() -> int:
        faces = pipeline.process(frame, **process)
        for face in faces:
            liveness.judge(frame, face.box)
            matcher.decide(face.embedding, 0.5, 0.0)
        return len(faces)

    stages = {
        "detection": timed(lambda: pipeline.detector.detect(frame), repeats),
        "landmarks (FaceMesh)": timed(lambda: pipeline.mesh.locate(frame, detection), repeats),
        "alignment": timed(lambda: pipeline.aligner.align(frame, five, landmarks.points),
                           repeats),
        "quality": timed(lambda: measure_quality(five, landmarks.points, crop), repeats),
        "embedding": timed(lambda: pipeline.embed_crop(crop), repeats),
        "liveness": timed(lambda: liveness.judge(frame, detection.box), repeats),
        "matching (1,000 templates)": timed(lambda: matcher.decide(probe, 0.5, 0.0), repeats),
    }
    total = timed(whole, repeats)
    # Each stage alone runs with its model hot in the cache; in the whole frame they take
    # turns, and the pipeline's own bookkeeping is there too. Medians only: p90s do not add.
    stages["between the stages (the whole less their sum)"] = {"median_ms": round(
        total["median_ms"] - sum(stage["median_ms"] for stage in stages.values()), 3)}
    decode = timed(lambda: cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR),
                   repeats)
    return {"frame": "640x480, one face (bench_pipeline.one_face_frame)", "faces": whole(),
            "interocular_px": round(float(np.linalg.norm(five[1] - five[0])), 1),
            "settings": process, "stages": stages, "whole": total,
            "fps": round(1000 / total["median_ms"], 1),
            "decode JPEG 640x480 (USB camera MJPEG; not in the whole frame)": decode}


def still_path(pipeline, repeats: int) -> dict:
    """``thorough=True`` as the CLI runs it: a 250x250 LFW photo stage by stage, and the
    640x480 frames whole."""
    photo = read_image(STILL_PHOTO)[0]
    detection = max(pipeline.detector.detect(photo, thorough=True), key=lambda d: d.area)
    landmarks = pipeline.mesh.locate(photo, detection)
    five = landmarks.five_points()
    crop = pipeline.aligner.align(photo, five, landmarks.points).crop
    stages = {
        "read and decode the file": timed(lambda: read_image(STILL_PHOTO), repeats),
        "detection (thorough)": timed(lambda: pipeline.detector.detect(photo, thorough=True),
                                      repeats),
        "landmarks (FaceMesh)": timed(lambda: pipeline.mesh.locate(photo, detection), repeats),
        "alignment": timed(lambda: pipeline.aligner.align(photo, five, landmarks.points),
                           repeats),
        "quality": timed(lambda: measure_quality(five, landmarks.points, crop), repeats),
        "embedding": timed(lambda: pipeline.embed_crop(crop), repeats),
    }
    photo_whole = timed(lambda: pipeline.process(read_image(STILL_PHOTO)[0], thorough=True),
                        repeats)
    one, two = one_face_frame(), several_faces_frame()
    frames = {}
    for name, frame in (("640x480, one face", one), ("640x480, two faces", two)):
        frames[name] = {"faces": len(pipeline.process(frame, thorough=True)),
                        "detection (thorough)": timed(
                            lambda f=frame: pipeline.detector.detect(f, thorough=True), repeats),
                        "whole": timed(lambda f=frame: pipeline.process(f, thorough=True),
                                       repeats)}
    return {"photo": str(STILL_PHOTO.relative_to(ROOT)), "photo_size": list(photo.shape[:2]),
            "faces": len(pipeline.process(photo, thorough=True)), "stages": stages,
            "whole (read, decode, thorough pipeline)": photo_whole, "frames": frames}


def threads_in_force() -> dict:
    return {"core": int(os.environ[PINNED]), "affinity": sorted(os.sched_getaffinity(0)),
            "interpreter_threads": default_num_threads(), "opencv_threads": cv2.getNumThreads(),
            **{key: os.environ.get(key) for key in ONE_THREAD if key != "FACEGATE_THREADS"}}


def run(repeats: int) -> dict:
    cv2.setNumThreads(1)
    pipeline = FacePipeline.from_models_dir()
    liveness = LivenessCheck(liveness_loader())
    gallery = np.random.default_rng(0).standard_normal((1000, pipeline.embedder.dim))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    matcher = Matcher([f"p{i // 2}" for i in range(1000)], gallery.astype(np.float32))
    return {"machine": {"cpu": _cpu_model(), "cores_on_machine": os.cpu_count(),
                        "platform": platform.platform(), "python": platform.python_version(),
                        "numpy": np.__version__, "opencv": cv2.__version__},
            "threads": threads_in_force(), "repeats": repeats,
            "load_average_start": round(os.getloadavg()[0], 2),
            "embedder": pipeline.model_name, "liveness": liveness.model_name,
            "door_frame": door_frame(pipeline, liveness, matcher, LoopSettings(), repeats),
            "still_path": still_path(pipeline, repeats)}


def budget(report: dict) -> dict:
    """The 15 fps budget against the door frame here: ``headroom`` is how many times slower
    than this core a core may be and still keep up on one thread."""
    whole = report["door_frame"]["whole"]["median_ms"]
    per_frame = 1000 / FPS_TARGET
    return {"fps": FPS_TARGET, "budget_ms": round(per_frame, 1), "door_frame_ms": whole,
            "headroom": round(per_frame / whole, 2)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 runs a figure, not 200")
    parser.add_argument("--core", type=int, default=0, help="the core to pin to (0)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    pin_and_reexec(args.core, argv)
    report = run(30 if args.quick else 200)
    report["load_average_end"] = round(os.getloadavg()[0], 2)
    report["budget"] = budget(report)
    print("\n".join(one_core_table(report)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
