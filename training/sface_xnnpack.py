"""SFace with int8 weights where XNNPACK takes them, and float depthwise weights where it does not.

    python -m training.sface_xnnpack --out models/      # make models-xnnpack; seconds

The default embedder, ``face_recognition_sface_2021dec_int8dr`` (dynamic-range int8 weights,
float activations), leaves its 11 depthwise convolutions outside XNNPACK in ai-edge-litert
2.3: XNNPACK has no kernel for a depthwise convolution with int8 weights and float input, so
TFLite's own hybrid kernels run them (quantising each input to int8 on the fly), one delegate
partition between each. Here the int8 weights of exactly those 11 tensors are turned back into
the float32 values they stand for (``q * scale``, per channel), so every node is XNNPACK's;
everything else, weights and structure, is the int8dr file's byte for byte. The depthwise
layers then compute in float on the values int8dr dequantises anyway, without the on-the-fly
quantisation of their inputs: the embeddings move by a cosine of about 0.998 from int8dr's,
and the file grows by 0.1 MB.

Writes ``OUT/face_recognition_sface_2021dec_int8dr_xnnpack.tflite`` (the card is written by
hand, with the figures of ``make eval`` and ``make calibrate``). Needs TensorFlow for its
flatbuffer tools (the ``train`` extra); deterministic: the same int8dr file gives the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

SOURCE = "face_recognition_sface_2021dec_int8dr"
OUT_NAME = "face_recognition_sface_2021dec_int8dr_xnnpack"


def float_depthwise(source: Path, out: Path) -> int:
    """Write ``source`` with its int8 depthwise weights as float32; returns how many."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(source))
    depthwise = schema.BuiltinOperator.DEPTHWISE_CONV_2D
    changed = 0
    for subgraph in model.subgraphs:
        for operator in subgraph.operators:
            code = model.operatorCodes[operator.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) != depthwise:
                continue
            weights = subgraph.tensors[operator.inputs[1]]
            if weights.type != schema.TensorType.INT8:
                continue
            buffer = model.buffers[weights.buffer]
            values = np.frombuffer(bytes(buffer.data), np.int8).reshape(weights.shape)
            scale = np.asarray(weights.quantization.scale, np.float32)
            if scale.size > 1:  # per channel, along the quantised dimension
                shape = [1] * values.ndim
                shape[weights.quantization.quantizedDimension] = -1
                scale = scale.reshape(shape)
            restored = values.astype(np.float32) * scale
            buffer.data = np.frombuffer(restored.astype("<f4").tobytes(), np.uint8)
            weights.type = schema.TensorType.FLOAT32
            weights.quantization = None
            changed += 1
    flatbuffer_utils.write_model(model, str(out))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.sface_xnnpack",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("models"),
                        help=f"where {SOURCE}.tflite is (default: models/)")
    parser.add_argument("--out", type=Path, default=Path("models"),
                        help=f"folder for {OUT_NAME}.tflite (default: models/)")
    args = parser.parse_args(argv)
    out = args.out / f"{OUT_NAME}.tflite"
    changed = float_depthwise(args.models / f"{SOURCE}.tflite", out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"{out}: {changed} depthwise weight tensors in float32, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
