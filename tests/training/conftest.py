"""Fixtures for the training tests, which run in the training environment (.venv-train, with
TensorFlow and JAX): one small real dataset prepared and trained once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
TRAIN_MINI = DATA / "train-mini"  # 12 LFW people x 3 photos, 160x160 (tests/data/SOURCES.md)


def run_training(**settings):
    from training.train import TrainConfig, train

    return train(TrainConfig.from_dict(settings))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    from training.prepare import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(TRAIN_MINI, out, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def strangers_prepared(tmp_path_factory) -> Path:
    from training.prepare import prepare

    source = tmp_path_factory.mktemp("strangers-source")
    for image in sorted((DATA / "strangers").iterdir()):
        (source / image.stem).mkdir()
        shutil.copy(image, source / image.stem / image.name)
    out = tmp_path_factory.mktemp("strangers")
    prepare(source, out, workers=1, progress=False)
    return out


# A few steps of MobileFaceNet at a quarter width: enough to exercise every stage.
SMOKE = dict(backbone="mobilefacenet", width=0.25, epochs=2, batch_size=12,
             steps_per_epoch=2, holdout_share=0.34, eval_every=1, checkpoint_every=1,
             workers=1, learning_rate=0.01)


@pytest.fixture(scope="session")
def coco_run(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "coco"
    run_training(data=str(prepared), out=str(out), loss="coco", **SMOKE)
    return out
