"""SFace at float32, float16 and int8, built from the same ONNX as the product's model.

float16, int8dr (the default) and int8 (int8 weights and activations, PReLU in float32; made by
``python -m training.sface_int8``) are committed in ``models/``. float32 needs TensorFlow (the
``train`` extra):
``python -m training.convert_sface --keep-work`` leaves onnx2tf's float32 TFLite and saved
model, and ``bench/quantise_sface.py`` quantises the saved model to int8 (dynamic range). Each
variant gets a models folder of its own (the same detector, mesh and
a copy of the float16 card with the name, file and SHA-256 changed), so ``FacePipeline``
loads it by name like any other embedder. Built files are cached under ``var/``.

Run as a script it times the committed SFace files, and the fused liveness model at float32
against its int8 variant, per face, interleaved, at 1 and 2 threads
(``python bench/embedder_variants.py --rounds 100``, ``bench/results/embedder-speed.json``);
with ``--bootstrap`` it says whether two embedders' open-set FNIR differ beyond noise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # also run as a script: python bench/embedder_variants.py

from device.vision.image_io import read_image  # noqa: E402
from device.vision.models import (  # noqa: E402
    DEFAULT_EMBEDDER,
    DETECTOR,
    LANDMARKS,
    default_models_dir,
)
from device.vision.pipeline import FacePipeline  # noqa: E402
from training.convert_sface import MODEL_STEM  # noqa: E402

PRECISIONS = {
    "float32": "float32 weights and activations (onnx2tf)",
    "float16": "float16 weights, float32 activations (shipped as the reference)",
    "int8dr": "int8 weights, float activations (dynamic range)",
    "int8dr_xnnpack": "int8dr with float depthwise weights: every node in XNNPACK (the default; "
                      "training/sface_xnnpack.py)",
    "int8": "int8 weights and activations (full integer, calibrated; training/sface_int8.py)",
}
COMMITTED = frozenset({"float16", "int8dr", "int8dr_xnnpack", "int8"})  # these ship in models/
DEFAULT_PRECISION = DEFAULT_EMBEDDER.removeprefix(f"{MODEL_STEM}_")  # the door's
NOT_BUILT = "not built (needs the train extra: pass --tf-python, e.g. .venv-train/bin/python)"


def build(tf_python: Path, cache: Path, wheel: Path, calibration: Path) -> None:
    """Write float32 and int8dr TFLite files into ``cache/variants`` (minutes).

    ``calibration`` is no longer used: the full-integer file is committed (``models/``)."""
    work, out = cache / "variants" / "work", cache / "variants"
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(tf_python), "-m", "training.convert_sface", "--out", str(work / "out"),
                    "--keep-work", str(work), "--wheel", str(wheel)], check=True, cwd=ROOT)
    shutil.copyfile(work / "onnx2tf" / f"{MODEL_STEM}_float32_float32.tflite",
                    out / f"{MODEL_STEM}_float32.tflite")
    subprocess.run([str(tf_python), str(ROOT / "bench" / "quantise_sface.py"), "--saved-model",
                    str(work / "onnx2tf"), "--out", str(out)],
                   check=True, cwd=ROOT)
    shutil.rmtree(work)  # 150 MB of intermediate files


def models_dir(precision: str, cache: Path) -> Path | None:
    """A models folder holding this precision's SFace under its own name, or None if unbuilt.

    The committed precisions are ``models/`` itself.
    """
    if precision in COMMITTED:
        return default_models_dir()
    source = cache / "variants" / f"{MODEL_STEM}_{precision}.tflite"
    if not source.is_file():
        return None
    folder = cache / "variants" / f"models-{precision}"
    folder.mkdir(parents=True, exist_ok=True)
    base = default_models_dir()
    for name in (DETECTOR, LANDMARKS):
        for suffix in (".tflite", ".json"):
            shutil.copyfile(base / f"{name}{suffix}", folder / f"{name}{suffix}")
    card = json.loads((base / f"{DEFAULT_EMBEDDER}.json").read_text())
    mesh = card["files"]["canonical_mesh"]
    shutil.copyfile(base / mesh, folder / mesh)
    name = f"{MODEL_STEM}_{precision}"
    shutil.copyfile(source, folder / f"{name}.tflite")
    card.update(name=name, file=f"{name}.tflite", precision=PRECISIONS[precision],
                sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
                produced_by="bench/embedder_variants.py (benchmark only, not shipped)")
    (folder / f"{name}.json").write_text(json.dumps(card, indent=2))
    return folder


def embedder_name(precision: str) -> str:
    return f"{MODEL_STEM}_{precision}"


# -- Speed of the committed embedders, one process, interleaved -------------------------------


def time_embedders(names: list[str], crops: list[np.ndarray], threads: int, rounds: int,
                   models: Path | None = None) -> dict[str, list[float]]:
    """Seconds per face for each embedder in ``names``, taken in turn face by face for
    ``rounds`` passes over ``crops`` (BGR, aligned), so a burst of other work on the machine
    falls on every model alike."""
    from device.vision.embedder import FaceEmbedder

    models = models or default_models_dir()
    embedders = {name: FaceEmbedder(models / f"{name}.tflite", num_threads=threads)
                 for name in names}
    for embedder in embedders.values():  # first runs pack weights and warm caches
        embedder.embed(crops[:3])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for crop in crops:
            for name, embedder in embedders.items():
                started = time.perf_counter()
                embedder.embed([crop])
                seconds[name].append(time.perf_counter() - started)
    return seconds


def speed_table(rounds: int = 20, folder: Path = ROOT / "tests" / "data" / "people",
                names: tuple[str, ...] = (f"{MODEL_STEM}_int8dr", f"{MODEL_STEM}_int8",
                                          f"{MODEL_STEM}_float16")) -> dict:
    """Median and 90th percentile per face of each committed SFace at 1 and 2 threads."""
    pipeline = FacePipeline.from_models_dir()
    crops = [face.aligned for path in sorted(folder.rglob("*.jpg"))
             for face in pipeline.process(read_image(path)[0])]
    names = tuple(n for n in names if (default_models_dir() / f"{n}.tflite").is_file())
    report = {"faces": len(crops), "rounds": rounds, "load_average": os.getloadavg()[0],
              "threads": {}}
    for threads in (1, 2):
        seconds = time_embedders(list(names), crops, threads, rounds)
        report["threads"][threads] = {
            name: {"median_ms": round(float(np.median(s)) * 1e3, 3),
                   "p90_ms": round(float(np.percentile(s, 90)) * 1e3, 3), "runs": len(s)}
            for name, s in seconds.items()}
    report["load_average_after"] = os.getloadavg()[0]
    return report


def liveness_speed_table(rounds: int = 100, folder: Path = ROOT / "tests" / "data" / "people",
                         int8_dir: Path = ROOT / "var" / "liveness-int8") -> dict | None:
    """The same for the fused liveness model: the committed float32 file against the int8 one
    ``python -m training.liveness_export`` writes into ``int8_dir`` (None when it is not there).
    """
    from device.vision.liveness import LivenessModel
    from device.vision.models import load_card

    stem = "liveness_minifasnet_fused_paddev_2026dec"
    where = {f"{stem}_float32": default_models_dir(), f"{stem}_int8": int8_dir}
    if not (int8_dir / f"{stem}_int8.tflite").is_file():
        return None
    names = list(where)
    pipeline = FacePipeline.from_models_dir()
    frames = [read_image(path)[0] for path in sorted(folder.rglob("*.jpg"))]
    boxes = [(frame, face.box) for frame in frames for face in pipeline.process(frame)]
    report = {"faces": len(boxes), "rounds": rounds, "load_average": os.getloadavg()[0],
              "threads": {}}
    for threads in (1, 2):
        models = {name: LivenessModel.from_card(load_card(name, where[name]),
                                                num_threads=threads) for name in names}
        crops = {name: [model.crops(frame, box) for frame, box in boxes]
                 for name, model in models.items()}
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(rounds):
            for i in range(len(boxes)):
                for name, model in models.items():
                    started = time.perf_counter()
                    model.class_probabilities(crops[name][i])
                    seconds[name].append(time.perf_counter() - started)
        report["threads"][threads] = {
            name: {"median_ms": round(float(np.median(s)) * 1e3, 3),
                   "p90_ms": round(float(np.percentile(s, 90)) * 1e3, 3), "runs": len(s)}
            for name, s in seconds.items()}
    return report


# -- Is a difference in the open-set tail noise? ----------------------------------------------


def open_set_from_cache(cache: Path, name: str):
    """``training.evaluate``'s open-set scores from the embeddings it cached for ``name``."""
    from training.evaluate import KNOWN_LABEL_NOISE, open_set_scores

    def load(folder: str):
        data = np.load(cache / f"{name}-similarity-mirrorFalse-{folder}.npz")
        return data["embeddings"], data["found"], data["labels"], list(data["paths"])

    embeddings, found, labels, _ = load("lfw-a")
    strangers, stranger_found, _, paths = load("lfw-a-singles")
    noise = np.array([Path(p).name in KNOWN_LABEL_NOISE for p in paths])
    return open_set_scores(embeddings, found, labels, strangers, stranger_found,
                           stranger_excluded=noise), labels


def paired_fnir_bootstrap(a, b, labels: np.ndarray, target: float, margin: float = 0.02,
                          draws: int = 1000, seed: int = 0) -> dict:
    """FNIR at FPIR ``target`` of two embedders' open-set scores and a paired bootstrap of
    ``b - a``: people (with all their genuine probes) and strangers drawn with replacement, the
    same draw for both, each threshold set again on the drawn strangers."""
    import dataclasses

    def fnir(scores, genuine=None, strangers=None):
        if genuine is not None:
            scores = dataclasses.replace(
                scores, genuine_best=scores.genuine_best[genuine],
                genuine_second=scores.genuine_second[genuine],
                genuine_right=scores.genuine_right[genuine],
                stranger_best=scores.stranger_best[strangers],
                stranger_second=scores.stranger_second[strangers])
        return scores.fnir(scores.threshold_at_fpir(target, -1.0, margin), margin)

    person = labels[a.genuine_rows]
    rows = {p: np.flatnonzero(person == p) for p in np.unique(person)}
    people = np.array(list(rows))
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(draws):
        genuine = np.concatenate([rows[p] for p in rng.choice(people, len(people))])
        strangers = rng.integers(0, len(a.stranger_best), len(a.stranger_best))
        differences.append(fnir(b, genuine, strangers) - fnir(a, genuine, strangers))
    low, high = np.percentile(differences, [2.5, 97.5])
    return {"fpir": target, "fnir_a": round(fnir(a), 4), "fnir_b": round(fnir(b), 4),
            "difference": round(fnir(b) - fnir(a), 4),
            "interval_95": [round(float(low), 4), round(float(high), 4)], "draws": draws}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time the committed SFace files and the fused liveness model's float32 and "
        "int8 files per face (ms), interleaved, 1 and 2 threads.")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--bootstrap", nargs=4, metavar=("CACHE_A", "NAME_A", "CACHE_B", "NAME_B"),
                        help="instead: is B's open-set FNIR different from A's? (training.evaluate "
                        "caches of both; prints FNIR at FPIR 1%% and 0.1%% with a 95%% interval)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" /
                        "embedder-speed.json")
    args = parser.parse_args(argv)
    if args.bootstrap:
        cache_a, name_a, cache_b, name_b = args.bootstrap
        a, labels = open_set_from_cache(Path(cache_a), name_a)
        b, _ = open_set_from_cache(Path(cache_b), name_b)
        for target in (1e-2, 1e-3):
            print(json.dumps(paired_fnir_bootstrap(a, b, labels, target)))
        return 0
    report = speed_table(args.rounds)
    report["liveness"] = liveness_speed_table(args.rounds)  # None without the int8 file
    print(f"{'model':50s} {'threads':>7s} {'median ms':>10s} {'p90 ms':>8s}")
    liveness = report["liveness"]["threads"] if report["liveness"] else {}
    for threads, rows in [*report["threads"].items(), *liveness.items()]:
        for name, row in rows.items():
            print(f"{name:50s} {threads:7d} {row['median_ms']:10.2f} {row['p90_ms']:8.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
