"""The evaluation's arithmetic, on embeddings made up so that the right answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.evaluate import (
    FOLDS,
    PAIRS_PER_FOLD,
    EmbeddedSet,
    best_threshold,
    make_pairs,
    open_set,
    tar_at_far,
    verification,
)


def clustered_set(people: int, per_person: int, spread: float, seed: int = 0,
                  prefix: str = "p") -> EmbeddedSet:
    """Unit embeddings around one random direction per person; ``spread`` sets how far."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((people, 128))
    labels = np.repeat(np.arange(people), per_person)
    rows = centres[labels] / np.linalg.norm(centres[labels], axis=1, keepdims=True)
    rows = rows + spread * rng.standard_normal(rows.shape) / np.sqrt(128)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    paths = [f"{prefix}{label}/{k}.jpg" for label, k in zip(labels, range(len(labels)),
                                                            strict=True)]
    return EmbeddedSet(paths, labels, [f"{prefix}{i}" for i in range(people)],
                       rows.astype(np.float32), np.ones(len(labels), bool))


def test_pairs_are_balanced_and_no_person_is_in_two_folds():
    labels = np.repeat(np.arange(60), 3)
    pairs, same, folds = make_pairs(labels)
    assert len(pairs) == FOLDS * 2 * PAIRS_PER_FOLD and same.sum() == FOLDS * PAIRS_PER_FOLD
    assert np.array_equal(same, labels[pairs[:, 0]] == labels[pairs[:, 1]])
    fold_of = {}
    for (i, j), fold in zip(pairs, folds, strict=True):
        for person in (labels[i], labels[j]):
            assert fold_of.setdefault(person, fold) == fold


def test_well_separated_people_verify_perfectly_and_noise_does_not():
    assert verification(clustered_set(60, 3, spread=0.3))["accuracy_mean"] == 1.0
    assert verification(clustered_set(60, 3, spread=30.0))["accuracy_mean"] < 0.7


def test_an_image_without_a_face_counts_as_a_wrong_answer():
    data = clustered_set(60, 3, spread=0.3)
    data.found[:30] = False
    result = verification(data)
    assert result["images_without_face"] == 30 and result["accuracy_mean"] < 1.0


def test_threshold_and_true_accept_rate_follow_their_definitions():
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.2])
    same = np.array([True, True, True, False, False, False])
    assert 0.4 < best_threshold(scores, same) < 0.7
    tar, threshold = tar_at_far(scores, same, far=0.0)
    assert tar == 1.0 and 0.4 < threshold <= 0.7


def test_open_set_counts_strangers_accepted_and_genuine_probes_missed():
    people = clustered_set(50, 4, spread=0.5, seed=1)
    strangers = clustered_set(40, 1, spread=0.5, seed=2, prefix="s")
    result = open_set(people, strangers, margin=0.0, threshold=0.5)
    assert result["enrolled_people"] == 50 and result["genuine_probes"] == 150
    assert result["at_threshold"]["fnir"] == 0.0  # same-person cosines are far above 0.5
    assert result["at_threshold"]["fpir"] == 0.0  # random directions are near 0
    strict = open_set(people, strangers, margin=0.0, threshold=0.999)
    assert strict["at_threshold"]["fnir"] == 1.0 and strict["at_threshold"]["fpir"] == 0.0
    lax = open_set(people, strangers, margin=0.0, threshold=-1.0)
    assert lax["at_threshold"]["fpir"] == 1.0  # everyone is someone at -1


def test_the_margin_turns_a_probe_close_to_two_people_into_unknown():
    people = clustered_set(20, 2, spread=0.01, seed=3)
    twin = people.embeddings[people.labels == 1][0]
    people.embeddings[people.labels == 0] = twin  # person 0 looks exactly like person 1
    strangers = clustered_set(10, 1, spread=0.01, seed=4, prefix="s")
    plain = open_set(people, strangers, margin=0.0, threshold=0.5)
    guarded = open_set(people, strangers, margin=0.05, threshold=0.5)
    assert guarded["at_threshold"]["fnir"] > plain["at_threshold"]["fnir"]


def test_the_door_protocol_judges_each_probe_by_its_subject_face(tmp_path):
    import cv2

    from training.evaluate_door import score

    def photo(name: str) -> Path:
        path = tmp_path / name
        cv2.imwrite(str(path), np.zeros((250, 250, 3), np.uint8))
        return path

    centre, edge = [90.0, 90.0, 160.0, 160.0], [0.0, 100.0, 40.0, 140.0]

    def face(box, person, decision="match"):
        return {"box": box, "person": person, "decision": decision, "score": 0.7,
                "threshold": 0.53}

    people = {"Ann": [photo("a1.jpg"), photo("a2.jpg"), photo("a3.jpg")],
              "Bob": [photo("b1.jpg"), photo("b2.jpg")]}
    enrolled = [{"status": "enrolled"}, {"status": "refused", "code": "poor_quality",
                                         "reason": "blurred"}]
    genuine = {
        # Ann at the centre, Bob at the edge: matched, and Bob's face is no mistake.
        str(people["Ann"][1]): [face(centre, "Ann"), face(edge, "Bob")],
        str(people["Ann"][2]): [face(centre, "Bob")],  # mistaken
        str(people["Bob"][1]): [face(centre, None, "unknown")],  # missed
    }
    strangers = {str(photo("s1.jpg")): [face(centre, None, "unknown"), face(edge, "Ann")],
                 str(photo("s2.jpg")): [face(centre, "Bob")]}
    figures = score(people, enrolled, genuine, strangers)
    assert figures["genuine_probes"] == 3 and figures["enrolment_refused"] == 1
    assert figures["genuine_matched"] == round(1 / 3, 4)
    assert figures["mistaken"] == round(1 / 3, 4)
    assert figures["strangers_accepted"] == 0.5  # s2 only: s1's match is a face at the edge
    assert figures["any_face"]["strangers_accepted"] == 1.0
    assert figures["threshold_in_force"] == 0.53
