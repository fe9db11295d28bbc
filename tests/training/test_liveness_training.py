"""The liveness training subtree: the Keras rebuild of MiniFASNet, its TFLite files, the split
by capture session, the augmentations, and a small real fine-tune exported and checked.

Real networks on real pad-dev photos (read from ../shared, never copied into the project).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device.vision.image_io import read_image
from device.vision.liveness import LivenessModel, liveness_crop
from device.vision.models import DEFAULT_LIVENESS, default_models_dir, load_card
from tests.liveness_support import BONA_FIDE, PAD_DEV, PRINT_ATTACKS, needs_pad_dev, pad_dev
from training.liveness_augment import photometric, screen_replay, training_crop
from training.liveness_data import ATTACK, BONA, list_photos, locate, session_blocks, split
from training.minifasnet import NETWORKS, keras_from_onnx, onnx_probabilities

pytestmark = needs_pad_dev


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Every pad-dev photo with its face box (BlazeFace, about 15 s), and the split."""
    samples, missing = locate(list_photos(PAD_DEV),
                              cache=tmp_path_factory.mktemp("boxes") / "boxes.json")
    folds, test = split(samples)
    return samples, missing, folds, test


def _crops(samples, indices, network):
    return np.stack([liveness_crop(read_image(samples[i].path)[0], samples[i].box,
                                   network.crop_scale) for i in indices])


def test_the_split_keeps_capture_sessions_whole_and_is_fixed_by_the_names(dataset):
    samples, missing, folds, test = dataset
    assert len(samples) + len(missing) == 2080
    blocks = session_blocks(samples)
    sides = {}
    for block, fold in zip(blocks, folds, strict=True):
        sides.setdefault(block, set()).add(fold)
    assert all(len(folds_of_block) == 1 for folds_of_block in sides.values())
    labels = np.array([s.label for s in samples])
    test_labels = labels[test]
    assert 0.2 < np.mean(test_labels == BONA) < 0.35  # both classes are held apart
    assert {f for f in folds if f >= 0} == {0, 1, 2, 3, 4}
    assert split(samples) == (folds, test)  # no hidden randomness
    # The photos the other tests replay are in the held-apart part.
    held_names = {f"{samples[i].path.parent.name}/{samples[i].path.name}" for i in test}
    assert set(BONA_FIDE + PRINT_ATTACKS) <= held_names


@pytest.mark.parametrize("key", sorted(NETWORKS))
def test_the_keras_rebuild_matches_onnxruntime_on_real_crops(dataset, key):
    samples, _, _, test = dataset
    network = NETWORKS[key]
    crops = _crops(samples, test[::25], network)
    reference = onnx_probabilities(network.onnx_file, crops)
    rebuilt = keras_from_onnx(network.onnx_file).predict(crops.astype(np.float32), verbose=0)
    assert np.abs(reference - rebuilt).max() < 1e-4
    # The crops hold both classes and the network does not say the same for all of them.
    assert reference[:, 1].min() < 0.5 < reference[:, 1].max()


@pytest.mark.parametrize("key", sorted(NETWORKS))
def test_the_committed_pretrained_tflite_files_match_onnxruntime(dataset, key):
    samples, _, _, test = dataset
    network = NETWORKS[key]
    card = load_card(f"liveness_minifasnet_{key}_2020aug_float32")
    assert card.card["source"]["onnx_sha256"] == __import__("hashlib").sha256(
        network.onnx_file.read_bytes()).hexdigest()
    model = LivenessModel.from_card(card, num_threads=1)
    crops = _crops(samples, test[::20], network)
    reference = onnx_probabilities(network.onnx_file, crops)
    tflite = np.array([model.class_probabilities([crop]) for crop in crops])
    assert np.abs(reference - tflite).max() <= 1e-3  # the bar


def test_augmentations_keep_the_crop_and_a_screen_replay_changes_the_photo():
    rng = np.random.default_rng(1)
    photo = read_image(pad_dev(BONA_FIDE[0]))[0]
    box = (50.0, 130.0, 260.0, 345.0)
    for _ in range(20):
        crop = training_crop(photo, box, 2.7, rng)
        assert crop.shape == (80, 80, 3) and crop.dtype == np.uint8
    assert photometric(liveness_crop(photo, box, 4.0), rng).shape == (80, 80, 3)
    screen = screen_replay(photo, rng)
    assert screen.shape == photo.shape and screen.dtype == np.uint8
    # The display's sub-pixel grid leaves a strong periodic pattern in each colour channel
    # (the red, green and blue stripes are out of phase, so it is weaker in grey).
    def high_frequency(image):
        return float(np.abs(np.diff(image.astype(np.float32), axis=1)).mean())
    assert high_frequency(screen) > 1.5 * high_frequency(photo)


def test_a_short_fine_tune_exports_a_fused_file_that_matches_keras(dataset, tmp_path):
    """The train command's path on a small real subset: fine-tune both networks for one epoch,
    fuse them, convert, and the TFLite file run by the door's wrapper gives the Keras model's
    probabilities (with each crop on its own input: swapped inputs would fail the check)."""
    from training.liveness_export import checked_export, fused, write_model
    from training.liveness_train import FineTuning, fine_tune, live_scores, load_photos

    samples, _, folds, test = dataset
    rng = np.random.default_rng(0)
    development = [i for i, f in enumerate(folds) if f >= 0]
    chosen = sorted(rng.choice([i for i in development if samples[i].label == BONA], 24,
                               replace=False).tolist() +
                    rng.choice([i for i in development if samples[i].label == ATTACK], 24,
                               replace=False).tolist())
    subset = [samples[i] for i in chosen]
    photos = load_photos(subset)
    settings = FineTuning(epochs=1, batch=16)
    networks = [NETWORKS["v2"], NETWORKS["v1se"]]
    models = [fine_tune(n, photos, subset, list(range(len(subset))), settings, log=lambda _: None)
              for n in networks]
    scores = live_scores(models[0], photos, subset, list(range(len(subset))), networks[0])
    assert scores.shape == (48,) and np.all((scores >= 0) & (scores <= 1))
    model = fused(models, "candidate")
    held = [samples[i] for i in test[::40]]
    crops = [np.stack([liveness_crop(read_image(s.path)[0], s.box, n.crop_scale)
                       for s in held]) for n in networks]
    reference = model.predict(crops, verbose=0)
    flatbuffer, precision, check = checked_export(model, networks, crops, reference)
    assert check["max_probability_difference"] <= 1e-3
    card = write_model(tmp_path, "candidate", flatbuffer, {"task": "liveness", "inputs": [
        {"crop_scale": n.crop_scale, "size": 80} for n in networks], "threshold": {"live": 0.5}})
    loaded = LivenessModel.by_name("candidate", tmp_path)
    assert loaded.inputs[1].crop_scale == 4.0 and card["sha256"]
    first = held[0]
    frame = read_image(first.path)[0]
    assert loaded.score(frame, first.box) == pytest.approx(float(reference[0, 1]), abs=1e-3)
    assert json.loads((tmp_path / "candidate.json").read_text())["file"] == "candidate.tflite"


def test_the_default_model_card_states_its_threshold_and_how_it_was_chosen():
    card = load_card(DEFAULT_LIVENESS)
    threshold = card.threshold
    assert 0 < threshold["live"] < 1 and threshold["votes_needed"] >= 1
    assert "cross-validation" in threshold["chosen_by"]
    held = card.card["accuracy"]["held_apart"]
    assert held["threshold"] == threshold["live"]
    assert Path(default_models_dir() / card.card["file"]).is_file()
