"""Quantise SFace to int8 two ways, from the float saved_model that onnx2tf wrote.

    TF_PYTHON bench/quantise_sface.py --saved-model WORK/onnx2tf --crops CROPS.npy --out DIR

Runs with TensorFlow (the ``train`` extra), never on the door; ``bench/embedder_variants.py``
calls it. Writes ``DIR/face_recognition_sface_2021dec_int8dr.tflite`` (dynamic range: int8
weights, float activations) and ``DIR/face_recognition_sface_2021dec_int8.tflite`` (full
integer: int8 weights and activations, calibrated on ``CROPS``, aligned face crops as the
model takes them, RGB 0..255, N x 112 x 112 x 3 float32). Both keep float32 input and output,
so the device's embedder runs them unchanged.
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
    parser.add_argument("--crops", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{STEM}_int8dr.tflite").write_bytes(dynamic_range(args.saved_model))
    crops = np.load(args.crops)
    (args.out / f"{STEM}_int8.tflite").write_bytes(full_integer(args.saved_model, crops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
