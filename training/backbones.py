"""Embedding networks: an aligned 112x112 RGB face (pixels 0..255) -> a unit 128-d vector.

Written with Keras 3 layers only, so the same code builds under the TensorFlow, JAX and
PyTorch backends and weights saved under one load under another (layer names are fixed by
the code, not by the backend).

- ``mobilefacenet``: MobileFaceNet (Chen et al., 2018), the edge network: inverted residual
  bottlenecks with PReLU and a global depthwise convolution instead of average pooling, which
  keeps where on the face a feature was seen. ``width`` scales every channel count.
- ``resnet18``/``resnet34``/``resnet50``: an ArcFace-style "IR" ResNet (BN-conv-BN-PReLU-conv
  residual units), the method's larger network; pretrain it on one dataset and fine-tune on
  another with ``train --init-from``.
- ``sface``: OpenCV Zoo's SFace, the door's default embedder, rebuilt layer for layer
  (``training/sface_keras.py``); ``train --init-from sface`` loads its published weights and
  fine-tunes it.

The pixel scaling lives inside the network, so the model card says "RGB, 0..255" and the
door feeds crops as they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
from keras import layers, ops

INPUT_SIZE = 112


@dataclass(frozen=True)
class BackboneSpec:
    """What ``build_backbone`` needs to rebuild a network before loading its weights."""

    name: str = "mobilefacenet"
    width: float = 1.0
    embedding_dim: int = 128
    weight_decay: float = 1e-3  # L2, the method's 1e-3 (see ``_decay``)
    dropout: float = 0.0  # before the embedding layer; ResNets only

    def to_dict(self) -> dict:
        return asdict(self)


@keras.saving.register_keras_serializable(package="facegate")
class L2Normalise(layers.Layer):
    """Unit-length rows, so a dot product between two embeddings is their cosine.

    Computed in float32 even under mixed precision: a float16 sum of squares overflows.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        inputs = ops.cast(inputs, "float32")
        return inputs / ops.sqrt(ops.maximum(ops.sum(inputs * inputs, axis=-1, keepdims=True),
                                             1e-12))


def _decay(spec: BackboneSpec) -> keras.regularizers.Regularizer | None:
    # Weight decay as in Caffe and TF-slim (the gradient gains wd * w), which is an L2 penalty
    # of wd / 2 * |w|^2; Keras' L2(l) adds l * |w|^2, hence the half.
    return keras.regularizers.L2(spec.weight_decay / 2) if spec.weight_decay else None


def _channels(base: int, width: float) -> int:
    # Multiples of 8 keep XNNPACK's and the GPU's vector units full.
    return max(8, int(round(base * width / 8)) * 8)


def _conv_bn(x, filters, kernel, stride, name, spec, *, act=True, depthwise=False,
             padding="same"):
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, padding=padding, use_bias=False,
                                   depthwise_regularizer=_decay(spec), name=f"{name}_dw")(x)
    else:
        x = layers.Conv2D(filters, kernel, stride, padding=padding, use_bias=False,
                          kernel_regularizer=_decay(spec), name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    if act:
        x = layers.PReLU(shared_axes=[1, 2], name=f"{name}_prelu")(x)
    return x


def _scaled_input(name: str) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="aligned_face_rgb")
    # (x - 127.5) / 128, as MobileFaceNet and ArcFace were trained.
    return inputs, layers.Rescaling(1 / 128, offset=-127.5 / 128, name=f"{name}_scale")(inputs)


def _embedding_head(x, spec: BackboneSpec, inputs) -> keras.Model:
    """A linear 128-d layer with BatchNorm, then unit length (MobileFaceNet's "linear" end)."""
    if spec.dropout:
        x = layers.Dropout(spec.dropout, name="embedding_dropout")(x)
    x = layers.Conv2D(spec.embedding_dim, 1, use_bias=False, kernel_regularizer=_decay(spec),
                      name="embedding_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="embedding_bn")(x)
    x = layers.Flatten(name="embedding_flat")(x)
    return keras.Model(inputs, L2Normalise(name="embedding")(x), name=spec.name)


def mobilefacenet(spec: BackboneSpec) -> keras.Model:
    inputs, x = _scaled_input("mfn")
    w = spec.width
    x = _conv_bn(x, _channels(64, w), 3, 2, "stem", spec)
    x = _conv_bn(x, _channels(64, w), 3, 1, "stem2", spec, depthwise=True)
    # (expansion, output channels, repeats, first stride), from the paper's Table 1.
    stages = [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)]
    block = 0
    for expansion, channels, repeats, stride in stages:
        for repeat in range(repeats):
            block += 1
            x = _bottleneck(x, expansion, _channels(channels, w), stride if repeat == 0 else 1,
                            f"b{block}", spec)
    x = _conv_bn(x, _channels(512, w), 1, 1, "expand", spec)
    # Global depthwise convolution: a learned weighting of the 7x7 positions.
    x = _conv_bn(x, None, 7, 1, "gdc", spec, act=False, depthwise=True, padding="valid")
    return _embedding_head(x, spec, inputs)


def _bottleneck(x, expansion, channels, stride, name, spec):
    shortcut = x
    inner = int(x.shape[-1]) * expansion
    y = _conv_bn(x, inner, 1, 1, f"{name}_expand", spec)
    y = _conv_bn(y, None, 3, stride, f"{name}_depthwise", spec, depthwise=True)
    y = _conv_bn(y, channels, 1, 1, f"{name}_project", spec, act=False)
    if stride == 1 and int(shortcut.shape[-1]) == channels:
        y = layers.Add(name=f"{name}_add")([shortcut, y])
    return y


RESNET_UNITS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 14, 3)}


def ir_resnet(spec: BackboneSpec) -> keras.Model:
    """ArcFace's IR ResNet: 112 -> 56 -> 28 -> 14 -> 7, then BN-dropout-linear-BN."""
    inputs, x = _scaled_input("resnet")
    x = _conv_bn(x, _channels(64, spec.width), 3, 1, "stem", spec)
    for stage, (units, channels) in enumerate(zip(RESNET_UNITS[spec.name],
                                                  (64, 128, 256, 512), strict=True)):
        for unit in range(units):
            x = _ir_unit(x, _channels(channels, spec.width), 2 if unit == 0 else 1,
                         f"s{stage + 1}u{unit + 1}", spec)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="final_bn")(x)
    # A 7x7 "kernel" over the whole map is the ArcFace fully-connected layer, kept as a
    # convolution so the embedding end is shared with MobileFaceNet.
    x = layers.DepthwiseConv2D(7, padding="valid", use_bias=False,
                               depthwise_regularizer=_decay(spec), name="final_gdc")(x)
    return _embedding_head(x, spec, inputs)


def _ir_unit(x, channels, stride, name, spec):
    y = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn0")(x)
    y = _conv_bn(y, channels, 3, 1, f"{name}_a", spec)
    y = _conv_bn(y, channels, 3, stride, f"{name}_b", spec, act=False)
    if stride == 1 and int(x.shape[-1]) == channels:
        shortcut = x
    else:
        shortcut = _conv_bn(x, channels, 1, stride, f"{name}_short", spec, act=False)
    return layers.Add(name=f"{name}_add")([shortcut, y])


def sface(spec: BackboneSpec) -> keras.Model:
    from training.sface_keras import sface as build_sface

    return build_sface(spec)


BACKBONES = {"mobilefacenet": mobilefacenet, **{name: ir_resnet for name in RESNET_UNITS},
             "sface": sface}


def build_backbone(spec: BackboneSpec) -> keras.Model:
    if spec.name not in BACKBONES:
        raise ValueError(f"unknown backbone {spec.name!r} (known: {', '.join(BACKBONES)})")
    return BACKBONES[spec.name](spec)
