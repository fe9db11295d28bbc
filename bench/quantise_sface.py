"""Quantise SFace to int8, from the float saved_model that onnx2tf wrote.

    TF_PYTHON bench/quantise_sface.py --saved-model WORK/onnx2tf --out DIR [--crops CROPS.npy]

Runs with TensorFlow (the ``train`` extra), never on the door; ``bench/embedder_variants.py``
calls it. Writes ``DIR/face_recognition_sface_2021dec_int8dr.tflite`` (dynamic range: int8
weights, float activations) and, given ``--crops`` (aligned face crops as the model takes them,
RGB 0..255, N x 112 x 112 x 3 float32), ``DIR/face_recognition_sface_2021dec_int8minmax.tflite``:
the first full-integer recipe, TensorFlow's converter as it comes. Kept to show why it was slow:
its 27 int8 PRELU nodes are not delegated to XNNPACK (31.6 ms a face against 5.6 ms for int8dr).
The committed full-integer file, which XNNPACK runs whole, is made by ``python -m
training.sface_int8``. Both keep float32 input and output, so the device's embedder runs them
unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

STEM = "face_recognition_sface_2021dec"


def converter(saved_model: Path):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    return conv


def dynamic_range(saved_model: Path) -> bytes:
    return converter(saved_model).convert()


def full_integer(saved_model: Path, crops: np.ndarray) -> bytes:
    import tensorflow as tf

    conv = converter(saved_model)

    def representative():
        # Real aligned faces, so the activation ranges are those a door sees.
        for crop in crops:
            yield [crop[None].astype(np.float32)]

    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv.convert()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--saved-model", type=Path, required=True)
    parser.add_argument("--crops", type=Path, help="also write the min/max full-integer file")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{STEM}_int8dr.tflite").write_bytes(dynamic_range(args.saved_model))
    if args.crops:
        crops = np.load(args.crops)
        (args.out / f"{STEM}_int8minmax.tflite").write_bytes(
            full_integer(args.saved_model, crops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
