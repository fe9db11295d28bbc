"""Minivision's MiniFASNet anti-spoofing networks, rebuilt in Keras from their ONNX files.

The two trained networks (``../shared/third_party/silent-face-anti-spoofing/``, Apache-2.0,
read its ``SOURCE.md``) come as ONNX graphs of a dozen operator kinds: convolutions with the
batch norms already folded in, PReLU, residual additions, squeeze-and-excitation (V1SE),
one flatten, two matrix products around a batch norm. :func:`keras_from_onnx` walks the graph
node by node and builds the same network as a Keras functional model whose layers start with
the ONNX weights, so that

- the pretrained networks convert to TFLite through the same TensorFlow converter as every
  other model of the project (``training/liveness.py export``), and
- fine-tuning on pad-dev trains real layers, not a frozen graph.

The rebuilt model takes what the door gives it: ``[n, 80, 80, 3]`` float32, **NHWC, BGR,
0..255, no normalisation** (upstream feeds the BGR crop as it is), and returns the softmax of
the three classes; class 1 is a live face, 0 and 2 are upstream's two attack kinds.
:func:`parity` checks it against onnxruntime on real crops.

Only the operators these two graphs use are handled; anything else stops with its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
UPSTREAM = SHARED / "third_party" / "silent-face-anti-spoofing"
INPUT_SIZE = 80
LIVE_CLASS = 1


@dataclass(frozen=True)
class Network:
    """One upstream network: its ONNX file and the crop it was trained on."""

    key: str  # short name used in file names and cards
    onnx_file: Path
    crop_scale: float  # the face box is scaled by this about its centre (upstream's rule)

    @property
    def pth_file(self) -> Path:
        return UPSTREAM / "resources" / "anti_spoof_models" / (self.onnx_file.stem + ".pth")


NETWORKS = {
    "v2": Network("v2", UPSTREAM / "onnx" / "2.7_80x80_MiniFASNetV2.onnx", 2.7),
    "v1se": Network("v1se", UPSTREAM / "onnx" / "4_0_0_80x80_MiniFASNetV1SE.onnx", 4.0),
}


def keras_from_onnx(onnx_path: Path, *, name: str | None = None) -> Any:
    """The ONNX graph as a Keras model (NHWC in, softmax out) with the ONNX weights loaded."""
    import keras
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="crop")
    tensors: dict[str, Any] = {graph.input[0].name: inputs}
    pending_weights: list[tuple[Any, list[np.ndarray]]] = []
    # The Shape/Gather/Unsqueeze/Concat chain only computes the flatten's target shape.
    shape_only = {"Constant", "Shape", "Gather", "Unsqueeze", "Concat"}

    for index, node in enumerate(graph.node):
        if node.op_type in shape_only:
            continue
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        source = tensors[node.input[0]]
        layer_name = f"{node.op_type.lower()}_{index}"
        if node.op_type == "Conv":
            kernel = weights[node.input[1]]  # (out, in / group, kh, kw)
            bias = weights[node.input[2]] if len(node.input) > 2 else None
            layer, layer_weights = _convolution(kernel, bias, attributes, layer_name)
            pads = attributes.get("pads", [0, 0, 0, 0])
            if any(pads):
                # ONNX pads both sides by the same amount; Keras "same" with stride 2 would
                # pad only the bottom and right, shifting every feature by half a pixel.
                source = keras.layers.ZeroPadding2D(((pads[0], pads[2]), (pads[1], pads[3])),
                                                    name=f"pad_{index}")(source)
            out = layer(source)
            pending_weights.append((layer, layer_weights))
        elif node.op_type == "PRelu":
            slope = weights[node.input[1]].reshape(-1)
            layer = keras.layers.PReLU(shared_axes=[1, 2], name=layer_name)
            out = layer(source)
            pending_weights.append((layer, [slope.reshape(1, 1, -1)]))
        elif node.op_type == "Add":
            out = keras.layers.Add(name=layer_name)([source, tensors[node.input[1]]])
        elif node.op_type == "Mul":
            # Squeeze-and-excitation: (n, h, w, c) * (n, 1, 1, c), broadcast.
            out = keras.layers.Lambda(lambda pair: pair[0] * pair[1], name=layer_name)(
                [source, tensors[node.input[1]]])
        elif node.op_type == "GlobalAveragePool":
            out = keras.layers.GlobalAveragePooling2D(keepdims=True, name=layer_name)(source)
        elif node.op_type == "Relu":
            out = keras.layers.ReLU(name=layer_name)(source)
        elif node.op_type == "Sigmoid":
            out = keras.layers.Activation("sigmoid", name=layer_name)(source)
        elif node.op_type == "Reshape":
            # The flatten before the embedding: the map is 1x1 here (a 5x5 depthwise "GDC"
            # conv ends the trunk), so NCHW and NHWC flatten to the same order.
            if tuple(source.shape[1:3]) != (1, 1):
                raise ValueError(f"flatten of a {source.shape} map: channel order would differ")
            out = keras.layers.Flatten(name=layer_name)(source)
        elif node.op_type == "MatMul":
            matrix = weights[node.input[1]]  # (in, out)
            layer = keras.layers.Dense(matrix.shape[1], use_bias=False, name=layer_name)
            out = layer(source)
            pending_weights.append((layer, [matrix]))
        elif node.op_type == "BatchNormalization":
            gamma, beta, mean, variance = (weights[n] for n in node.input[1:5])
            layer = keras.layers.BatchNormalization(
                epsilon=float(attributes.get("epsilon", 1e-5)), name=layer_name)
            out = layer(source)
            pending_weights.append((layer, [gamma, beta, mean, variance]))
        else:
            raise ValueError(f"{onnx_path.name}: ONNX operator {node.op_type} is not handled")
        tensors[node.output[0]] = out

    logits = tensors[graph.output[0].name]
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    model = keras.Model(inputs, probabilities, name=name or onnx_path.stem.replace(".", "_"))
    for layer, layer_weights in pending_weights:
        layer.set_weights([np.asarray(w, np.float32) for w in layer_weights])
    return model


def _convolution(kernel: np.ndarray, bias: np.ndarray | None, attributes: dict[str, Any],
                 name: str) -> tuple[Any, list[np.ndarray]]:
    import keras

    out_channels, in_per_group, height, width = kernel.shape
    group = int(attributes.get("group", 1))
    strides = tuple(attributes.get("strides", [1, 1]))
    if tuple(attributes.get("dilations", [1, 1])) != (1, 1):
        raise ValueError("dilated convolutions are not handled")
    use_bias = bias is not None
    if group == 1:
        layer = keras.layers.Conv2D(out_channels, (height, width), strides=strides,
                                    padding="valid", use_bias=use_bias, name=name)
        layer_weights = [kernel.transpose(2, 3, 1, 0)]
    elif in_per_group == 1 and group == out_channels:
        layer = keras.layers.DepthwiseConv2D((height, width), strides=strides, padding="valid",
                                             use_bias=use_bias, name=name)
        layer_weights = [kernel.transpose(2, 3, 0, 1)]  # (kh, kw, channels, 1)
    else:
        raise ValueError(f"grouped convolution with {group} groups is not handled")
    if use_bias:
        layer_weights.append(bias)
    return layer, layer_weights


def onnx_probabilities(onnx_path: Path, crops_bgr: np.ndarray) -> np.ndarray:
    """Upstream's own run: onnxruntime on NCHW BGR 0..255, softmax of the logits."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits = np.concatenate([
        session.run(None, {name: crop.astype(np.float32).transpose(2, 0, 1)[None]})[0]
        for crop in crops_bgr])
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def parity(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """How far two sets of class probabilities are apart (the largest difference counts)."""
    difference = np.abs(reference - candidate)
    return {"max_probability_difference": float(difference.max()),
            "max_live_difference": float(difference[:, LIVE_CLASS].max()),
            "decisions_differing_at_0_5": int(np.sum(
                (reference[:, LIVE_CLASS] >= 0.5) != (candidate[:, LIVE_CLASS] >= 0.5)))}
