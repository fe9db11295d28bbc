"""Liveness networks -> TFLite files for the door, each checked and with its card.

A liveness file takes one ``[1, 80, 80, 3]`` float32 BGR 0..255 crop per input (named
``crop_0``, ``crop_1``, ... in the card's ``inputs`` order) and returns the three class
probabilities; a fused file averages its members' probabilities inside the graph, so the
door runs one interpreter per face whatever the recipe. Weights are stored as float16
(halves the file; XNNPACK computes in float32 either way), unless that loses parity.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from device.errors import FacegateError
from device.vision.liveness import LivenessInput, LivenessModel
from training.minifasnet import INPUT_SIZE, Network

MAX_PROBABILITY_DIFFERENCE = 1e-3  # the parity bar against the reference run


def fused(models: list, name: str):
    """One Keras model: a crop per member in, the mean of the members' probabilities out."""
    import keras

    inputs = [keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name=f"crop_{i}")
              for i in range(len(models))]
    outputs = [model(crop) for model, crop in zip(models, inputs, strict=True)]
    mean = outputs[0] if len(outputs) == 1 else keras.layers.Average(name="fused")(outputs)
    return keras.Model(inputs, mean, name=name)


def to_tflite(model, n_inputs: int, *, float16: bool = True) -> bytes:
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise FacegateError("liveness export needs KERAS_BACKEND=tensorflow")
    archive = keras.export.ExportArchive()
    archive.track(model)
    specs = [tf.TensorSpec([1, INPUT_SIZE, INPUT_SIZE, 3], tf.float32, name=f"crop_{i}")
             for i in range(n_inputs)]
    archive.add_endpoint("serve", lambda *crops: model(list(crops) if n_inputs > 1 else crops[0],
                                                       training=False),
                         input_signature=specs)
    with tempfile.TemporaryDirectory() as saved_model:
        archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        if float16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def tflite_probabilities(path: Path, networks: list[Network], crops: list[np.ndarray]
                         ) -> np.ndarray:
    """The three class probabilities of each face, run by the door's own wrapper."""
    model = LivenessModel(path, [LivenessInput(n.crop_scale) for n in networks],
                          num_threads=1)
    return np.array([model.class_probabilities([c[i] for c in crops])
                     for i in range(len(crops[0]))])


def write_model(out_dir: Path, name: str, flatbuffer: bytes, card: dict) -> dict:
    """``NAME.tflite`` and ``NAME.json`` into ``out_dir``; the card gets the file's SHA-256."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.tflite").write_bytes(flatbuffer)
    card = {"name": name, "file": f"{name}.tflite", **card,
            "sha256": hashlib.sha256(flatbuffer).hexdigest()}
    (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def checked_export(model, networks: list[Network], crops: list[np.ndarray],
                   reference: np.ndarray) -> tuple[bytes, str, dict]:
    """Convert (float16 first, float32 if float16 misses the bar) and check the file against
    ``reference`` class probabilities of ``crops`` (one array of crops per input)."""
    for float16 in (True, False):
        flatbuffer = to_tflite(model, len(networks), float16=float16)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "candidate.tflite"
            path.write_bytes(flatbuffer)
            got = tflite_probabilities(path, networks, crops)
        difference = float(np.abs(got - reference).max())
        check = {"faces": int(len(reference)),
                 "max_probability_difference": round(difference, 7),
                 "bar": MAX_PROBABILITY_DIFFERENCE}
        if difference <= MAX_PROBABILITY_DIFFERENCE:
            return flatbuffer, "float16" if float16 else "float32", check
    raise FacegateError(f"the TFLite file differs from the reference by {difference:.2g} in "
                        f"class probability (bar {MAX_PROBABILITY_DIFFERENCE})")
