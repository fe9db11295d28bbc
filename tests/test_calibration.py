"""The open-set calibration's arithmetic, on embeddings and scores made up so the answer is
known (training/calibrate_open_set.py; no model is run)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from training.calibrate_open_set import (
    GALLERY_SIZES,
    INTERPOLATION,
    TARGET_FPIR,
    Comparisons,
    Faces,
    Genuine,
    TailModel,
    calibrate,
    cluster_interval,
    cosine_best_k,
    cosine_max,
    cosine_mean_template,
    interpolate,
    main,
    open_set_trial,
    sub_gallery_searches,
    t_norm,
    threshold_block,
    top_two,
    write_card,
)
from training.evaluate import best_two

CARD_KEYS = {"score", "margin", "metric", "fpir", "by_gallery_size", "interpolation",
             "set_for", "set_from", "measured_by"}


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def random_people(counts: list[int], dim: int = 32, spread: float = 0.3,
                  seed: int = 0) -> Faces:
    """People in random directions (so two people are nearly independent), each photo a
    little off its person's direction."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    centres = unit(rng.standard_normal((len(counts), dim)))
    rows = centres[labels] + spread * rng.standard_normal((len(labels), dim)) / math.sqrt(dim)
    return Faces(unit(rows), labels, [f"p{i}" for i in range(len(counts))])


def strangers_of(count: int, dim: int = 32, seed: int = 1) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((count, dim)))


def test_every_photo_is_searched_once_per_choice_of_enrolled_photo_with_its_person_out():
    faces, strangers = random_people([2, 3, 4, 2]), strangers_of(5)
    trial = open_set_trial(faces, strangers, variants=3)
    assert len(trial.searches) == 3 * (11 + 5)
    # A photo's own person is out of its gallery (3 others); a stranger meets all 4.
    assert list(trial.searches.gallery_size[:11]) == [3] * 11
    assert list(trial.searches.gallery_size[11:16]) == [4] * 5
    assert trial.comparisons.total == 3 * (11 * 3 + 5 * 4)


def test_a_leave_one_out_search_is_the_search_of_a_gallery_without_that_person():
    faces, strangers = random_people([3, 2, 4, 2, 3], seed=3), strangers_of(4)
    trial = open_set_trial(faces, strangers, variants=2)
    expected = []
    for variant in range(2):
        enrolled = faces.starts + variant % faces.counts
        for row, person in enumerate(faces.labels):
            others = enrolled[np.arange(faces.people) != person]
            _, best, second = best_two(faces.embeddings[[row]], faces.embeddings[others],
                                       faces.labels[others])
            expected.append((best[0], second[0]))
        _, best, second = best_two(strangers, faces.embeddings[enrolled],
                                   faces.labels[enrolled])
        expected.extend(zip(best, second, strict=True))
    got = np.stack([trial.searches.best, trial.searches.second], axis=1)
    assert np.allclose(got, np.array(expected), atol=1e-6)


def test_genuine_probes_are_the_photos_after_the_enrolled_one():
    faces = random_people([1, 2, 7, 3], spread=0.05)
    trial = open_set_trial(faces, strangers_of(3), variants=1)
    # Up to five probes each: 0 + 1 + 5 + 2; near-identical photos are all matched.
    assert len(trial.genuine.best) == 8 and trial.genuine.right.all()
    assert list(trial.genuine.person) == [1, 2, 2, 2, 2, 2, 3, 3]


def test_the_tail_model_reproduces_the_fpir_of_random_sub_galleries():
    faces, strangers = random_people([2] * 300, seed=5), strangers_of(600, seed=6)
    trial = open_set_trial(faces, strangers, variants=2, floor=0.2)
    model = TailModel.from_comparisons(trial.comparisons, exceedances=200)
    for size in (10, 60):
        searches = sub_gallery_searches(faces, strangers, size, draws=40, variants=2)
        for fpir in (0.05, 0.01):
            observed = searches.fpir(model.threshold(fpir, size))
            assert observed == pytest.approx(fpir, rel=0.2), (size, fpir)
    # The whole gallery too: the leave-one-out searches themselves.
    observed = trial.searches.fpir(model.threshold(0.02, faces.people - 1))
    assert observed == pytest.approx(0.02, rel=0.2)


def test_the_exponential_tail_fit_recovers_its_scale_and_extrapolates_beyond_the_data():
    rng = np.random.default_rng(0)
    total, scale = 2_000_000, 0.03
    # An exponential tail on top of a body: 20,000 of the comparisons exceed 0.3.
    scores = 0.3 + rng.exponential(scale, 20_000)
    model = TailModel.fit(scores, total, exceedances=5000)
    assert model.scale == pytest.approx(scale, rel=0.05)
    # p at 0.3 + 0.03 * ln(20,000 / 2e-9 / 2e6) = 0.3 + 0.03 * ln(5e6), far past the data:
    beyond = 0.3 + scale * math.log(20_000 / (total * 2e-9))
    assert model.counted(beyond) == 0
    assert model.p(beyond) == pytest.approx(2e-9, rel=0.3)
    assert model.threshold_for_p(2e-9) == pytest.approx(beyond, abs=0.01)


def test_fpir_from_p_is_one_minus_the_chance_that_no_person_passes():
    scores = np.linspace(0.9, 0.5, 1000)
    model = TailModel.fit(scores, 10_000, exceedances=500)
    p = model.p(0.6)
    assert p == pytest.approx(model.counted(0.6) / 10_000)
    assert model.fpir(0.6, 30) == pytest.approx(1 - (1 - p) ** 30)
    assert model.fpir(model.threshold(0.05, 30), 30) <= 0.05 + 1e-9


def test_thresholds_grow_with_gallery_size_and_hold_the_target_fpir():
    rng = np.random.default_rng(1)
    model = TailModel.fit(0.2 + rng.exponential(0.025, 200_000), 100_000_000)
    curve = model.curve(5e-4)
    assert [n for n, _ in curve] == list(GALLERY_SIZES)
    thresholds = [t for _, t in curve]
    assert all(b > a for a, b in zip(thresholds, thresholds[1:], strict=False))
    for n, t in curve:  # rounded up: never more strangers than the target
        assert model.fpir(t, n) <= 5e-4 + 1e-12
        assert model.fpir(t - 0.001, n) > 5e-4 * 0.9


def test_the_card_reads_the_curve_as_the_door_does():
    curve = [[1, 0.40], [10, 0.45], [100, 0.50], [1000, 0.56]]
    assert interpolate(curve, 1000) == pytest.approx(0.56)
    assert interpolate(curve, 0) == pytest.approx(0.40)  # clamped at both ends
    assert interpolate(curve, 10**6) == pytest.approx(0.56)
    assert interpolate(curve, round(10**1.5)) == pytest.approx(0.475, abs=1e-3)


def test_top_two_is_the_best_and_next_best_column():
    scores = np.array([[0.1, 0.9, 0.5], [0.7, -np.inf, 0.2]])
    column, best, second = top_two(scores)
    assert list(column) == [1, 0] and list(best) == [0.9, 0.7] and list(second) == [0.5, 0.2]
    _, one, none = top_two(scores[:, :1])
    assert list(one) == [0.1, 0.7] and np.isneginf(none).all()


def test_genuine_figures_split_the_probes_into_matched_mistaken_and_missed():
    genuine = Genuine(best=np.array([0.9, 0.8, 0.4, 0.7]), second=np.array([0.1, 0.2, 0.1, 0.69]),
                      right=np.array([True, False, True, True]), person=np.arange(4))
    figures = genuine.figures(0.5, margin=0.02)
    # 0: matched; 1: accepted as someone else; 2: below the threshold; 3: within the margin.
    assert figures == {"matched": 0.25, "mistaken": 0.25, "fnir": 0.75}
    assert genuine.figures(0.5, margin=0.0)["matched"] == 0.5


def test_several_templates_score_by_max_mean_template_or_best_k():
    templates = np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]], np.float32)
    probe = unit(np.array([[1.0, 1.0]]))
    assert cosine_max(probe, templates)[0, 0] == pytest.approx(math.sqrt(0.5))
    assert cosine_best_k(2)(probe, templates)[0, 0] == pytest.approx(math.sqrt(0.5))
    # The mean of the three is (0, 1/3), renormalised to (0, 1).
    assert cosine_mean_template(probe, templates)[0, 0] == pytest.approx(math.sqrt(0.5))
    assert cosine_mean_template(np.array([[0.0, 1.0]], np.float32),
                                templates)[0, 0] == pytest.approx(1.0)


def test_t_norm_counts_standard_deviations_above_the_probes_cohort_mean():
    cohort = unit(np.random.default_rng(2).standard_normal((50, 8)))
    probe = unit(np.random.default_rng(3).standard_normal((1, 8)))
    template = unit(np.random.default_rng(4).standard_normal((1, 8)))[:, None, :]
    raw, against = float(probe[0] @ template[0, 0]), (probe @ cohort.T)[0]
    expected = (raw - against.mean()) / against.std()
    assert t_norm(cohort)(probe, template)[0, 0] == pytest.approx(expected, rel=1e-5)


def test_the_interval_resamples_whole_strangers():
    hits = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    low, high = cluster_interval(hits, np.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 3]))
    assert low < 0.4 < high and low >= 0.0 and high <= 1.0


def test_comparisons_are_merged_highest_first():
    merged = Comparisons.concatenate([Comparisons(np.array([0.5, 0.3]), np.array([1, 2]), 10),
                                      Comparisons(np.array([0.4]), np.array([1]), 5)])
    assert list(merged.scores) == [0.5, 0.4, 0.3] and merged.total == 15
    assert merged.distinct_among_top(2) == 1


@pytest.fixture(scope="module")
def report() -> dict:
    faces = random_people([3] * 150, spread=0.4, seed=7)
    return calibrate(faces, strangers_of(300, seed=8), variants=2,
                     sub_gallery_draws={10: 5, 30: 3}, experiments=False)


def test_the_card_block_has_the_agreed_shape_and_grows_with_the_gallery(report):
    block = threshold_block(report, "python -m training.calibrate_open_set --data D")
    assert set(block) == CARD_KEYS
    sizes = [n for n, _ in block["by_gallery_size"]]
    thresholds = [t for _, t in block["by_gallery_size"]]
    assert sizes == list(GALLERY_SIZES)
    assert all(b >= a for a, b in zip(thresholds, thresholds[1:], strict=False))
    assert block["score"] == dict(block["by_gallery_size"])[1000]
    assert block["fpir"] == TARGET_FPIR and block["margin"] == 0.02
    assert block["interpolation"] == INTERPOLATION
    assert "normal" not in block["set_from"]
    assert f"{report['stranger_searches']['total']:,} stranger searches" in block["set_from"]


def test_writing_the_card_replaces_the_threshold_and_keeps_everything_else(report, tmp_path):
    card = {"name": "m", "threshold": {"score": 0.5, "margin": 0.02, "fpir": 0.001,
                                       "set_from": "normal-tail estimate"},
            "verification_threshold": {"score": 0.394},
            "accuracy": {"tar_at_far_1e-3": 0.98, "at_default_threshold": {"fpir": 0.0}}}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(card, indent=2) + "\n")
    write_card(path, report, "python -m training.calibrate_open_set")
    written = json.loads(path.read_text())
    assert list(written) == list(card)
    assert written["verification_threshold"] == card["verification_threshold"]
    assert set(written["threshold"]) == CARD_KEYS
    at_default = written["accuracy"]["at_default_threshold"]
    assert written["accuracy"]["tar_at_far_1e-3"] == 0.98
    assert at_default["threshold"] == written["threshold"]["score"]
    assert {"fpir", "fnir", "matched", "mistaken", "stranger_searches"} <= set(at_default)
    assert "normal" not in path.read_text()


def test_the_report_checks_the_model_on_every_gallery_size_it_measured(report):
    sizes = [check["gallery_size"] for check in report["gallery_size_check"]]
    assert sizes == [10, 30, 149]
    for check in report["gallery_size_check"]:
        assert len(check["curve"]["threshold"]) == len(check["curve"]["model"])
        assert all(a["accepted"] >= 0 for a in check["at"])


def test_the_command_has_help(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for option in ("--data", "--strangers", "--cache", "--model", "--json", "--plot",
                   "--write-card", "--target-fpir"):
        assert option in out


def test_the_card_keeps_the_slowest_falling_tail_with_enough_distinct_pairs():
    rng = np.random.default_rng(3)
    # A body falling with scale 0.02 and a far tail of 300 comparisons with scale 0.05.
    scores = np.sort(np.concatenate([0.3 + rng.exponential(0.02, 20_000),
                                     0.45 + rng.exponential(0.05, 300)]))[::-1]
    comparisons = Comparisons(scores, np.arange(len(scores)), 10_000_000)
    chosen = TailModel.heaviest(comparisons, candidates=(5000, 200), min_distinct=50)
    assert chosen.exceedances == 200 and chosen.scale > 0.04
    # Repeats of one photo pair are not evidence: too few distinct pairs, the body's fit.
    repeated = Comparisons(scores, np.arange(len(scores)) // 10, 10_000_000)
    assert TailModel.heaviest(repeated, candidates=(5000, 200), min_distinct=50
                              ).exceedances == 5000
