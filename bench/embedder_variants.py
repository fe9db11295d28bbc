"""SFace at float32, float16 and int8, built from the same ONNX as the product's model.

float16 and int8dr (the default) are committed in ``models/``. The others need TensorFlow
(the ``train`` extra):
``python -m training.convert_sface --keep-work`` leaves onnx2tf's float32 TFLite and saved
model, and ``bench/quantise_sface.py`` quantises the saved model to int8 (dynamic range, and
full integer calibrated on aligned crops of ``../shared/data/wild``, people who are not in
the accuracy test). Each variant gets a models folder of its own (the same detector, mesh and
a copy of the float16 card with the name, file and SHA-256 changed), so ``FacePipeline``
loads it by name like any other embedder. Built files are cached under ``var/``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

from device.vision.image_io import read_image
from device.vision.models import DEFAULT_EMBEDDER, DETECTOR, LANDMARKS, default_models_dir
from device.vision.pipeline import FacePipeline
from training.convert_sface import MODEL_STEM

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = {
    "float32": "float32 weights and activations (onnx2tf)",
    "float16": "float16 weights, float32 activations (shipped as the reference)",
    "int8dr": "int8 weights, float activations (dynamic range; the default)",
    "int8": "int8 weights and activations (full integer, calibrated)",
}
COMMITTED = frozenset({"float16", "int8dr"})  # both ship in models/
DEFAULT_PRECISION = DEFAULT_EMBEDDER.rsplit("_", 1)[1]  # the door's: "int8dr"
NOT_BUILT = "not built (needs the train extra: pass --tf-python, e.g. .venv-train/bin/python)"


def calibration_crops(folder: Path, limit: int = 200) -> np.ndarray:
    """Aligned crops of every face in ``folder``'s images, RGB 0..255, as SFace takes them."""
    pipeline = FacePipeline.from_models_dir()
    crops = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".png")):
        frame, _ = read_image(path)
        crops += [cv2.cvtColor(f.aligned, cv2.COLOR_BGR2RGB) for f in
                  pipeline.process(frame, thorough=True)]
        if len(crops) >= limit:
            break
    return np.asarray(crops[:limit], np.float32)


def build(tf_python: Path, cache: Path, wheel: Path, calibration: Path) -> None:
    """Write float32, int8dr and int8 TFLite files into ``cache/variants`` (minutes)."""
    work, out = cache / "variants" / "work", cache / "variants"
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(tf_python), "-m", "training.convert_sface", "--out", str(work / "out"),
                    "--keep-work", str(work), "--wheel", str(wheel)], check=True, cwd=ROOT)
    shutil.copyfile(work / "onnx2tf" / f"{MODEL_STEM}_float32_float32.tflite",
                    out / f"{MODEL_STEM}_float32.tflite")
    crops = out / "calibration_crops.npy"
    np.save(crops, calibration_crops(calibration))
    subprocess.run([str(tf_python), str(ROOT / "bench" / "quantise_sface.py"), "--saved-model",
                    str(work / "onnx2tf"), "--crops", str(crops), "--out", str(out)],
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
