"""Liveness networks -> TFLite files for the door, each checked and with its card.

A liveness file takes one ``[1, 80, 80, 3]`` float32 BGR 0..255 crop per input (named
``crop_0``, ``crop_1``, ... in the card's ``inputs`` order) and returns the three class
probabilities; a fused file averages its members' probabilities inside the graph, so the
door runs one interpreter per face whatever the recipe. Weights are stored as float16
(halves the file; XNNPACK computes in float32 either way), unless that loses parity.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator
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


@contextlib.contextmanager
def _saved_model(model, n_inputs: int) -> Iterator[str]:
    """A temporary TensorFlow saved model of ``model`` with one endpoint, inputs ``crop_i``."""
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
        yield saved_model


def to_tflite(model, n_inputs: int, *, float16: bool = True) -> bytes:
    import tensorflow as tf

    with _saved_model(model, n_inputs) as saved_model:
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        if float16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def to_int8_tflite(model, calibration: list[np.ndarray]) -> bytes:
    """int8 weights (per channel) and activations, calibrated on ``calibration`` (one array of
    crops per input); PRELU and SOFTMAX stay float32 between a DEQUANTIZE and a QUANTIZE,
    because XNNPACK (ai-edge-litert 2.3) takes neither in int8 (``training/sface_int8.py``).
    Input and output stay float32, so ``LivenessModel`` runs it unchanged."""
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    with _saved_model(model, len(calibration)) as saved_model:
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [crops[i][None].astype(np.float32) for crops in calibration]
            for i in range(len(calibration[0])))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter._experimental_calibrate_only = True
        calibrated = converter.convert()
    return mlir_quantize(calibrated, disable_per_channel=False, input_data_type=tf.float32,
                         output_data_type=tf.float32, denylisted_ops=["PRELU", "SOFTMAX"])


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


# -- The int8 variant of the fused default ----------------------------------------------------


def export_int8(run_dir: Path, out_dir: Path) -> dict:
    """Rebuild the fused fine-tuned model from ``run_dir``'s weights (``make train-liveness``
    writes them), check it against the committed float32 file, and write its int8 variant with
    a card copied from the float32 one. Calibration: every fourth photo of pad-dev's training
    part; the held-apart part is only used for the parity figure.

    The int8 file misses the liveness files' parity bar (every class probability within 1e-3
    of the reference; int8 differs by up to 0.1, 0.01 on average), so it is not written into
    ``models/`` by default: it is a measured candidate, not a door model."""
    from device.vision.models import default_models_dir
    from training.liveness import FINE_TUNED_NAME, _dataset, _plain_crops
    from training.minifasnet import NETWORKS, keras_from_onnx

    networks = [NETWORKS["v2"], NETWORKS["v1se"]]
    members = []
    for network in networks:
        member = keras_from_onnx(network.onnx_file, name=f"minifasnet_{network.key}")
        member.load_weights(run_dir / f"{network.key}.weights.h5")
        members.append(member)
    model = fused(members, FINE_TUNED_NAME)
    samples, _, folds, test, photos = _dataset()
    training_part = [i for i, fold in enumerate(folds) if fold >= 0][::4]
    calibration = [_plain_crops(photos, samples, training_part, n) for n in networks]
    held_apart = [_plain_crops(photos, samples, test[::3], n) for n in networks]

    models = default_models_dir()
    float_card = json.loads((models / f"{FINE_TUNED_NAME}_float32.json").read_text())
    reference = tflite_probabilities(models / float_card["file"], networks, held_apart)
    rebuilt = model.predict(held_apart, verbose=0)
    if float(np.abs(rebuilt - reference).max()) > MAX_PROBABILITY_DIFFERENCE:
        raise FacegateError(f"the weights in {run_dir} are not the committed float32 model's")
    flatbuffer = to_int8_tflite(model, calibration)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "candidate.tflite"
        path.write_bytes(flatbuffer)
        got = tflite_probabilities(path, networks, held_apart)
    live = 1  # class 1 is live
    card = {k: v for k, v in float_card.items() if k not in ("name", "file", "sha256")}
    card.update(
        precision="int8 weights (per channel) and activations; PReLU and softmax in float32 "
                  "between a DEQUANTIZE and a QUANTIZE (XNNPACK takes neither in int8); float32 "
                  "input and output",
        parity={"faces": len(reference), "against": "the committed float32 file, held-apart "
                "pad-dev crops", "max_live_probability_difference":
                round(float(np.abs(got[:, live] - reference[:, live]).max()), 4),
                "mean_live_probability_difference":
                round(float(np.abs(got[:, live] - reference[:, live]).mean()), 4)},
        calibration=f"{len(training_part)} photos: every fourth of pad-dev's training part "
                    "(training/liveness_data.py split), both crops",
        produced_by=f"python -m training.liveness_export --run {run_dir} --out {out_dir} "
                    "(weights from make train-liveness)",
        accuracy={"held_apart": "python -m training.liveness evaluate --model NAME"})
    return write_model(out_dir, f"{FINE_TUNED_NAME}_int8", flatbuffer, card)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import os

    parser = argparse.ArgumentParser(
        prog="python -m training.liveness_export",
        description="Write the int8 variant of the fused fine-tuned liveness model.")
    parser.add_argument("--run", type=Path, default=Path("var/liveness/run"),
                        help="folder with v2.weights.h5 and v1se.weights.h5")
    parser.add_argument("--out", type=Path, default=Path("var/liveness-int8"),
                        help="folder for the file and its card (default: var/liveness-int8)")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    card = export_int8(args.run, args.out)
    print(f"{card['file']}: {card['parity']}, SHA-256 {card['sha256']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
