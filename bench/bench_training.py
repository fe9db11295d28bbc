"""Training throughput per backbone, and the exported embedders' speed at the door.

    .venv-train/bin/python bench/bench_training.py --data var/train/lfw-a \
        [--json bench/results/training-speed.json]

1. Training: photos per second of one training step (forward, COCO loss, backward, RMSProp)
   on real prepared crops with the full augmentation, batch 100, after warm-up steps, for
   each backbone, with the CPU threads given (or every GPU when there is one).
2. The door: milliseconds per embedding of each face embedder in ``models/``, run by the
   device's ``FaceEmbedder`` (the same interpreter and threads as the daemon) on a real
   aligned crop.

Prints Markdown tables; writes every figure and the machine to JSON. Needs the training
environment (TensorFlow) for the first part.
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

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from device.vision.embedder import FaceEmbedder  # noqa: E402
from device.vision.models import default_models_dir, list_cards  # noqa: E402
from training.data import CropSet, FaceBatches  # noqa: E402

BACKBONES = [("mobilefacenet", 0.5), ("mobilefacenet", 1.0), ("resnet18", 1.0)]


def training_speed(data: Path, steps: int, warmup: int) -> list[dict]:
    import keras

    from training.train import TrainConfig, build_models, compile_for_training

    crops = CropSet.load(data)
    batches = FaceBatches(crops, batch_size=100, workers=2)
    rows = []
    for name, width in BACKBONES:
        config = TrainConfig(backbone=name, width=width, epochs=1)
        embedder, trainer, _ = build_models(config, len(crops.names))
        compile_for_training(trainer, config, steps + warmup)
        for index in range(warmup):
            trainer.train_on_batch(*batches[index])
        started = time.perf_counter()
        for index in range(steps):
            trainer.train_on_batch(*batches[warmup + index])
        seconds = time.perf_counter() - started
        rows.append({"backbone": name, "width": width, "params": int(embedder.count_params()),
                     "photos_per_second": round(steps * 100 / seconds, 1),
                     "steps": steps, "backend": keras.backend.backend()})
        print(f"| {name} | {width} | {rows[-1]['params']:,} | "
              f"{rows[-1]['photos_per_second']} |", flush=True)
    return rows


def door_speed(models_dir: Path, crop_bgr: np.ndarray, runs: int) -> list[dict]:
    rows = []
    for card in list_cards(models_dir):
        if card.task != "face_embedding":
            continue
        feed = card.card["input"]
        embedder = FaceEmbedder(card.path, colour=feed.get("colour", "RGB"),
                                mean=feed.get("mean", 0.0), std=feed.get("std", 1.0))
        for _ in range(10):
            embedder.embed([crop_bgr])
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            embedder.embed([crop_bgr])
            times.append((time.perf_counter() - started) * 1000)
        rows.append({"model": card.name, "bytes": card.path.stat().st_size,
                     "median_ms": round(statistics.median(times), 2),
                     "p90_ms": round(float(np.percentile(times, 90)), 2)})
        print(f"| {card.name} | {rows[-1]['bytes'] / 1e6:.2f} MB | {rows[-1]['median_ms']} | "
              f"{rows[-1]['p90_ms']} |", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "var/train/lfw-a",
                        help="a prepared folder (python -m training prepare)")
    parser.add_argument("--models-dir", type=Path, default=default_models_dir())
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=300, help="embeddings timed per model")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    report = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "python": platform.python_version()}}
    if not args.skip_training:
        print("| backbone | width | parameters | photos/s (training) |\n|---|---|---|---|")
        report["training"] = training_speed(args.data, args.steps, args.warmup)
    crop = CropSet.load(args.data).image(0)[:, :, ::-1].copy()
    print("\n| embedder | size | median ms | p90 ms |\n|---|---|---|---|")
    report["door"] = door_speed(args.models_dir, crop, args.runs)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
