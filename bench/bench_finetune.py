"""Fine-tuning speed of SFace: photos per second of one training step, CPU or GPU.

    .venv-train/bin/python bench/bench_finetune.py --data var/train/lfw-a \
        [--threads 1 2] [--json bench/results/finetune-speed-cpu.json]
    # on a CUDA machine (mixed float16, batch 100; docs/training.md, "On a GPU"):
    .venv-train/bin/python bench/bench_finetune.py --data DIR --gpu \
        --json bench/results/finetune-speed-gpu.json

One step is what ``train --init-from sface`` runs after its warm-up: augmented real crops,
forward, the COCO loss (or the triplet loss), backward through the units that train, RMSProp,
batch 100. Timed after warm-up steps, for the units the fine-tuning settings train (the top
3, the top 9, all 28) and each CPU thread count asked for; on a GPU, every setting in mixed
float16 as well as float32. Prints a Markdown table; writes every figure and the machine to
JSON. Needs the training environment (TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = [("coco", 3), ("coco", 9), ("coco", None), ("triplet", 9)]


def step_speed(data: Path, loss: str, top: int | None, steps: int, warmup: int,
               mixed_precision: bool) -> float:
    """Photos per second of ``steps`` fine-tuning steps, after ``warmup`` untimed ones."""
    import keras

    from training.data import CropSet, FaceBatches
    from training.train import (
        TrainConfig,
        build_models,
        compile_for_training,
        load_embedder_weights,
        set_trainable,
    )

    crops = CropSet.load(data)
    config = TrainConfig(backbone="sface", init_from="sface", loss=loss, epochs=1,
                         train_top_units=top, freeze_batchnorm=True,
                         mixed_precision=mixed_precision)
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        batches = FaceBatches(crops, batch_size=100, workers=2,
                              people_per_batch=25 if loss == "triplet" else 0)
        embedder, trainer, _ = build_models(config, len(crops.names))
        load_embedder_weights(embedder, "sface")
        set_trainable(embedder, config, frozen=False)
        compile_for_training(trainer, config, steps + warmup)
        for index in range(warmup):
            trainer.train_on_batch(*batches[index % len(batches)])
        started = time.perf_counter()
        for index in range(steps):
            trainer.train_on_batch(*batches[(warmup + index) % len(batches)])
        return steps * 100 / (time.perf_counter() - started)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "var/train/lfw-a",
                        help="a prepared folder (python -m training prepare)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="CPU thread counts to time (ignored with --gpu)")
    parser.add_argument("--gpu", action="store_true", help="time on the GPU, float32 and "
                        "mixed float16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-head", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if not args.gpu and len(args.threads) > 1:
        # TensorFlow fixes its thread pools once per process: one process per count.
        import subprocess
        import tempfile

        print(TABLE_HEAD, flush=True)
        report = None
        for threads in args.threads:
            with tempfile.NamedTemporaryFile(suffix=".json") as part:
                subprocess.run([sys.executable, __file__, "--data", str(args.data), "--threads",
                                str(threads), "--steps", str(args.steps), "--warmup",
                                str(args.warmup), "--json", part.name, "--no-head"],
                               check=True)
                measured = json.loads(Path(part.name).read_text())
            if report is None:
                report = measured
            else:
                report["rows"] += measured["rows"]
        _write(report, args.json)
        return 0

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if args.gpu and not gpus:
        print("error: --gpu, but TensorFlow sees no GPU", file=sys.stderr)
        return 1
    if args.gpu:
        runs = [("GPU float32", False), ("GPU mixed float16", True)]
    else:
        tf.config.set_visible_devices([], "GPU")
        threads = args.threads[0]
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        runs = [(f"CPU, {threads} thread{'s' if threads > 1 else ''}", False)]
    report = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "python": platform.python_version(),
                          "tensorflow": tf.__version__,
                          "gpus": [tf.config.experimental.get_device_details(g).get(
                              "device_name", g.name) for g in gpus] if args.gpu else []},
              "batch": 100, "steps": args.steps, "rows": []}
    if not args.no_head:
        print(TABLE_HEAD, flush=True)
    for device, mixed in runs:
        for loss, top in SETTINGS:
            speed = step_speed(args.data, loss, top, args.steps, args.warmup, mixed)
            row = {"loss": loss, "units": top or "all", "device": device,
                   "photos_per_second": round(speed, 1)}
            report["rows"].append(row)
            print(f"| {loss} | {row['units']} | {device} | {row['photos_per_second']} |",
                  flush=True)
    _write(report, args.json)
    return 0


TABLE_HEAD = "| loss | units trained | device | photos/s |\n|---|---|---|---|"


def _write(report: dict, path: Path | None) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
