"""The liveness model wrapper: upstream's crop, the card contract, real scores on real photos.

The decisions are the real default model's on pad-dev photos of its held-apart part
(tests/liveness_support.py), which no model of ours was trained or tuned on.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from device.vision.detector import FaceDetector
from device.vision.image_io import read_image
from device.vision.liveness import LivenessInput, LivenessModel, liveness_crop
from device.vision.models import DEFAULT_LIVENESS, DETECTOR, list_cards, load_card
from tests.conftest import DATA
from tests.liveness_support import BONA_FIDE, PAD_DEV, PRINT_ATTACKS, needs_pad_dev, pad_dev

UPSTREAM_PATCHES = (PAD_DEV.parents[1] / "third_party" / "silent-face-anti-spoofing" / "src"
                    / "generate_patches.py")


@pytest.fixture(scope="module")
def model() -> LivenessModel:
    return LivenessModel.by_name()


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(load_card(DETECTOR).path)


def _face_box(detector, frame):
    return max(detector.detect(frame), key=lambda face: face.area).box


@pytest.mark.skipif(not UPSTREAM_PATCHES.is_file(), reason=f"{UPSTREAM_PATCHES} is missing")
@pytest.mark.parametrize("box", [(100, 80, 60, 70), (0, 0, 50, 60), (200, 150, 110, 90),
                                 (10, 300, 120, 170), (30, 40, 200, 260)])
def test_the_crop_is_upstreams_pixel_for_pixel(box):
    spec = importlib.util.spec_from_file_location("generate_patches", UPSTREAM_PATCHES)
    upstream = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(upstream)
    frame = read_image(DATA / "couple.jpg")[0][:480, :320]
    x, y, w, h = box
    for scale in (2.7, 4.0):
        theirs = upstream.CropImage().crop(frame, [x, y, w, h], scale, 80, 80)
        ours = liveness_crop(frame, [x, y, x + w, y + h], scale)
        assert np.array_equal(theirs, ours), (box, scale)


def test_every_liveness_card_describes_its_inputs_threshold_and_source():
    cards = [card for card in list_cards() if card.task == "liveness"]
    assert DEFAULT_LIVENESS in {card.name for card in cards}
    for card in cards:
        assert card.card["inputs"] and all(item["crop_scale"] >= 1 for item in card.card["inputs"])
        assert 0 < card.threshold["live"] < 1
        assert "Apache-2.0" in card.card["licence"]
        assert card.card["parity"]["max_probability_difference"] <= 1e-3
        assert card.verify_sha256()
    default = load_card(DEFAULT_LIVENESS)
    assert len(default.card["inputs"]) == 2  # the fused pair, one crop each


@needs_pad_dev
@pytest.mark.parametrize("name", BONA_FIDE)
def test_a_bona_fide_face_is_live(model, detector, name):
    frame = read_image(pad_dev(name))[0]
    assert model.score(frame, _face_box(detector, frame)) >= model.threshold


@needs_pad_dev
@pytest.mark.parametrize("name", PRINT_ATTACKS)
def test_a_print_attack_is_not_live(model, detector, name):
    frame = read_image(pad_dev(name))[0]
    assert model.score(frame, _face_box(detector, frame)) < model.threshold


def test_scores_are_probabilities_and_the_crops_are_what_the_card_says(model, detector):
    frame = read_image(DATA / "couple.jpg")[0]
    box = _face_box(detector, frame)
    crops = model.crops(frame, box)
    assert [crop.shape for crop in crops] == [(80, 80, 3)] * 2
    probabilities = model.class_probabilities(crops)
    assert probabilities.shape == (3,) and probabilities.sum() == pytest.approx(1, abs=1e-4)
    assert model.score(frame, box) == pytest.approx(probabilities[1])


def test_a_model_that_is_not_a_liveness_model_or_takes_other_inputs_is_refused():
    with pytest.raises(ValueError, match="not a liveness model"):
        LivenessModel.from_card(load_card(DETECTOR))
    with pytest.raises(ValueError, match="takes 2 inputs, its card describes 1"):
        LivenessModel(load_card(DEFAULT_LIVENESS).path, [LivenessInput(2.7)])


@needs_pad_dev
@pytest.mark.parametrize("name", BONA_FIDE[:2] + PRINT_ATTACKS[:2])
def test_a_replayed_photo_is_judged_without_its_letterbox_bars(model, detector, name):
    """A 300x400 photo replayed at 640x480 comes with black bars (``fit_to_size``); the crop
    leaves them out, so the verdict is the photo's own, not that of a black-edged print."""
    from device.camera.base import fit_to_size
    from device.vision.liveness import picture_bounds

    photo = read_image(pad_dev(name))[0]
    boxed = fit_to_size(photo, (640, 480)).image
    left, top, right, bottom = picture_bounds(boxed)
    assert (left, top, bottom) == (140, 0, 480) and right == 500  # 360x480 in the middle
    assert picture_bounds(photo) == (0, 0, photo.shape[1], photo.shape[0])
    alone = model.score(photo, _face_box(detector, photo))
    replayed = model.score(boxed, _face_box(detector, boxed))
    assert (alone >= model.threshold) == (replayed >= model.threshold)
    assert abs(alone - replayed) < 0.2
