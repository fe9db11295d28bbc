"""The open-set decision's threshold: the card's curve read at the gallery's size."""

from __future__ import annotations

import pytest

from device.identification import Decision
from device.vision.models import DEFAULT_EMBEDDER, load_card

CARD = {"score": 0.55, "margin": 0.02, "fpir": 0.0005,
        "by_gallery_size": [[1, 0.40], [10, 0.45], [100, 0.50], [1000, 0.55]]}


def test_the_threshold_is_read_from_the_curve_linear_in_log_gallery_size():
    decision = Decision.from_card(CARD)
    assert decision.threshold_for(10) == pytest.approx(0.45)
    assert decision.threshold_for(round(10 ** 1.5)) == pytest.approx(0.475, abs=1e-3)
    assert decision.threshold_for(0) == pytest.approx(0.40)  # clamped below
    assert decision.threshold_for(10**6) == pytest.approx(0.55)  # clamped above
    assert decision.target_fpir == 0.0005 and decision.margin == 0.02


def test_a_threshold_set_by_hand_holds_at_every_gallery_size():
    decision = Decision.from_card(CARD, threshold=0.6)
    assert decision.threshold_for(1) == decision.threshold_for(5000) == 0.6
    assert decision.target_fpir is None


def test_a_card_without_a_curve_keeps_its_single_threshold():
    decision = Decision.from_card({"score": 0.5})
    assert decision.threshold_for(3) == decision.threshold_for(30000) == 0.5


def test_the_bundled_curve_rises_with_the_gallery():
    decision = Decision.from_card(load_card(DEFAULT_EMBEDDER).threshold)
    sizes = [1, 10, 100, 1000, 10000, 100000]
    thresholds = [decision.threshold_for(n) for n in sizes]
    assert thresholds == sorted(thresholds) and thresholds[0] < thresholds[-1]
