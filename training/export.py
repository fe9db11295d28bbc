"""``export``: a trained run -> TFLite files for the door, each checked and with its card.

Always through TensorFlow (the TFLite converter), whatever backend trained the run: the
weights file is backend-neutral. For each precision:

1. convert: ``float16`` (weights stored as float16) or ``int8``. ``int8`` is full-integer by
   default (int8 weights, activations, input and output, calibrated on a representative set
   of aligned crops drawn from the training people); ``--int8 dynamic`` writes int8 weights
   with float activations instead (dynamic range, as the door's default SFace), with the
   depthwise weights back in float so XNNPACK runs every node (``training/sface_xnnpack.py``);
2. check it against the Keras model on faces of the held-out people, never used for
   calibration: the mean cosine between the two embeddings of each face must reach
   ``--min-cosine`` (0.99), or the export fails and writes nothing;
3. calibrate the thresholds with the TFLite file run by the device's own ``FaceEmbedder``:
   the 1:1 threshold at ``--target-far`` on pairs of held-out people, the enrolment check's at
   FAR 1e-4 on all their pairs, and, against a prepared folder of strangers when one is
   given, the door's (1:N) threshold at ``--target-fpir`` as a curve over gallery sizes
   (``by_gallery_size``, the tail model of ``training/calibrate_open_set.py`` fitted on the
   held-out people's stranger searches);
4. write ``NAME_PRECISION.tflite`` and its JSON card into ``models/`` (or ``--out``), so the
   daemon loads it by name and ``facegate reembed`` moves a gallery to it.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from device.errors import FacegateError
from device.vision.alignment import ARCFACE_TEMPLATE_112
from device.vision.models import default_models_dir, load_card
from device.vision.pipeline import CANONICAL_MESH_FILE
from training.calibrate_open_set import INTERPOLATION, interpolate
from training.compare import door_protocol, faces_of
from training.crop_evaluation import as_embedded_set, tflite_embeddings
from training.data import CropSet, load_split
from training.evaluate import (
    FLOOR,
    FPIRS,
    KNOWN_LABEL_NOISE,
    KNOWN_WRONG_FACE,
    open_set,
    open_set_scores,
    tar_at_far,
    verification,
    verification_scores,
)
from training.train import load_run_embedder

# The open-set margin the door uses with this model, as for SFace: a probe must beat the
# runner-up by this much (look-alikes and siblings score close to two people at once).
DEFAULT_MARGIN = 0.02
CHECK_FACES = 600  # held-out faces the TFLite file is compared with the Keras model on


class ExportCheckFailed(FacegateError):
    """The converted model does not reproduce the Keras model closely enough."""


def _tensorflow():
    import keras

    if keras.backend.backend() != "tensorflow":
        raise FacegateError("export needs the TensorFlow backend (KERAS_BACKEND=tensorflow); "
                            "a run trained under JAX or PyTorch exports fine from there")
    import tensorflow as tf

    return tf


def convert(embedder, precision: str, representative: np.ndarray | None = None, *,
            int8: str = "full") -> bytes:
    """The TFLite flatbuffer of ``embedder`` at ``precision`` ("float16" or "int8"; an int8
    file is ``int8`` "full" integer or "dynamic" range)."""
    tf = _tensorflow()
    import keras

    # Through a SavedModel with a batch of one (the door embeds one face at a time): the
    # converter then sees frozen weights, which int8 calibration needs.
    archive = keras.export.ExportArchive()
    archive.track(embedder)
    archive.add_endpoint("serve", lambda x: embedder(x, training=False), input_signature=[
        tf.TensorSpec([1, 112, 112, 3], tf.float32, name="aligned_face_rgb")])
    with tempfile.TemporaryDirectory() as saved_model:
        archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if precision == "int8" and int8 == "dynamic":
            return _float_depthwise(converter.convert())
        return _convert(tf, converter, precision, representative)


def _float_depthwise(model: bytes) -> bytes:
    """Dynamic-range weights, less the depthwise ones XNNPACK cannot take in int8."""
    from training.sface_xnnpack import float_depthwise

    with tempfile.TemporaryDirectory() as scratch:
        source, target = Path(scratch) / "int8dr.tflite", Path(scratch) / "xnnpack.tflite"
        source.write_bytes(model)
        float_depthwise(source, target)
        return target.read_bytes()


def _convert(tf, converter, precision: str, representative: np.ndarray | None) -> bytes:
    if precision == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        if representative is None or not len(representative):
            raise FacegateError("int8 needs representative crops")

        def samples():
            for image in representative:
                yield [image[None].astype(np.float32)]

        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # Pixels 0..255 quantise exactly (scale 1); the door's FaceEmbedder reads the scale
        # and zero point from the file, so any calibrated range works.
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    else:
        raise FacegateError(f"unknown precision {precision!r}")
    return converter.convert()


def parity(keras_embeddings: np.ndarray, tflite: np.ndarray) -> dict:
    cosines = np.einsum("ij,ij->i", keras_embeddings / np.linalg.norm(
        keras_embeddings, axis=1, keepdims=True), tflite)
    return {"faces": int(len(cosines)), "mean_cosine": round(float(cosines.mean()), 5),
            "min_cosine": round(float(cosines.min()), 5),
            "p5_cosine": round(float(np.percentile(cosines, 5)), 5)}


def calibrate(held_out: CropSet, held_out_embeddings: np.ndarray, strangers: CropSet | None,
              stranger_embeddings: np.ndarray | None, target_far: float,
              target_fpir: float) -> tuple[dict, dict, dict]:
    """(door threshold, 1:1 threshold, accuracy figures) from the TFLite file's embeddings."""
    data = as_embedded_set(held_out, held_out_embeddings)
    figures = verification(data)
    scores, same, _ = verification_scores(data.embeddings, data.found, data.labels)
    tar, pair_threshold = tar_at_far(scores, same, target_far)
    one_to_one = {"score": round(pair_threshold, 4), "far": target_far, "tar": round(tar, 4),
                  "set_from": f"{figures['pairs']} LFW-style pairs of {len(held_out.names)} "
                              "held-out people (never trained on)"}
    accuracy = {k: figures[k] for k in ("accuracy_mean", "accuracy_std", "tar_at_far_0.01",
                                        "tar_at_far_0.001", "tar_at_far_0.0001")}
    one_to_one["enrolment_threshold"] = {
        "score": figures["all_pairs"]["threshold_at_far_0.0001"], "far": 1e-4,
        "used_for": "enrolment: a new photo of an enrolled person must reach this cosine "
                    "with one of their templates",
        "set_from": f"every pair of images of different held-out people "
                    f"({figures['all_pairs']['impostor_pairs']:,} pairs): cosine at which "
                    f"0.01% pass; {100 * figures['all_pairs']['tar_at_far_0.0001']:.2f}% of "
                    "same-person pairs pass it"}
    if strangers is None:
        door = {"score": round(pair_threshold, 4), "margin": DEFAULT_MARGIN,
                "metric": "cosine of unit embeddings", "far": target_far,
                "set_from": "the 1:1 threshold (no strangers given: calibrate with "
                            "--strangers before relying on it for 1:N)"}
        return door, one_to_one, accuracy
    stranger_set = as_embedded_set(strangers, stranger_embeddings)
    # Strangers known to be enrolled people under another name are not strangers.
    noise = np.array([Path(p).name in KNOWN_LABEL_NOISE for p in stranger_set.paths], bool)
    scores = open_set_scores(data.embeddings, data.found, data.labels,
                             stranger_set.embeddings, stranger_set.found,
                             stranger_excluded=noise)
    threshold = scores.threshold_at_fpir(target_fpir, FLOOR["cosine"], DEFAULT_MARGIN)
    report = open_set(data, stranger_set, DEFAULT_MARGIN, threshold)
    door = {"score": round(threshold, 4), "margin": DEFAULT_MARGIN,
            "metric": "cosine of unit embeddings", "fpir": target_fpir,
            "set_for": "open-set identification at the door",
            "set_from": f"{len(held_out.names)} held-out people enrolled from one crop each, "
                        f"{report['genuine_probes']} genuine probes, "
                        f"{report['stranger_probes']} strangers",
            "at_threshold": report["at_threshold"]}
    accuracy["rank1_identification_rate"] = report["rank1_identification_rate"]
    for target in FPIRS:
        accuracy[f"open_set_fnir_at_fpir_{target:g}"] = report["at_fpir"][f"{target:g}"]["fnir"]
    if target_fpir == 1e-3 and len(held_out.names) >= 10:
        door.update(threshold_curve(held_out, held_out_embeddings, strangers,
                                    stranger_embeddings))
        # What the door would do with this many people, at the curve's threshold for them.
        at = interpolate(door["by_gallery_size"], len(held_out.names))
        door["at_threshold"] = open_set(data, stranger_set, DEFAULT_MARGIN, at)["at_threshold"]
    return door, one_to_one, accuracy


def threshold_curve(held_out: CropSet, embeddings: np.ndarray, strangers: CropSet,
                    stranger_embeddings: np.ndarray) -> dict:
    """The door's threshold at FPIR 1e-3 for any gallery size, with ``score`` at 1,000
    people (as the default SFace card), and the door protocol's figures behind it."""
    protocol = door_protocol(faces_of(held_out, embeddings, KNOWN_WRONG_FACE),
                             faces_of(strangers, stranger_embeddings,
                                      KNOWN_LABEL_NOISE).embeddings, margin=DEFAULT_MARGIN)
    curve = protocol.pop("threshold_by_gallery_size")
    return {"score": round(interpolate(curve, 1000), 4), "by_gallery_size": curve,
            "interpolation": INTERPOLATION,
            "set_for": "open-set identification with one photo per person enrolled, at any "
                       "gallery size: the door interpolates by_gallery_size at its number of "
                       "people ('score' is the threshold at 1,000 people); FPIR per stranger "
                       "presentation",
            "curve_from": f"{protocol['stranger_searches']:,} stranger searches of "
                          f"{len(held_out.names)} held-out people (leave-one-out, 10 choices of "
                          "the enrolled photo) and the strangers folder, with the tail model "
                          "of training/calibrate_open_set.py",
            "door_protocol": protocol}


def write_card(out: Path, name: str, model: bytes, precision: str, facts: dict,
               training: dict, checks: dict, door: dict, one_to_one: dict, accuracy: dict,
               command: str, int8: str = "full") -> Path:
    alignment = {"method": facts["alignment"], "size": 112,
                 "template": ARCFACE_TEMPLATE_112.tolist(),
                 "template_name": "ArcFace 5-point, 112x112",
                 "five_points_from": "FaceMesh: eye-ring centres, nose tip (4), mouth corners "
                                     "(61, 291)",
                 "made_by": "python -m training prepare (the door's own aligner)"}
    integer_input = precision == "int8" and int8 == "full"
    card = {
        "name": name,
        "file": f"{name}.tflite",
        "task": "face_embedding",
        "architecture": (
            f"{facts['backbone']['name']} (width {facts['backbone']['width']}), "
            f"{facts['backbone']['embedding_dim']}-d, " + (
                f"fine-tuned by facegate from {facts['init_from']} with the {facts['loss']} "
                "loss" if facts.get("init_from") else
                f"trained by facegate with the {facts['loss']} loss")),
        "input": {"size": [112, 112],
                  "layout": f"NHWC {'int8' if integer_input else 'float32'} "
                            "[1, 112, 112, 3]",
                  "colour": "RGB", "mean": 0.0, "std": 1.0,
                  "normalisation": "none: pixels 0..255 (scaled inside the network; an int8 "
                                   "input is quantised with the file's scale and zero point)"},
        "output": {"embedding": "[1, 128] unit length (the device normalises again)",
                   "dim": facts["backbone"]["embedding_dim"]},
        "alignment": alignment,
        "mirror": False,
        "precision": {"int8": "full-integer int8 (weights, activations, input, output)"
                      if int8 == "full" else "dynamic-range int8 weights (depthwise weights in "
                      "float32, so XNNPACK runs every node), float32 activations",
                      "float16": "float16 weights, float32 activations"}[precision],
        "sha256": hashlib.sha256(model).hexdigest(),
        "licence": "Apache-2.0 (trained by facegate" + (
            "; the start model, OpenCV Zoo's SFace, is Apache-2.0" if facts.get("init_from")
            in ("sface", "face_recognition_sface_2021dec") else "")
            + "; the training photos' own terms apply)",
        "source": {"trained_by": "facegate training/ (python -m training train)",
                   "run": training["run"], "data": training["data"]},
        "training": training,
        "parity": {**checks, "reference": "the Keras model of the run, same crops"},
        "threshold": {**door, "measured_by": command},
        "verification_threshold": {**{k: v for k, v in one_to_one.items()
                                      if k != "enrolment_threshold"}, "measured_by": command},
        "enrolment_threshold": {**one_to_one["enrolment_threshold"], "measured_by": command},
        "accuracy": {**accuracy, "measured_on": "held-out people of the prepared set, "
                                                "through the device's FaceEmbedder",
                     "measured_by": command},
        "produced_by": command,
    }
    if facts["alignment"] == "homography":
        card["files"] = {"canonical_mesh": CANONICAL_MESH_FILE}
    path = out / f"{name}.json"
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def export_command(values: dict) -> dict:
    run = Path(values["run"])
    out = Path(values["out"]) if values.get("out") else default_models_dir()
    precisions = ["float16", "int8"] if values.get("precision", "both") == "both" \
        else [values["precision"]]
    embedder, facts = load_run_embedder(run)
    config = json.loads((run / "config.json").read_text())
    train_people, held_out_people = load_split(run / "split.json")
    data = Path(config["data"])
    held_out = CropSet.load(data, set(held_out_people))
    if len(held_out.names) < 4:
        raise FacegateError(
            f"{run}: {len(held_out.names)} held-out people; export sets the thresholds on "
            "the people a run never trained on and needs at least 4 (train with a larger "
            "--holdout-share, or on more people)")
    rng = np.random.default_rng(0)
    calibration = CropSet.load(data, set(train_people))
    calibration_rows = rng.choice(len(calibration), min(len(calibration),
                                  values.get("calibration_images", 300)), replace=False)
    representative = calibration.images(calibration_rows)
    check_rows = np.sort(rng.choice(len(held_out), min(len(held_out), CHECK_FACES),
                                    replace=False))
    check_images = held_out.images(check_rows)
    keras_check = np.asarray(embedder.predict(check_images, batch_size=100, verbose=0))
    strangers = CropSet.load(Path(values["strangers"])) if values.get("strangers") else None
    training = {"run": run.name, "data": config["data"], "loss": facts["loss"],
                **({"alpha": facts["alpha"], "alpha_from": facts["alpha_from"]}
                   if facts["loss"] == "coco" else {"margin": facts.get("margin")}),
                **_training_summary(run)}
    command = values.get("command_line") or f"training.export.export_command({values!r})"
    results = {}
    for precision in precisions:
        name = f"{values['name']}_{precision}"
        model = convert(embedder, precision, representative, int8=values.get("int8", "full"))
        with tempfile.TemporaryDirectory() as scratch:
            # Judge the file where nothing else can see it; only a passing file reaches out/.
            scratch = Path(scratch)
            (scratch / f"{name}.tflite").write_bytes(model)
            (scratch / f"{name}.json").write_text(json.dumps({
                "name": name, "task": "face_embedding",
                "input": {"size": [112, 112], "colour": "RGB", "mean": 0.0, "std": 1.0}}))
            card = load_card(name, scratch)
            check_crops = CropSet(held_out.root, [held_out.paths[r] for r in check_rows],
                                  held_out.labels[check_rows], held_out.names)
            checks = parity(keras_check, tflite_embeddings(card, check_crops))
            checks["min_mean_cosine_required"] = values.get("min_cosine", 0.99)
            if checks["mean_cosine"] < checks["min_mean_cosine_required"]:
                raise ExportCheckFailed(
                    f"{name}: mean cosine to the Keras model {checks['mean_cosine']} on "
                    f"{checks['faces']} held-out faces is below "
                    f"{checks['min_mean_cosine_required']}; nothing written")
            door, one_to_one, accuracy = calibrate(
                held_out, tflite_embeddings(card, held_out), strangers,
                tflite_embeddings(card, strangers) if strangers else None,
                values.get("target_far", 1e-3), values.get("target_fpir", 1e-3))
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.tflite").write_bytes(model)
        write_card(out, name, model, precision, facts, training, checks, door, one_to_one,
                   accuracy, command, values.get("int8", "full"))
        results[name] = {"file": str(out / f"{name}.tflite"), "bytes": len(model),
                         "parity": checks, "threshold": door["score"],
                         "verification_threshold": one_to_one["score"], "accuracy": accuracy}
    return results


def _training_summary(run: Path) -> dict:
    path = run / "training.json"
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text())
    keep = ("backend", "devices", "train_people", "train_crops", "held_out_people",
            "held_out_crops", "epochs_planned", "epochs_run_this_time",
            "stopped_by_time_budget", "seconds", "images_per_second", "params", "final")
    return {k: summary[k] for k in keep if k in summary}
