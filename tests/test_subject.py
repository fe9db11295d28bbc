"""Which face of an enrolment photo is enrolled: the real models on real photos, and the rule's
geometry on hand-made boxes (see device/enrolment/subject.py, docs/recognition.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from device.enrolment.subject import (
    SIMILAR_PROMINENCE,
    choose_subject,
    offset_from_centre,
    prominence,
)
from device.errors import FacegateError, SeveralFaces
from tests.conftest import DATA, load
from training import measure_subject_rule

LFW_A = Path(__file__).parents[2] / "shared" / "data" / "lfw-a"


def faces_of(pipeline, path: Path):
    frame = load(path)
    return pipeline.process(frame, thorough=True), frame.shape


# --- real photos ------------------------------------------------------------------------------

def test_couple_of_similar_faces_is_refused_listing_both(pipeline):
    faces, shape = faces_of(pipeline, DATA / "couple.jpg")
    with pytest.raises(SeveralFaces) as refused:
        choose_subject(faces, shape)
    assert isinstance(refused.value, FacegateError)
    assert str(refused.value) == ("2 faces of similar size found; pick one or use a photo of "
                                  "one person")
    assert sorted(c["index"] for c in refused.value.faces) == [0, 1]
    for candidate in refused.value.faces:
        np.testing.assert_allclose(candidate["box"], faces[candidate["index"]].box, atol=0.1)


def test_selfie_of_many_people_is_refused_listing_only_the_prominent_faces(pipeline):
    faces, shape = faces_of(pipeline, DATA / "selfie-many-people.jpg")
    with pytest.raises(SeveralFaces) as refused:
        choose_subject(faces, shape)
    candidates = refused.value.faces
    assert 2 <= len(candidates) < len(faces)
    assert str(refused.value).startswith(f"{len(candidates)} faces of similar size found")
    shares = [c["prominence"] for c in candidates]
    assert shares[0] == 1.0 and shares == sorted(shares, reverse=True)
    assert min(shares) >= SIMILAR_PROMINENCE
    # The faces cut by the left edge of the selfie are not worth offering.
    assert all(c["box"][0] > 0 for c in candidates)


def test_photo_with_one_face_gives_that_face(pipeline, people):
    for paths in people.values():
        faces, shape = faces_of(pipeline, paths[0])
        assert len(faces) == 1
        assert choose_subject(faces, shape) == 0


def test_face_in_the_middle_is_chosen_over_a_half_visible_face_at_the_edge(pipeline):
    # Al Gore, and beside him a face cut in half by the right edge of the frame: the old rule
    # (a second face of a quarter of the largest one's area) refused this photo.
    faces, shape = faces_of(pipeline, DATA / "background" / "Al_Gore_0003.jpg")
    assert len(faces) == 2
    edge = faces[1]
    assert edge.box[2] == shape[1] and edge.area >= 0.25 * faces[0].area
    assert measure_subject_rule.old_rule(measure_subject_rule.Photo("", "", shape[:2], faces)
                                         ) is None
    assert choose_subject(faces, shape) == 0


def test_face_in_the_middle_is_chosen_over_a_smaller_face_in_the_background(pipeline):
    faces, shape = faces_of(pipeline, DATA / "background" / "Abdullah_Gul_0006.jpg")
    assert len(faces) == 2
    assert faces[1].area >= 0.25 * faces[0].area  # refused by the old rule too
    assert choose_subject(faces, shape) == 0


@pytest.mark.skipif(not LFW_A.is_dir(), reason=f"{LFW_A} is missing (the project's shared "
                                                "data, see ../shared/data/README.md)")
def test_face_chosen_is_the_person_of_the_folder_and_the_edge_face_is_not(pipeline):
    faces, shape = faces_of(pipeline, LFW_A / "Al_Gore" / "Al_Gore_0003.jpg")
    threshold = pipeline.embedder_card.card["verification_threshold"]["score"]
    others = [faces_of(pipeline, path)[0][0].embedding
              for path in sorted((LFW_A / "Al_Gore").glob("*.jpg"))
              if path.name != "Al_Gore_0003.jpg"]
    chosen = faces[choose_subject(faces, shape)]
    assert np.median([chosen.embedding @ other for other in others]) >= threshold
    assert np.median([faces[1].embedding @ other for other in others]) < threshold


def test_measurement_has_help_text(capsys):
    with pytest.raises(SystemExit) as stopped:
        measure_subject_rule.main(["--help"])
    assert stopped.value.code == 0
    assert "--cache" in capsys.readouterr().out


# --- the rule's geometry, on hand-made boxes --------------------------------------------------

@dataclass(frozen=True)
class Boxed:
    box: np.ndarray

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


def boxed(centre_x: float, centre_y: float, side: float) -> Boxed:
    half = side / 2
    return Boxed(np.array([centre_x - half, centre_y - half, centre_x + half, centre_y + half]))


FRAME = (400, 600, 3)  # height, width: the centre is (300, 200), half the diagonal ~360.6


def test_offset_is_zero_at_the_centre_and_one_in_a_corner():
    assert offset_from_centre([290, 190, 310, 210], FRAME) == 0.0
    assert offset_from_centre([0, 0, 0, 0], FRAME) == pytest.approx(1.0)
    assert offset_from_centre([600, 400, 600, 400], FRAME) == pytest.approx(1.0)


def test_prominence_halves_halfway_to_a_corner():
    centre, halfway = boxed(300, 200, 40), boxed(450, 300, 40)
    assert prominence(centre, FRAME) == pytest.approx(1600)
    assert prominence(halfway, FRAME) == pytest.approx(800)


def test_only_the_part_of_a_box_inside_the_frame_counts():
    cut = Boxed(np.array([560.0, 180.0, 640.0, 220.0]))  # half of it beyond the right edge
    inside = Boxed(np.array([560.0, 180.0, 600.0, 220.0]))
    assert prominence(cut, FRAME) == pytest.approx(prominence(inside, FRAME))


def test_single_face_is_chosen_wherever_it_is():
    assert choose_subject([boxed(20, 20, 30)], FRAME) == 0


def test_a_face_at_the_side_does_not_compete_with_a_larger_one_in_the_middle():
    subject, side = boxed(300, 200, 100), boxed(560, 200, 80)
    assert choose_subject([subject, side], FRAME) == 0
    assert choose_subject([side, subject], FRAME) == 1


def test_centrality_can_beat_size_when_the_larger_face_is_far_off():
    # The larger face is two thirds of the way to a corner: it counts for less than a third.
    middle, corner = boxed(300, 200, 90), boxed(520, 320, 100)
    assert choose_subject([corner, middle], FRAME) == 1


def test_two_faces_alike_in_size_and_place_are_ambiguous():
    left, right = boxed(220, 200, 100), boxed(380, 200, 96)
    with pytest.raises(SeveralFaces) as refused:
        choose_subject([left, right], FRAME)
    assert [c["index"] for c in refused.value.faces] == [0, 1]
    assert refused.value.faces[1]["prominence"] == pytest.approx(96 ** 2 / 100 ** 2, abs=1e-3)
    assert str(refused.value).startswith("2 faces of similar size found")


def test_only_rivals_above_the_share_are_listed():
    subject, rival, small = boxed(300, 200, 100), boxed(400, 200, 90), boxed(100, 100, 40)
    with pytest.raises(SeveralFaces) as refused:
        choose_subject([subject, rival, small], FRAME)
    assert [c["index"] for c in refused.value.faces] == [0, 1]


def test_no_face_is_the_callers_business():
    with pytest.raises(ValueError):
        choose_subject([], FRAME)
