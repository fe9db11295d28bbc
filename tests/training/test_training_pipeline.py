"""The smoke run CI does: prepare -> train -> evaluate -> export -> the door loads it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.vision.image_io import read_image
from device.vision.models import default_models_dir, load_card
from device.vision.pipeline import FacePipeline
from tests.test_models import CARD_FIELDS
from tests.training.conftest import SMOKE, TRAIN_MINI, run_training
from training.cli import main as training_cli
from training.crop_evaluation import evaluate_command
from training.export import ExportCheckFailed, export_command

ROOT = Path(__file__).resolve().parents[2]


def test_a_run_folder_has_weights_logs_checkpoints_and_a_summary(coco_run):
    summary = json.loads((coco_run / "training.json").read_text())
    assert summary["loss"] == "coco" and summary["epochs_run_this_time"] == 2
    assert summary["alpha_from"].startswith("lower bound for 8 people")
    assert (coco_run / "embedder.weights.h5").is_file()
    assert sorted(p.name for p in (coco_run / "checkpoints").iterdir()) == [
        "embedder-epoch001.weights.h5", "embedder-epoch002.weights.h5"]
    log = (coco_run / "training.csv").read_text().splitlines()
    assert log[0].split(",")[:1] == ["epoch"] and len(log) == 3
    assert "val_accuracy" in log[0] and "learning_rate" in log[0]
    assert any((coco_run / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (coco_run / "backup").exists()  # removed once a run completes


def test_a_run_stopped_by_its_time_budget_continues_when_run_again(prepared, tmp_path):
    out = tmp_path / "resumed"
    settings = dict(data=str(prepared), out=str(out), loss="coco", **SMOKE)
    first = run_training(**{**settings, "time_budget_minutes": 1e-6})  # one step
    assert first["stopped_by_time_budget"]
    assert (out / "backup").is_dir()
    summary = run_training(**settings)
    assert summary["epochs_run_this_time"] == 1  # epoch 1 was restored, epoch 2 ran
    assert len((out / "training.csv").read_text().splitlines()) == 3


def test_the_triplet_baseline_trains_in_mixed_precision(prepared, tmp_path):
    import keras

    summary = run_training(data=str(prepared), out=str(tmp_path / "triplet"), loss="triplet",
                           people_per_batch=4, mixed_precision=True,
                           **{**SMOKE, "epochs": 1, "eval_every": 0})
    assert summary["loss"] == "triplet" and np.isfinite(summary["final"]["loss"])
    assert "mixed float16" in summary["devices"]
    # The loss and the embedding stay float32; the policy is restored afterwards.
    assert keras.mixed_precision.global_policy().name == "float32"


def test_evaluate_reports_verification_on_held_out_people(coco_run, tmp_path):
    report = evaluate_command({"run": str(coco_run), "json": str(tmp_path / "eval.json"),
                               "plot": str(tmp_path / "roc.png")})
    verification = report["verification"]
    assert report["people"] == 4 and verification["pairs"] > 0
    assert 0.0 <= verification["accuracy_mean"] <= 1.0
    for far in ("0.01", "0.001", "0.0001"):
        assert f"tar_at_far_{far}" in verification
    assert "roc" in json.loads((tmp_path / "eval.json").read_text())["verification"]
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    # An earlier report drawn beside a new one.
    evaluate_command({"run": str(coco_run), "plot": str(tmp_path / "both.png"),
                      "compare": [str(tmp_path / "eval.json")]})
    assert (tmp_path / "both.png").stat().st_size > 0


def test_evaluate_reads_an_lfw_format_pairs_file(coco_run, tmp_path):
    people = json.loads((coco_run / "split.json").read_text())["held_out"]
    pairs = tmp_path / "pairs.txt"
    # Two folds of one same-person and one different-people pair each.
    pairs.write_text("2 1\n" + "\n".join([
        f"{people[0]} 1 2", f"{people[0]} 1 {people[1]} 2",
        f"{people[2]} 1 3", f"{people[2]} 1 {people[3]} 3"]) + "\n")
    report = evaluate_command({"run": str(coco_run), "pairs": str(pairs)})
    assert report["verification"]["pairs"] == 4
    assert report["verification"]["pairs_without_crop"] == 0


def test_export_writes_checked_int8_and_float16_models_the_door_loads(
        coco_run, strangers_prepared, tmp_path, capsys):
    models = tmp_path / "models"
    results = export_command({"run": str(coco_run), "name": "smoke_mfn", "out": str(models),
                              "strangers": str(strangers_prepared), "calibration_images": 20})
    assert set(results) == {"smoke_mfn_float16", "smoke_mfn_int8"}
    int8 = load_card("smoke_mfn_int8", models)
    assert int8.verify_sha256()
    assert CARD_FIELDS <= set(int8.card)  # what every bundled card has
    assert int8.card["parity"]["mean_cosine"] >= 0.99
    assert int8.card["alignment"]["method"] == "similarity"
    assert -1.0 <= int8.card["threshold"]["score"] <= 1.0
    assert int8.card["threshold"]["fpir"] == 1e-3

    # The exported file judged through the door's FaceEmbedder on the run's held-out people.
    judged = evaluate_command({"tflite": str(models / "smoke_mfn_int8.tflite"),
                               "data": json.loads((coco_run / "config.json").read_text())["data"],
                               "split": str(coco_run / "split.json")})
    assert judged["model"] == "smoke_mfn_int8" and judged["people"] == 4

    # The door: bundled detector and FaceMesh beside the new embedder, loaded by name.
    for name in ("face_detection_short_range", "face_landmark"):
        for suffix in (".tflite", ".json"):
            shutil.copy(default_models_dir() / f"{name}{suffix}", models)
    pipeline = FacePipeline.from_models_dir(models, embedder="smoke_mfn_int8")
    frame, _ = read_image(next(TRAIN_MINI.rglob("*.jpg")))
    faces = pipeline.process(frame, thorough=True)
    assert len(faces) == 1 and faces[0].embedding.shape == (128,)
    assert np.linalg.norm(faces[0].embedding) == pytest.approx(1.0, abs=1e-4)

    # `facegate reembed` moves a gallery enrolled with the float16 file to the int8 one.
    from device.cli import main as facegate

    photo = str(TRAIN_MINI.parent / "people" / "Colin_Powell" / "Colin_Powell_0001.jpg")
    common = ["--db", str(tmp_path / "gallery.db"), "--models-dir", str(models),
              "--data-dir", str(tmp_path / "data")]
    assert facegate(["enroll", *common, "--model", "smoke_mfn_float16", "--name", "Ada",
                     photo]) == 0
    assert facegate(["reembed", *common, "--model", "smoke_mfn_int8"]) == 0
    assert "re-embedded 1 templates with smoke_mfn_int8" in capsys.readouterr().out
    assert facegate(["identify", *common, "--model", "smoke_mfn_int8", photo]) == 0
    match = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["faces"][0]
    assert match["person"] == "Ada" and match["score"] > 0.99


def test_an_export_that_drifts_from_the_keras_model_fails_and_writes_nothing(
        coco_run, tmp_path):
    models = tmp_path / "models"
    with pytest.raises(ExportCheckFailed, match="mean cosine"):
        export_command({"run": str(coco_run), "name": "drifted", "out": str(models),
                        "precision": "int8", "calibration_images": 5, "min_cosine": 1.01})
    assert not models.exists() or not any(models.iterdir())


def test_weights_saved_under_tensorflow_load_and_train_under_jax(coco_run, prepared, tmp_path):
    """The lent GPU machine has JAX but no TensorFlow: a run must carry across."""
    from training.backbones import BackboneSpec, build_backbone
    from training.train import load_embedder_weights

    images = np.random.default_rng(0).uniform(0, 255, (3, 112, 112, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    network = build_backbone(BackboneSpec(width=SMOKE["width"]))
    load_embedder_weights(network, coco_run)
    under_tensorflow = network.predict(images, verbose=0)
    settings = {**SMOKE, "epochs": 1, "eval_every": 0, "data": str(prepared),
                "out": str(tmp_path / "jax-run")}
    script = f"""
import json, sys, numpy as np
from training.backbones import BackboneSpec, build_backbone
from training.train import TrainConfig, load_embedder_weights, train
network = build_backbone(BackboneSpec(width={SMOKE['width']}))
load_embedder_weights(network, sys.argv[1])
np.save(sys.argv[3], network.predict(np.load(sys.argv[2]), verbose=0))
print(json.dumps(train(TrainConfig(**json.loads(sys.argv[4])))["backend"]))
"""
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, "-c", script, str(coco_run),
                           str(tmp_path / "images.npy"), str(tmp_path / "jax.npy"),
                           json.dumps(settings)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == '"jax"'
    under_jax = np.load(tmp_path / "jax.npy")
    np.testing.assert_allclose(under_jax, under_tensorflow, atol=2e-4)
    # ... and the run JAX wrote exports through TensorFlow here.
    results = export_command({"run": str(tmp_path / "jax-run"), "name": "from_jax",
                              "out": str(tmp_path / "models"), "precision": "float16"})
    assert results["from_jax_float16"]["parity"]["mean_cosine"] > 0.999


@pytest.mark.parametrize("command", ["prepare", "train", "evaluate", "export"])
def test_every_training_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        training_cli([command, "--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_a_config_file_fine_tunes_a_previous_run_and_the_command_line_wins(
        coco_run, prepared, tmp_path):
    from training.backbones import BackboneSpec, build_backbone
    from training.train import load_embedder_weights

    config = tmp_path / "train.toml"
    # Fine-tuning at a learning rate of ~0: only BatchNorm's running statistics move.
    config.write_text(f'[train]\ndata = "{prepared}"\nout = "{tmp_path / "tuned"}"\n'
                      f'init_from = "{coco_run}"\nlearning_rate = 1e-9\n'
                      'loss = "coco"\nwidth = 0.25\nepochs = 5\nbatch_size = 12\n'
                      'steps_per_epoch = 1\neval_every = 0\nworkers = 1\n')
    assert training_cli(["--config", str(config), "train", "--epochs", "1"]) == 0
    summary = json.loads((tmp_path / "tuned" / "training.json").read_text())
    assert summary["epochs_planned"] == 1 and summary["backbone"]["width"] == 0.25

    images = np.random.default_rng(0).uniform(0, 255, (2, 112, 112, 3)).astype("float32")
    start, tuned = (build_backbone(BackboneSpec(width=SMOKE["width"])) for _ in range(2))
    load_embedder_weights(start, coco_run)
    load_embedder_weights(tuned, tmp_path / "tuned")
    cosines = (start.predict(images, verbose=0) * tuned.predict(images, verbose=0)).sum(1)
    assert cosines.min() > 0.9


def test_an_unknown_setting_in_the_config_file_is_one_clear_error(tmp_path, capsys):
    config = tmp_path / "train.toml"
    config.write_text('[train]\nlearning_rat = 0.1\n')
    assert training_cli(["--config", str(config), "train"]) == 1
    assert capsys.readouterr().err.strip() == "error: unknown train setting(s): learning_rat"


def test_required_settings_may_come_from_the_config_file(tmp_path, capsys):
    assert training_cli(["prepare", "--data", str(TRAIN_MINI)]) == 1
    assert capsys.readouterr().err.strip() == "error: prepare needs --out (or in [prepare])"
    config = tmp_path / "prepare.toml"
    people = TRAIN_MINI.parent / "people"
    config.write_text(f'[prepare]\ndata = "{people}"\nout = "{tmp_path / "out"}"\n'
                      'workers = 1\nno_progress = true\n')
    assert training_cli(["--config", str(config), "prepare"]) == 0
    assert json.loads(capsys.readouterr().out)["crops"] == 6
