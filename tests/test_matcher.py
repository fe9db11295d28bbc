"""The matcher's arithmetic, on random unit vectors (real faces are tested with the pipeline).

In 128 dimensions two random unit vectors have a cosine of about 0 +- 0.09, so a template plus
a little noise is far closer to its own person than to anyone else.
"""

import numpy as np
import pytest

from device.gallery import Candidate, Match, Matcher

DIM = 128


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def units(rng, n, dim=DIM):
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def near(rng, vector, noise=0.3):
    """A probe like ``vector``: cosine about 1 / sqrt(1 + noise**2)."""
    probe = vector + noise * units(rng, 1, vector.size)[0]
    return probe / np.linalg.norm(probe)


def brute_force_best(person_ids, matrix, probe):
    """Best cosine per person by a plain loop, the reference for the vectorised code."""
    scores = (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)) @ (
        probe / np.linalg.norm(probe)
    )
    best = {}
    for person_id, score in zip(person_ids, scores, strict=True):
        best[person_id] = max(best.get(person_id, -2.0), float(score))
    return best


def test_search_scores_each_person_by_their_best_template(rng):
    person_ids = ["carol"] * 2 + ["alice"] * 4 + ["bob"] * 3
    matrix = units(rng, len(person_ids))
    probe = near(rng, matrix[4])  # alice's third template
    found = Matcher(person_ids, matrix).search(probe, top_k=3)

    expected = brute_force_best(person_ids, matrix, probe)
    assert [c.person_id for c in found] == sorted(expected, key=expected.get, reverse=True)
    assert found[0].person_id == "alice"
    for candidate in found:
        assert candidate.score == pytest.approx(expected[candidate.person_id], abs=1e-6)


def test_rows_need_not_arrive_grouped_by_person(rng):
    person_ids = ["alice", "bob", "alice", "carol", "bob", "alice"]
    matrix = units(rng, len(person_ids))
    matcher = Matcher(person_ids, matrix)
    for row in range(len(person_ids)):
        probe = near(rng, matrix[row], noise=0.1)
        expected = brute_force_best(person_ids, matrix, probe)
        found = {c.person_id: c.score for c in matcher.search(probe, top_k=10)}
        assert found == pytest.approx(expected, abs=1e-6)
    assert len(matcher) == 6 and matcher.person_count == 3


def test_search_returns_at_most_top_k_people_best_first(rng):
    person_ids = [f"p{i:03d}" for i in range(50) for _ in range(3)]
    matrix = units(rng, len(person_ids))
    matcher = Matcher(person_ids, matrix)
    found = matcher.search(near(rng, matrix[30]), top_k=5)
    assert len(found) == 5 and found[0].person_id == "p010"
    assert [c.score for c in found] == sorted((c.score for c in found), reverse=True)
    assert len({c.person_id for c in found}) == 5
    assert len(matcher.search(matrix[0], top_k=500)) == 50


def test_rows_and_probes_are_scaled_to_unit_length(rng):
    matrix = units(rng, 3)
    given = matrix * np.array([[3.0], [0.5], [10.0]], np.float32)
    probe = matrix[2] * 7.0
    matcher = Matcher(["a", "b", "c"], given)
    assert matcher.search(probe, top_k=1)[0] == Candidate("c", pytest.approx(1.0))
    assert np.array_equal(given[2], matrix[2] * 10.0) and np.array_equal(probe, matrix[2] * 7.0)


def test_a_clear_match_is_accepted(rng):
    person_ids = ["alice"] * 3 + ["bob"] * 3
    matrix = units(rng, 6)
    match = Matcher(person_ids, matrix).decide(near(rng, matrix[1]), threshold=0.5, margin=0.1)
    assert match.decision == "match" and match.person_id == "alice"
    assert match.score > 0.9 and match.runner_up_score < 0.4 and match.closest_id == "alice"


def test_a_face_below_the_threshold_is_unknown_but_its_closest_person_is_told(rng):
    matrix = units(rng, 4)
    stranger = units(rng, 1)[0]
    match = Matcher(["a", "a", "b", "b"], matrix).decide(stranger, threshold=0.5, margin=0.0)
    assert match.decision == "unknown" and match.person_id is None
    assert match.closest_id in {"a", "b"} and match.score < 0.5


def test_a_probe_as_close_to_two_people_is_unknown_by_the_margin_rule(rng):
    alice, bob = units(rng, 2)
    between = (alice + bob) / np.linalg.norm(alice + bob)  # cosine about 0.7 to both
    matcher = Matcher(["alice", "bob"], np.stack([alice, bob]))

    match = matcher.decide(between, threshold=0.5, margin=0.05)
    assert match.decision == "unknown" and match.person_id is None
    assert match.score >= 0.5 and match.score - match.runner_up_score < 0.05
    # Without the margin rule the same probe would have opened the door.
    assert matcher.decide(between, threshold=0.5, margin=0.0).decision == "match"


def test_several_templates_of_one_person_do_not_count_as_a_runner_up(rng):
    alice = units(rng, 1)[0]
    copies = np.stack([near(rng, alice, 0.05) for _ in range(4)])
    match = Matcher(["alice"] * 4, copies).decide(alice, threshold=0.5, margin=0.2)
    assert match == Match("alice", pytest.approx(match.score), -1.0, "match", "alice")


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_decide_agrees_with_the_top_two_people_of_search(rng, dtype):
    person_ids = [f"p{i:02d}" for i in range(30) for _ in range(1 + i % 4)]
    matrix = units(rng, len(person_ids))
    matcher = Matcher(person_ids, matrix, dtype=dtype)
    for row in range(0, len(person_ids), 3):
        probe = near(rng, matrix[row], noise=2.0)
        first, second = matcher.search(probe, top_k=2)
        match = matcher.decide(probe, threshold=0.0, margin=0.0)
        assert match.closest_id == first.person_id == match.person_id
        assert (match.score, match.runner_up_score) == pytest.approx((first.score, second.score))


def test_float16_ranks_people_as_float32_does(rng):
    person_ids = [f"p{i:03d}" for i in range(300) for _ in range(5)]
    matrix = units(rng, len(person_ids))
    full, half = Matcher(person_ids, matrix), Matcher(person_ids, matrix, dtype=np.float16)
    probes = np.stack([near(rng, matrix[row], noise=1.0) for row in range(0, 1500, 30)])
    for probe in probes:
        expected, found = full.search(probe, top_k=5), half.search(probe, top_k=5)
        assert [c.person_id for c in found] == [c.person_id for c in expected]
        assert [c.score for c in found] == pytest.approx([c.score for c in expected], abs=1e-3)
    assert half.nbytes < 0.6 * full.nbytes + 2**21  # half the matrix, plus a 1 MiB buffer


def test_float16_scores_are_those_of_the_stored_float16_values(rng):
    # More rows than one widening block, so the block loop and its last partial block run;
    # the widening trick must get signs, exponents and mantissas right.
    person_ids = [f"p{i}" for i in range(5000)]
    matcher = Matcher(person_ids, units(rng, 5000), dtype=np.float16)
    assert matcher.matrix.dtype == np.float16
    probe = units(rng, 1)[0]
    found = matcher.search(probe, top_k=5000)
    expected = matcher.matrix.astype(np.float32) @ probe
    assert {c.person_id: c.score for c in found} == {
        person_id: pytest.approx(float(score), abs=1e-6)
        for person_id, score in zip(person_ids, expected, strict=True)
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_search_many_agrees_with_search(rng, dtype):
    person_ids = [f"p{i:02d}" for i in range(40) for _ in range(3)]
    matrix = units(rng, len(person_ids))
    matcher = Matcher(person_ids, matrix, dtype=dtype)
    probes = np.stack([near(rng, matrix[row]) for row in range(0, 120, 7)])
    many = matcher.search_many(probes, top_k=4)
    assert len(many) == len(probes)
    for probe, found in zip(probes, many, strict=True):
        single = matcher.search(probe, top_k=4)
        assert [c.person_id for c in found] == [c.person_id for c in single]
        assert [c.score for c in found] == pytest.approx([c.score for c in single], abs=1e-5)


@pytest.mark.parametrize("shape", [(0, 0), (0, DIM)])
def test_an_empty_gallery_finds_nobody(rng, shape):
    matcher = Matcher([], np.empty(shape, np.float32))
    probe = units(rng, 1)[0]
    assert matcher.search(probe) == []
    assert matcher.decide(probe, threshold=0.5, margin=0.05) == Match(
        None, -1.0, -1.0, "unknown", None
    )
    assert matcher.search_many(np.stack([probe, probe])) == [[], []]
    assert len(matcher) == 0 and matcher.person_count == 0


def test_a_probe_of_the_wrong_length_or_with_nan_is_refused(rng):
    matcher = Matcher(["a"], units(rng, 1))
    with pytest.raises(ValueError, match="64"):
        matcher.search(units(rng, 1, 64)[0])
    with pytest.raises(ValueError, match="NaN"):
        matcher.decide(np.full(DIM, np.nan, np.float32), threshold=0.5, margin=0.05)
    with pytest.raises(ValueError, match="one"):
        matcher.search(units(rng, 2))


def test_a_zero_probe_matches_nobody(rng):
    matcher = Matcher(["a", "b"], units(rng, 2))
    match = matcher.decide(np.zeros(DIM, np.float32), threshold=0.3, margin=0.05)
    assert match.decision == "unknown" and match.score == 0.0
