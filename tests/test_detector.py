"""The detector on real photos: couples, crowds, and pictures with no face at all."""

from __future__ import annotations

import pytest

from device.vision.detector import short_range_anchors
from tests.conftest import DATA, load


def test_blazeface_short_range_has_896_anchors_inside_the_unit_square():
    anchors = short_range_anchors()
    assert anchors.shape == (896, 2)
    assert anchors.min() > 0 and anchors.max() < 1


def test_finds_both_faces_of_the_couple(pipeline):
    detections = pipeline.detector.detect(load(DATA / "couple.jpg"))
    assert len(detections) == 2
    left, right = sorted(detections, key=lambda d: d.box[0])
    assert left.box[2] < right.box[0]  # two separate faces, not one box twice


def test_finds_at_least_six_faces_in_the_crowded_selfie(pipeline):
    faces = pipeline.process(load(DATA / "selfie-many-people.jpg"), thorough=True)
    assert len(faces) >= 6


@pytest.mark.parametrize("name", ["page.png", "chelsea.png"])
def test_finds_no_face_in_pictures_without_people(pipeline, name):
    assert pipeline.process(load(DATA / name), thorough=True) == []


def test_boxes_are_clipped_to_the_frame(pipeline):
    frame = load(DATA / "selfie-many-people.jpg")
    height, width = frame.shape[:2]
    for detection in pipeline.detector.detect(frame, thorough=True):
        x1, y1, x2, y2 = detection.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
