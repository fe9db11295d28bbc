"""Calibrate the door's open-set threshold on many stranger searches, as a function of gallery size.

A stranger at the door is compared with every enrolled person, so the more people enrolled,
the more chances to resemble one: the threshold that keeps the share of strangers accepted
(FPIR, per presentation) at a target has to grow with the gallery. This module measures that
on the development folders and writes the curve into the embedder's card:

- **Stranger searches.** Leave-one-out: each lfw-a person in turn is taken out of the gallery
  (one photo of each other person enrolled) and all their photos are searched as strangers;
  lfw-a-singles are searched against the full gallery. Repeated for several choices of the
  enrolled photo (the first, the second, ... wrapping round), some 50,000 searches.
- **The tail model.** p(t), the share of (stranger photo, enrolled person) comparisons
  scoring at least t, over every comparison those searches make (some 41 million, each
  enrolled person counting once, as at the door). A stranger is
  accepted when any of N people scores over t, so FPIR(t, N) ~= 1 - (1 - p(t)) ** N. In its
  far tail p(t) is an exponential fitted by its mean excess; the far tail is a few look-alike
  pairs of people and falls more slowly than the body, so of the fits from several starts
  the slowest-falling one (with 50+ distinct photo pairs above its start) is kept. It
  carries the curve to 100,000 people, where no data set here reaches.
- **The check.** Empirical FPIR on random sub-galleries of 10 to 829 people against the model.
- **The genuine side** at each threshold, and people-disjoint experiments (score
  normalisation, several templates per person, the margin) judged on FNIR at a fixed FPIR.

    python -m training.calibrate_open_set --data ../shared/data/lfw-a \\
        --strangers ../shared/data/lfw-a-singles --cache var/eval-cache \\
        --json bench/results/open-set-calibration.json \\
        --plot bench/results/fpir-vs-gallery-size.png \\
        --write-card models/face_recognition_sface_2021dec_int8dr_xnnpack.json   # make calibrate

Method and figures: docs/recognition.md, "Open-set calibration".
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.vision.models import default_models_dir
from device.vision.pipeline import FacePipeline
from training.evaluate import (
    KNOWN_LABEL_NOISE,
    KNOWN_WRONG_FACE,
    EmbeddedSet,
    best_two,
    embed_folder,
    embedding_cache_tag,
)

GALLERY_SIZES = (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
# Random sub-galleries for the model check: size -> draws per choice of enrolled photo.
SUB_GALLERY_DRAWS = {10: 100, 30: 50, 100: 20, 300: 10}
TARGET_FPIR = 1e-3
FPIR_CHOICES = (1e-3, 5e-4, 3e-4, 2e-4, 1e-4)
VARIANTS = 10  # choices of the enrolled photo
PROBES_PER_PERSON = 5  # genuine probes: the photos after the enrolled one(s)
TAIL_EXCEEDANCES = 2000  # comparisons above the start of the fitted tail (a single fit)
# The far tail is a few look-alike pairs of people and heavier than the body's: the card's fit
# is the heaviest of these starts (top k comparisons) that still has MIN_DISTINCT distinct
# photo pairs above it.
TAIL_CANDIDATES = (5000, 2000, 1000, 500, 200, 100)
MIN_DISTINCT = 50
SCORE_FLOOR = 0.25  # comparisons below this never matter for a door's threshold
# The one threshold the cards had before this calibration (set from 499 strangers).
PREVIOUS_THRESHOLD = 0.50
INTERPOLATION = "linear in log10(gallery size), clamped at the ends"
# Photos of lfw-a whose largest face is someone else (training.evaluate.KNOWN_WRONG_FACE,
# found by looking at the top-scoring impostor pairs) are left out like KNOWN_LABEL_NOISE,
# and reported. A relative or look-alike stays in: that is the tail the door must face.


# --- the faces -------------------------------------------------------------------------------

@dataclass
class Faces:
    """Unit embeddings grouped by person: each person's rows are contiguous, in file order."""

    embeddings: np.ndarray  # (n, dim) float32
    labels: np.ndarray  # (n,) person index 0..people-1, non-decreasing
    names: list[str]

    @property
    def people(self) -> int:
        return len(self.names)

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.people)

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(int)

    def subset(self, people: np.ndarray) -> Faces:
        """The rows of the people flagged in ``people`` (a boolean mask over people)."""
        rows = people[self.labels]
        kept, labels = np.unique(self.labels[rows], return_inverse=True)
        return Faces(self.embeddings[rows], labels, [self.names[i] for i in kept])


def faces_from(data: EmbeddedSet, leave_out: dict[str, str]) -> Faces:
    """The photos with a face found, less those named in ``leave_out`` (file name -> why)."""
    keep = data.found & np.array([Path(p).name not in leave_out for p in data.paths], bool)
    kept, labels = np.unique(data.labels[keep], return_inverse=True)
    return Faces(data.embeddings[keep].astype(np.float32), labels,
                 [data.names[i] for i in kept])


def person_rows(faces: Faces, people: np.ndarray, first_rank: int, count: int) -> np.ndarray:
    """(len(people), count) rows: each person's photos from ``first_rank`` on, wrapping round."""
    ranks = first_rank + np.arange(count)[None, :]
    return faces.starts[people][:, None] + ranks % faces.counts[people][:, None]


# --- scores ----------------------------------------------------------------------------------
# A scorer turns probes (n, dim) and templates (people, k, dim) into (n, people) scores, one
# per person: the door's own is the best cosine over the person's templates (unit rows, so a
# dot product is a cosine).

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def cosine_max(probes: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """The door's rule: a person scores the best cosine over their templates."""
    people, k, dim = templates.shape
    scores = probes @ templates.reshape(people * k, dim).T
    return scores.reshape(len(probes), people, k).max(2)


def cosine_mean_template(probes: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """One template per person: the mean of theirs, scaled to unit length again."""
    mean = templates.mean(1)
    return probes @ (mean / np.linalg.norm(mean, axis=1, keepdims=True)).T


def cosine_best_k(k: int) -> Scorer:
    """A person scores the mean of their ``k`` best template cosines."""
    def score(probes: np.ndarray, templates: np.ndarray) -> np.ndarray:
        people, n, dim = templates.shape
        scores = (probes @ templates.reshape(people * n, dim).T).reshape(len(probes), people, n)
        return np.sort(scores, axis=2)[:, :, -k:].mean(2)
    return score


def cohort_stats(rows: np.ndarray, cohort: np.ndarray, top_k: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each row's cosines to the cohort (its ``top_k`` best)."""
    scores = rows @ cohort.T
    if top_k is not None and top_k < scores.shape[1]:
        scores = -np.partition(-scores, top_k - 1, axis=1)[:, :top_k]
    return scores.mean(1), scores.std(1)


def t_norm(cohort: np.ndarray) -> Scorer:
    """Cohort T-norm: a probe's cosines in standard deviations above its cohort mean."""
    def score(probes: np.ndarray, templates: np.ndarray) -> np.ndarray:
        mean, std = cohort_stats(probes, cohort)
        return (cosine_max(probes, templates) - mean[:, None]) / std[:, None]
    return score


def as_norm(cohort: np.ndarray, top_k: int) -> Scorer:
    """Adaptive s-norm: the mean of the score normalised by the probe's and by the template's
    ``top_k`` closest cohort faces (one template per person)."""
    def score(probes: np.ndarray, templates: np.ndarray) -> np.ndarray:
        raw = cosine_max(probes, templates)
        p_mean, p_std = cohort_stats(probes, cohort, top_k)
        g_mean, g_std = cohort_stats(templates[:, 0], cohort, top_k)
        return 0.5 * ((raw - p_mean[:, None]) / p_std[:, None]
                      + (raw - g_mean[None, :]) / g_std[None, :])
    return score


def top_two(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of (n, people) scores: the best column, its score and the next-best score
    (-inf with one person)."""
    if scores.shape[1] == 1:
        return (np.zeros(len(scores), int), scores[:, 0].copy(),
                np.full(len(scores), -np.inf, scores.dtype))
    two = np.argpartition(-scores, 1, axis=1)[:, :2]
    pair = np.take_along_axis(scores, two, axis=1)
    first = pair.argmax(1)
    rows = np.arange(len(scores))
    return two[rows, first], pair[rows, first], pair[rows, 1 - first]


# --- searches --------------------------------------------------------------------------------

@dataclass
class Searches:
    """Stranger searches: each one stranger photo against one gallery without their person."""

    best: np.ndarray  # the best person's score
    second: np.ndarray  # the next-best person's
    stranger: np.ndarray  # the stranger's identity, for resampling whole people
    gallery_size: np.ndarray  # people in the gallery searched

    def __len__(self) -> int:
        return len(self.best)

    def accepted(self, threshold: float, margin: float = 0.0) -> np.ndarray:
        return (self.best >= threshold) & (self.best - self.second >= margin)

    def fpir(self, threshold: float, margin: float = 0.0) -> float:
        """Share of the searches in which the stranger is accepted as someone."""
        return float(self.accepted(threshold, margin).mean())

    def threshold_at(self, fpir: float, margin: float = 0.0) -> float:
        """The lowest score at which at most ``fpir`` of the searches are accepted."""
        passing = np.where(self.best - self.second >= margin, self.best, -np.inf)
        ranked = np.sort(passing)[::-1]
        allowed = int(np.floor(fpir * len(ranked)))
        return float(ranked[allowed]) + 1e-6 if allowed < len(ranked) else -1.0

    @staticmethod
    def concatenate(parts: list[Searches]) -> Searches:
        return Searches(*(np.concatenate([getattr(p, f) for p in parts])
                          for f in ("best", "second", "stranger", "gallery_size")))


@dataclass
class Genuine:
    """Genuine probes of enrolled people: their best match and whether it is them."""

    best: np.ndarray
    second: np.ndarray
    right: np.ndarray  # the best person is the probe's own
    person: np.ndarray  # the probe's person, for resampling whole people

    def figures(self, threshold: float, margin: float = 0.0) -> dict[str, float]:
        """matched: accepted as themselves; mistaken: accepted as someone else; FNIR: not
        matched (1 - matched)."""
        accepted = (self.best >= threshold) & (self.best - self.second >= margin)
        matched = float((accepted & self.right).mean())
        return {"matched": matched, "mistaken": float((accepted & ~self.right).mean()),
                "fnir": 1 - matched}


@dataclass
class Comparisons:
    """Impostor comparisons: the scores at or above a floor (highest first), the photo pair of
    each (to count distinct pairs), and how many comparisons there were in all."""

    scores: np.ndarray
    pairs: np.ndarray  # stranger row * 10**6 + enrolled row, one per score
    total: int

    def distinct_among_top(self, k: int) -> int:
        return int(len(np.unique(self.pairs[:k])))

    @staticmethod
    def concatenate(parts: list[Comparisons]) -> Comparisons:
        scores = np.concatenate([p.scores for p in parts])
        pairs = np.concatenate([p.pairs for p in parts])
        order = np.argsort(-scores, kind="stable")
        return Comparisons(scores[order], pairs[order], sum(p.total for p in parts))


@dataclass
class Trial:
    searches: Searches
    genuine: Genuine
    # Every (stranger photo, enrolled person) comparison the searches made, each enrolled
    # person counting once as at the door: what the tail model is fitted to.
    comparisons: Comparisons


def open_set_trial(faces: Faces, strangers: np.ndarray, *, score: Scorer = cosine_max,
                   templates: int = 1, variants: int = 1, genuine_variants: int | None = None,
                   probes_per_person: int = PROBES_PER_PERSON,
                   probes_from: int | None = None, floor: float | None = None) -> Trial:
    """Every person of ``faces`` enrolled from ``templates`` photos, searched by strangers and
    by their own other photos; repeated for ``variants`` choices of the enrolled photos.

    Choice v enrols each person's photos v, v+1, ... (wrapping round) and probes with up to
    ``probes_per_person`` photos from photo v + ``probes_from`` on (default: right after the
    enrolled ones). Strangers: every photo of each person with that person left out of the
    gallery (their column is blanked, which is the same search as a gallery of everyone
    else), and every row of ``strangers`` (people never enrolled) against the whole gallery.
    Genuine probes are taken for the first ``genuine_variants`` choices (default all).
    Comparisons are kept from ``floor`` up (default: the top 0.5% of the first choice's,
    which suits scores in any units).
    """
    people = np.arange(faces.people)
    probes_from = templates if probes_from is None else probes_from
    everyone = np.concatenate([faces.embeddings, strangers])
    stranger_id = np.concatenate([faces.labels, faces.people + np.arange(len(strangers))])
    n_known = len(faces.labels)
    sizes = np.concatenate([np.full(n_known, faces.people - 1),
                            np.full(len(strangers), faces.people)])
    count = np.clip(faces.counts - probes_from, 0, probes_per_person)
    wanted = np.arange(probes_per_person)[None, :] < count[:, None]
    searches, genuine, comparisons = [], [], []
    for variant in range(variants):
        enrolled_rows = person_rows(faces, people, variant, templates)
        enrolled = faces.embeddings[enrolled_rows]
        scores = score(everyone, enrolled)
        scores[np.arange(n_known), faces.labels] = -np.inf
        _, best, second = top_two(scores)
        searches.append(Searches(best, second, stranger_id, sizes))
        if floor is None:
            finite = scores[np.isfinite(scores)]
            floor = float(np.quantile(finite, 0.995)) if finite.size else 0.0
        rows, columns = np.nonzero(scores >= floor)
        comparisons.append(Comparisons(scores[rows, columns],
                                       rows.astype(np.int64) * 10**6
                                       + enrolled_rows[columns, 0],
                                       int(np.isfinite(scores).sum())))
        if genuine_variants is not None and variant >= genuine_variants:
            continue
        rows = person_rows(faces, people, variant + probes_from, probes_per_person)[wanted]
        person, best, second = top_two(score(faces.embeddings[rows], enrolled))
        owner = faces.labels[rows]
        genuine.append(Genuine(best, second, person == owner, owner))
    return Trial(Searches.concatenate(searches),
                 Genuine(*(np.concatenate([getattr(g, f) for g in genuine])
                           for f in ("best", "second", "right", "person"))),
                 Comparisons.concatenate(comparisons))


def first_photo_genuine(faces: Faces, probes_per_person: int = PROBES_PER_PERSON) -> Genuine:
    """The door's case: each person's first photo enrolled, the next five as probes, with
    the evaluation's own ``best_two`` (a person's score is their best template's)."""
    people = np.arange(faces.people)
    gallery = faces.starts
    count = np.minimum(probes_per_person, faces.counts - 1)
    wanted = np.arange(probes_per_person)[None, :] < count[:, None]
    rows = person_rows(faces, people, 1, probes_per_person)[wanted]
    person, best, second = best_two(faces.embeddings[rows], faces.embeddings[gallery],
                                    faces.labels[gallery])
    return Genuine(best, second, person == faces.labels[rows], faces.labels[rows])


def sub_gallery_searches(faces: Faces, strangers: np.ndarray, size: int, draws: int,
                         variants: int, seed: int = 0) -> Searches:
    """Random galleries of ``size`` people (one photo each), searched by everyone else: the
    other people's photos and every row of ``strangers``; ``draws`` galleries per choice of
    the enrolled photo."""
    rng = np.random.default_rng(seed)
    everyone = np.concatenate([faces.embeddings, strangers])
    owner = np.concatenate([faces.labels, np.full(len(strangers), -1)])
    stranger_id = np.concatenate([faces.labels, faces.people + np.arange(len(strangers))])
    parts = []
    for variant in range(variants):
        scores = everyone @ faces.embeddings[person_rows(faces, np.arange(faces.people),
                                                          variant, 1)[:, 0]].T
        for _ in range(draws):
            chosen = rng.choice(faces.people, size, replace=False)
            outside = ~np.isin(owner, chosen)
            _, best, second = top_two(scores[:, chosen][outside])
            parts.append(Searches(best, second, stranger_id[outside],
                                  np.full(len(best), size)))
    return Searches.concatenate(parts)


# --- the tail model --------------------------------------------------------------------------

def photo_pair_scores(faces: Faces, strangers: np.ndarray, floor: float = SCORE_FLOOR,
                      block: int = 512) -> tuple[np.ndarray, int]:
    """Every pair of photos of different people once (lfw-a with lfw-a, and every stranger
    with every lfw-a photo): the scores at or above ``floor`` and the number of pairs. It
    weights people by their photos squared, which is LFW's bias, not the door's: reported
    beside the search comparisons, not used."""
    kept, total = [], 0
    for start in range(0, len(faces.labels), block):
        rows = slice(start, start + block)
        scores = faces.embeddings[rows] @ faces.embeddings.T
        mine = np.arange(start, start + len(scores))
        later = np.arange(len(faces.labels))[None, :] > mine[:, None]
        valid = later & (faces.labels[rows][:, None] != faces.labels[None, :])
        total += int(valid.sum())
        kept.append(scores[valid & (scores >= floor)])
    for start in range(0, len(strangers), block):
        scores = strangers[start:start + block] @ faces.embeddings.T
        total += scores.size
        kept.append(scores[scores >= floor])
    return np.sort(np.concatenate(kept))[::-1], total


@dataclass
class TailModel:
    """p(t), the share of impostor comparisons at or above t, and FPIR(t, N) from it.

    Measured where at least ``exceedances`` comparisons lie above t; beyond ``start`` (the
    score with that many above it) an exponential tail p(start) * exp(-(t - start) / scale),
    ``scale`` being the mean excess over ``start`` (its maximum-likelihood estimate).
    """

    scores: np.ndarray  # impostor scores at or above a floor, highest first
    comparisons: int
    start: float
    scale: float
    exceedances: int
    distinct: int  # distinct photo pairs among the exceedances (repeats carry no news)

    @classmethod
    def fit(cls, scores: np.ndarray, comparisons: int, exceedances: int = TAIL_EXCEEDANCES,
            distinct: int | None = None) -> TailModel:
        scores = np.sort(scores)[::-1]
        exceedances = min(exceedances, len(scores) - 1)
        if exceedances < 2:
            raise ValueError("the tail fit needs at least 3 impostor scores above the floor")
        start = float(scores[exceedances])
        return cls(scores, comparisons, start, float(np.mean(scores[:exceedances] - start)),
                   exceedances, exceedances if distinct is None else distinct)

    @classmethod
    def from_comparisons(cls, comparisons: Comparisons,
                         exceedances: int = TAIL_EXCEEDANCES) -> TailModel:
        return cls.fit(comparisons.scores, comparisons.total, exceedances,
                       comparisons.distinct_among_top(exceedances))

    @classmethod
    def heaviest(cls, comparisons: Comparisons, candidates: tuple[int, ...] = TAIL_CANDIDATES,
                 min_distinct: int = MIN_DISTINCT) -> TailModel:
        """The fit with the largest scale (the slowest-falling tail, the safe side) among the
        starts with at least ``min_distinct`` distinct photo pairs above them."""
        fits = [cls.from_comparisons(comparisons, k) for k in candidates
                if k < len(comparisons.scores)]
        usable = [fit for fit in fits if fit.distinct >= min_distinct] or fits[:1]
        if not usable:
            raise ValueError("the tail fit needs at least 3 impostor scores above the floor")
        return max(usable, key=lambda fit: fit.scale)

    @property
    def scale_se(self) -> float:
        """The scale's standard error, counting each distinct photo pair once."""
        return self.scale / math.sqrt(max(self.distinct, 1))

    def counted(self, threshold: float) -> int:
        """Impostor comparisons at or above ``threshold`` (measured, not modelled)."""
        return int(np.searchsorted(-self.scores, -threshold, side="right"))

    def p(self, threshold: float, scale: float | None = None) -> float:
        if threshold <= self.start:
            return self.counted(threshold) / self.comparisons
        scale = self.scale if scale is None else scale
        return self.exceedances / self.comparisons * math.exp(-(threshold - self.start) / scale)

    def threshold_for_p(self, p: float, scale: float | None = None) -> float:
        """The lowest score at which at most ``p`` of the comparisons pass."""
        allowed = int(math.floor(p * self.comparisons))
        if allowed > self.exceedances:
            return float(self.scores[min(allowed, len(self.scores) - 1)]) + 1e-6
        scale = self.scale if scale is None else scale
        return self.start + scale * math.log(self.exceedances / (p * self.comparisons))

    def fpir(self, threshold: float, gallery_size: int | np.ndarray) -> float | np.ndarray:
        """FPIR(t, N) = 1 - (1 - p(t)) ** N: a stranger passes if any of N people does."""
        return -np.expm1(np.asarray(gallery_size) * math.log1p(-self.p(threshold)))

    def threshold(self, fpir: float, gallery_size: int, scale: float | None = None) -> float:
        """The threshold that holds FPIR at ``fpir`` with ``gallery_size`` people enrolled."""
        per_comparison = -math.expm1(math.log1p(-fpir) / gallery_size)
        return self.threshold_for_p(per_comparison, scale)

    def curve(self, fpir: float, sizes: tuple[int, ...] = GALLERY_SIZES,
              decimals: int = 3) -> list[list]:
        """[[N, threshold], ...], each threshold rounded up (the safe side)."""
        step = 10.0**decimals
        return [[n, math.ceil(self.threshold(fpir, n) * step) / step] for n in sizes]

    def predicted_fpir(self, threshold: float, searches: Searches) -> float:
        """The model's FPIR for a set of searches (averaged over their gallery sizes)."""
        sizes, count = np.unique(searches.gallery_size, return_counts=True)
        return float(np.sum(self.fpir(threshold, sizes) * count) / count.sum())

    def summary(self) -> dict:
        return {
            "comparisons": self.comparisons,
            "tail_start": round(self.start, 4),
            "tail_start_p": float(f"{self.exceedances / self.comparisons:.4g}"),
            "exceedances": self.exceedances,
            "distinct_photo_pairs_among_them": self.distinct,
            "scale": round(self.scale, 5),
            "scale_standard_error": round(self.scale_se, 5),
        }

    def check(self, thresholds: np.ndarray) -> list[dict]:
        """Comparisons counted above each threshold against the fitted tail's prediction."""
        return [{"threshold": round(float(t), 3), "counted": self.counted(t),
                 "fitted": round(self.exceedances * math.exp(-(t - self.start) / self.scale),
                                 1)}
                for t in thresholds if t > self.start]


# --- noise -----------------------------------------------------------------------------------

def cluster_interval(hits: np.ndarray, groups: np.ndarray, resamples: int = 1000,
                     seed: int = 0) -> list[float]:
    """95% interval of the share of ``hits``, resampling whole groups: one stranger's photos
    (or one person's probes) are not independent of each other."""
    _, group = np.unique(groups, return_inverse=True)
    hits_per = np.bincount(group, weights=hits.astype(float))
    size_per = np.bincount(group).astype(float)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(size_per), np.full(len(size_per), 1 / len(size_per)),
                              size=resamples)
    shares = (weights @ hits_per) / (weights @ size_per)
    return [float(f"{q:.3g}") for q in np.quantile(shares, [0.025, 0.975])]


# --- people-disjoint experiments -------------------------------------------------------------

def halves(people: int, seed: int) -> np.ndarray:
    """A random half of the people (boolean mask); the rest is the other half."""
    mask = np.zeros(people, bool)
    mask[np.random.default_rng(seed).permutation(people)[:people // 2]] = True
    return mask


def judge(tune: Trial, test: Trial, fpir: float, margin: float = 0.0) -> dict[str, dict]:
    """A threshold set on ``tune``'s people at ``fpir``, two ways, and FNIR and FPIR measured
    at it on ``test``'s: "observed", the score that ``fpir`` of the tuning searches pass (few
    of them at 0.05%, so noisy); "model", the tail model fitted to the tuning searches'
    comparisons at the test gallery's size (the margin left out, as it is negligible)."""
    model = TailModel.from_comparisons(tune.comparisons)
    size = int(np.median(test.searches.gallery_size))
    thresholds = {"observed": tune.searches.threshold_at(fpir, margin),
                  "model": model.threshold(fpir, size)}
    return {how: {"threshold": t, "test_fpir": test.searches.fpir(t, margin),
                  **{f"test_{k}": v for k, v in test.genuine.figures(t, margin).items()}}
            for how, t in thresholds.items()}


def compare_arms(judged: dict[str, list[dict]], baseline: str, target: float) -> dict:
    """Mean and spread of each arm over the splits, for each way of setting the threshold,
    and its paired difference from the baseline. An arm "helps" when its FNIR is lower by
    more than twice the standard error of the paired difference (the splits share people,
    so this is a rule of thumb) and its mean FPIR on the test people stays within 20% of
    ``target`` or of the baseline's, whichever is higher: fewer misses bought with more
    strangers let in is no help."""
    result: dict[str, dict] = {}
    for how in ("model", "observed"):
        base = np.array([j[how]["test_fnir"] for j in judged[baseline]])
        base_fpir = np.array([j[how]["test_fpir"] for j in judged[baseline]])
        for arm, runs in judged.items():
            fnir = np.array([j[how]["test_fnir"] for j in runs])
            fpir = np.array([j[how]["test_fpir"] for j in runs])
            diff = fnir - base
            se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
            result.setdefault(arm, {})[f"threshold_by_{how}"] = {
                "test_fnir_mean": round(float(fnir.mean()), 4),
                "test_fnir_std": round(float(fnir.std(ddof=1)), 4) if len(fnir) > 1 else 0.0,
                "test_fpir_mean": float(f"{fpir.mean():.3g}"),
                "test_mistaken_mean": round(float(np.mean([j[how]["test_mistaken"]
                                                           for j in runs])), 5),
                "fnir_minus_baseline": round(float(diff.mean()), 4),
                "fnir_minus_baseline_se": round(se, 4),
                "helps": bool(arm != baseline and diff.mean() < -2 * se
                              and fpir.mean() <= 1.2 * max(target, base_fpir.mean())),
            }
    return result


def split_runs(trial_for_half: Callable[[np.ndarray, int], dict[str, Trial]], people: int,
               fpirs: tuple[float, ...], seeds: int, margin_of: Callable[[str], float]
               ) -> dict[str, dict[str, list[dict]]]:
    """For each seed, split the people in two; each half tunes the threshold for the other.

    ``trial_for_half(mask, seed)`` returns one Trial per arm on the people in ``mask`` (the
    seed lets it split its strangers the same way). Result: FPIR (as text) -> arm -> one
    judgement per (seed, direction).
    """
    judged: dict[str, dict[str, list[dict]]] = {f"{f:g}": {} for f in fpirs}
    for seed in range(seeds):
        mask = halves(people, seed)
        a, b = trial_for_half(mask, seed), trial_for_half(~mask, -1 - seed)
        for tune, test in ((a, b), (b, a)):
            for f in fpirs:
                for arm in tune:
                    judged[f"{f:g}"].setdefault(arm, []).append(
                        judge(tune[arm], test[arm], f, margin_of(arm)))
    return judged


def half_of(rows: np.ndarray, seed: int) -> np.ndarray:
    """One half of ``rows`` for seed >= 0, the other half for the seed -1 - seed."""
    mask = halves(len(rows), 7919 + (seed if seed >= 0 else -1 - seed))
    return rows[mask] if seed >= 0 else rows[~mask]


def normalisation_experiment(faces: Faces, strangers: np.ndarray, *, cohort_size: int = 300,
                             variants: int = VARIANTS, seeds: int = 5,
                             fpirs: tuple[float, ...] = (1e-2, 1e-3, 5e-4)) -> dict:
    """Raw cosine against cohort T-norm, AS-norm (top 25, 50, 100) and S-norm (the whole
    cohort). The cohort is ``cohort_size`` strangers, never searched; the other strangers
    are split with the people. Margin 0 for every arm (a cosine margin means nothing in
    normalised units)."""
    order = np.random.default_rng(1000).permutation(len(strangers))
    cohort, rest = strangers[order[:cohort_size]], strangers[order[cohort_size:]]
    arms: dict[str, Scorer] = {"raw cosine": cosine_max, "T-norm": t_norm(cohort),
                               **{f"AS-norm top {k}": as_norm(cohort, k) for k in (25, 50, 100)},
                               f"S-norm (all {len(cohort)})": as_norm(cohort, len(cohort))}

    def trials(mask: np.ndarray, seed: int) -> dict[str, Trial]:
        half, own = faces.subset(mask), half_of(rest, seed)
        return {arm: open_set_trial(half, own, score=score, variants=variants)
                for arm, score in arms.items()}

    judged = split_runs(trials, faces.people, fpirs, seeds, lambda arm: 0.0)
    return {"cohort": f"{len(cohort)} lfw-a-singles, never searched",
            "strangers": f"leave-one-out within the half, and half of the other {len(rest)} "
                         "singles", "margin": 0.0, "splits": 2 * seeds, "variants": variants,
            "by_fpir": {f: compare_arms(arms_judged, "raw cosine", float(f))
                        for f, arms_judged in judged.items()}}


def templates_experiment(faces: Faces, strangers: np.ndarray, *, min_photos: int = 4,
                         variants: int = 4, seeds: int = 5, margin: float = 0.02,
                         fpirs: tuple[float, ...] = (1e-2, 1e-3, 5e-4)) -> dict:
    """One, two or three enrolled photos per person (people with ``min_photos`` or more),
    the person scoring the max over their templates, their renormalised mean template, or
    the mean of their best two. Every arm is probed by the same photos (from photo
    ``min_photos`` on) and searched by the same strangers: leave-one-out within the half,
    and the half's share of the lfw-a people with fewer photos and of the singles."""
    many = faces.counts >= min_photos
    gallery_faces, few = faces.subset(many), faces.subset(~many)
    arms: dict[str, tuple[int, Scorer]] = {
        "1 photo": (1, cosine_max), "2 photos, max": (2, cosine_max),
        "2 photos, mean template": (2, cosine_mean_template), "3 photos, max": (3, cosine_max),
        "3 photos, mean template": (3, cosine_mean_template),
        "3 photos, mean of best 2": (3, cosine_best_k(2))}

    def trials(mask: np.ndarray, seed: int) -> dict[str, Trial]:
        few_side = np.isin(np.arange(few.people), half_of(np.arange(few.people), seed))
        others = np.concatenate([few.subset(few_side).embeddings, half_of(strangers, seed)])
        half = gallery_faces.subset(mask)
        return {arm: open_set_trial(half, others, score=score, templates=k, variants=variants,
                                    probes_from=min_photos - 1)
                for arm, (k, score) in arms.items()}

    judged = split_runs(trials, gallery_faces.people, fpirs, seeds, lambda arm: margin)
    return {"people": gallery_faces.people, "min_photos": min_photos, "margin": margin,
            "probes": f"up to {PROBES_PER_PERSON} photos from photo {min_photos} on, the same "
                      "for every arm", "splits": 2 * seeds, "variants": variants,
            "by_fpir": {f: compare_arms(arms_judged, "1 photo", float(f))
                        for f, arms_judged in judged.items()}}


def margin_experiment(faces: Faces, strangers: np.ndarray, *,
                      margins: tuple[float, ...] = (0.0, 0.02, 0.05), variants: int = VARIANTS,
                      seeds: int = 5, fpirs: tuple[float, ...] = (1e-2, 1e-3, 5e-4)) -> dict:
    """The door's rule with margins 0, 0.02 and 0.05, the threshold set anew for each."""
    def trials(mask: np.ndarray, seed: int) -> dict[str, Trial]:
        trial = open_set_trial(faces.subset(mask), half_of(strangers, seed), variants=variants)
        return {f"margin {m:g}": trial for m in margins}

    judged = split_runs(trials, faces.people, fpirs, seeds, lambda arm: float(arm.split()[-1]))
    return {"splits": 2 * seeds, "variants": variants,
            "by_fpir": {f: compare_arms(arms_judged, "margin 0", float(f))
                        for f, arms_judged in judged.items()}}


# --- the calibration -------------------------------------------------------------------------

def interpolate(curve: list[list], gallery_size: int) -> float:
    """The threshold in force with ``gallery_size`` people, read from [[N, t], ...] as the
    door reads it: linear in log10(N), clamped at the ends."""
    sizes = [math.log10(max(n, 1)) for n, _ in curve]
    return float(np.interp(math.log10(max(gallery_size, 1)), sizes, [t for _, t in curve]))


def fpir_curve(searches: Searches, thresholds: np.ndarray, margin: float) -> list[float]:
    """Observed FPIR at each threshold (one sort, not one pass per threshold)."""
    passing = np.sort(np.where(searches.best - searches.second >= margin, searches.best,
                               -np.inf))
    above = len(passing) - np.searchsorted(passing, thresholds, side="left")
    return [float(f"{x:.4g}") for x in above / len(passing)]


def gallery_size_check(model: TailModel, searches: Searches, size: int | str, margin: float,
                       fpirs: tuple[float, ...], thresholds: np.ndarray) -> dict:
    """Observed FPIR on ``searches`` at the model's thresholds, and both curves."""
    at = []
    for f in fpirs:
        t = model.threshold(f, int(np.median(searches.gallery_size)))
        hits = searches.accepted(t, margin)
        at.append({"fpir": f, "model_threshold": round(t, 4),
                   "model_fpir": float(f"{model.predicted_fpir(t, searches):.3g}"),
                   "observed_fpir": float(f"{hits.mean():.3g}"),
                   "observed_fpir_margin_0": float(f"{searches.fpir(t):.3g}"),
                   "accepted": int(hits.sum()),
                   "observed_interval_95": cluster_interval(hits, searches.stranger),
                   "empirical_threshold": round(searches.threshold_at(f, margin), 4)})
    return {"gallery_size": size, "searches": len(searches),
            "stranger_people": int(len(np.unique(searches.stranger))), "at": at,
            "curve": {"threshold": [round(float(t), 4) for t in thresholds],
                      "observed": fpir_curve(searches, thresholds, margin),
                      "observed_margin_0": fpir_curve(searches, thresholds, 0.0),
                      "model": [float(f"{model.predicted_fpir(t, searches):.4g}")
                                for t in thresholds]}}


def threshold_curves(model: TailModel, fpirs: tuple[float, ...]) -> dict[str, list[dict]]:
    """For each FPIR, the threshold at every gallery size, with the band the tail fit's
    uncertainty (its scale +- 2 standard errors) gives, and what the data counts there."""
    curves = {}
    for f in fpirs:
        rows = []
        for n, t in model.curve(f):
            low = model.threshold(f, n, model.scale - 2 * model.scale_se)
            high = model.threshold(f, n, model.scale + 2 * model.scale_se)
            rows.append({"gallery_size": n, "threshold": t, "band_95": [round(low, 4),
                                                                       round(high, 4)],
                         "comparisons_counted_above": model.counted(t),
                         "comparisons_fitted_above": round(model.p(t) * model.comparisons, 1)})
        curves[f"{f:g}"] = rows
    return curves


def genuine_at(genuine: Genuine, threshold: float, margin: float) -> dict:
    figures = genuine.figures(threshold, margin)
    accepted = (genuine.best >= threshold) & (genuine.best - genuine.second >= margin)
    return {**{k: round(v, 4) for k, v in figures.items()},
            "fnir_interval_95": cluster_interval(~(accepted & genuine.right), genuine.person)}


def all_other_photos(faces: Faces) -> Genuine:
    """Every photo but the first as a probe (``make eval``'s genuine set, for comparison)."""
    gallery = faces.starts
    rows = np.setdiff1d(np.arange(len(faces.labels)), gallery)
    person, best, second = best_two(faces.embeddings[rows], faces.embeddings[gallery],
                                    faces.labels[gallery])
    return Genuine(best, second, person == faces.labels[rows], faces.labels[rows])


def calibrate(faces: Faces, strangers: np.ndarray, *, target: float = TARGET_FPIR,
              margin: float = 0.02, variants: int = VARIANTS,
              sub_gallery_draws: dict[int, int] | None = None,
              fpir_choices: tuple[float, ...] = FPIR_CHOICES, experiments: bool = True,
              seeds: int = 5, previous_threshold: float | None = PREVIOUS_THRESHOLD) -> dict:
    """Every figure of the calibration (the JSON report, less the command line)."""
    sub_gallery_draws = SUB_GALLERY_DRAWS if sub_gallery_draws is None else sub_gallery_draws
    fpir_choices = tuple(sorted({*fpir_choices, target}, reverse=True))
    trial = open_set_trial(faces, strangers, variants=variants, genuine_variants=1,
                           floor=SCORE_FLOOR)
    loo, model = trial.searches, TailModel.heaviest(trial.comparisons)
    fits = [TailModel.from_comparisons(trial.comparisons, k) for k in TAIL_CANDIDATES]
    pair_scores, pairs = photo_pair_scores(faces, strangers)
    by_photo_pairs = TailModel.fit(pair_scores, pairs)
    genuine, everyone = first_photo_genuine(faces), all_other_photos(faces)
    grid = np.round(np.arange(0.30, 0.7001, 0.005), 3)
    checked = (1e-2, 1e-3, target)
    checks = [gallery_size_check(model, sub_gallery_searches(faces, strangers, n, draws,
                                                             variants, seed=n),
                                 n, margin, checked, grid)
              for n, draws in sorted(sub_gallery_draws.items()) if n < faces.people]
    checks.append(gallery_size_check(model, loo, faces.people - 1, margin, checked, grid))
    curves = threshold_curves(model, fpir_choices)
    curve = [[row["gallery_size"], row["threshold"]] for row in curves[f"{target:g}"]]

    def at(threshold: float) -> dict:
        hits = loo.accepted(threshold, margin)
        return {"threshold": round(threshold, 4),
                "stranger_fpir": float(f"{hits.mean():.3g}"),
                "strangers_accepted": int(hits.sum()),
                "stranger_fpir_interval_95": cluster_interval(hits, loo.stranger),
                **genuine_at(genuine, threshold, margin),
                "fnir_all_other_photos": round(everyone.figures(threshold, margin)["fnir"], 4)}

    by_choice = {}
    for f in fpir_choices:
        rows = [[r["gallery_size"], r["threshold"]] for r in curves[f"{f:g}"]]
        by_choice[f"{f:g}"] = at(interpolate(rows, faces.people))
    report = {
        "data": {"people": faces.people, "photos": int(len(faces.labels)),
                 "strangers": int(len(strangers))},
        "target_fpir": target, "margin": margin, "variants": variants,
        "stranger_searches": {
            "total": len(loo), "leave_one_out": int(len(faces.labels) * variants),
            "singles": int(len(strangers) * variants),
            "gallery_size": f"{faces.people - 1} (leave-one-out), {faces.people} (singles)",
            "stranger_people": int(len(np.unique(loo.stranger)))},
        "tail_model": {
            **model.summary(), "check": model.check(np.arange(0.40, 0.621, 0.02)),
            "chosen_as": f"the largest scale among starts with {MIN_DISTINCT}+ distinct photo "
                         "pairs above them",
            "candidate_fits": [
                {"exceedances": fit.exceedances, "distinct_photo_pairs": fit.distinct,
                 "start": round(fit.start, 4), "scale": round(fit.scale, 5),
                 "scale_standard_error": round(fit.scale_se, 5),
                 "threshold_at_target": {n: round(fit.threshold(target, n), 4)
                                         for n in (830, 1000, 10000, 100000)}}
                for fit in fits],
            "all_photo_pairs": {
                "pairs": pairs, "why_not_used": "weights people by their photos squared",
                "p_by_threshold": [
                    {"threshold": t, "p_photo_pairs": float(f"{by_photo_pairs.p(t):.3g}"),
                     "p_search_comparisons": float(f"{model.p(t):.3g}")}
                    for t in (0.40, 0.45, 0.50, 0.55)]}},
        "gallery_size_check": checks,
        "curves": curves,
        "by_gallery_size": curve,
        "genuine": {"probes": int(len(genuine.best)), "people": int(len(np.unique(
                        genuine.person))),
                    "all_other_photos": int(len(everyone.best)),
                    "at_830_people_by_target_fpir": by_choice,
                    "at_curve_thresholds": [{"gallery_size": n, **at(t)} for n, t in curve]},
    }
    if previous_threshold is not None:
        report["previous_threshold"] = at(previous_threshold)
    if experiments:
        report["experiments"] = {
            "normalisation": normalisation_experiment(faces, strangers, variants=variants,
                                                      seeds=seeds, fpirs=checked),
            "templates": templates_experiment(faces, strangers, seeds=seeds, margin=margin,
                                              fpirs=checked),
            "margin": margin_experiment(faces, strangers, variants=variants, seeds=seeds,
                                        fpirs=checked),
        }
        for experiment in report["experiments"].values():
            arms = experiment["by_fpir"][f"{target:g}"]
            experiment["helps_at_target_fpir"] = [
                arm for arm, how in arms.items() if how["threshold_by_model"]["helps"]]
    return report


# --- the card --------------------------------------------------------------------------------

def threshold_block(report: dict, command: str) -> dict:
    """The card's "threshold" block: the curve, and ``score`` at 1,000 people for readers
    that know one threshold only."""
    curve = report["by_gallery_size"]
    t_1000 = interpolate(curve, 1000)
    searches, tail = report["stranger_searches"], report["tail_model"]
    at_1000 = {row["gallery_size"]: row
               for row in report["genuine"]["at_curve_thresholds"]}.get(1000)
    checks = report["gallery_size_check"]
    ratios = [c["at"][-1]["observed_fpir"] / c["at"][-1]["model_fpir"] for c in checks
              if c["at"][-1]["model_fpir"] > 0]
    people = report["data"]["people"]
    set_from = (
        f"lfw-a ({people} people, {report['data']['photos']:,} photos) and lfw-a-singles "
        f"({report['data']['strangers']} strangers): {searches['total']:,} stranger searches "
        f"(each lfw-a person out of a gallery of the {people - 1} others with all their photos "
        f"searched, and the singles against all {people}, for {report['variants']} choices of "
        f"the enrolled photo) and {tail['comparisons']:,} impostor comparisons; p(t) counted, "
        f"with an exponential tail above {tail['tail_start']} (mean excess {tail['scale']} over "
        f"{tail['exceedances']:,} comparisons) and FPIR(t, N) = 1 - (1 - p(t))^N")
    if at_1000 is not None:
        set_from += (f"; at N={people - 1} the 1,000-people threshold accepts "
                     f"{100 * at_1000['stranger_fpir']:.3g}% of the searches "
                     f"({at_1000['strangers_accepted']})")
    if ratios:
        set_from += (f"; observed/model FPIR at the target on galleries of "
                     f"{checks[0]['gallery_size']} to {checks[-1]['gallery_size']} people: "
                     f"{min(ratios):.2f} to {max(ratios):.2f}")
    return {"score": round(t_1000, 4), "margin": report["margin"],
            "metric": "cosine of unit embeddings", "fpir": report["target_fpir"],
            "by_gallery_size": curve, "interpolation": INTERPOLATION,
            "set_for": "open-set identification with one photo per person enrolled, at any "
                       "gallery size: the door interpolates by_gallery_size at its number of "
                       "people ('score' is the threshold at 1,000 people); FPIR per stranger "
                       "presentation",
            "set_from": set_from, "measured_by": command}


def at_default_threshold(report: dict, command: str) -> dict:
    """The card's accuracy at ``score`` (1,000 people) and at the door's 830-people threshold,
    measured on the gallery of lfw-a."""
    people = report["data"]["people"]
    rows = {row["gallery_size"]: row for row in report["genuine"]["at_curve_thresholds"]}
    at_830 = report["genuine"]["at_830_people_by_target_fpir"][f"{report['target_fpir']:g}"]

    def figures(row: dict) -> dict:
        return {"threshold": row["threshold"], "fpir": row["stranger_fpir"],
                "strangers_accepted": row["strangers_accepted"], "fnir": row["fnir"],
                "matched": row["matched"], "mistaken": row["mistaken"]}

    if 1000 not in rows:
        raise ValueError("the curve has no threshold at 1,000 people, the card's 'score'")
    return {**figures(rows[1000]),
            "gallery": f"{people} people, one photo each (strangers: {people - 1}, "
                       "leave-one-out)",
            "stranger_searches": report["stranger_searches"]["total"],
            "genuine_probes": report["genuine"]["probes"],
            f"at_{people}_people": figures(at_830),
            "measured_by": command}


def write_card(path: Path, report: dict, command: str) -> None:
    """Rewrite the card's "threshold" block and its accuracy at the default threshold."""
    card = json.loads(path.read_text())
    card["threshold"] = threshold_block(report, command)
    card.setdefault("accuracy", {})["at_default_threshold"] = at_default_threshold(report,
                                                                                  command)
    path.write_text(json.dumps(card, indent=2) + "\n")


# --- the plot --------------------------------------------------------------------------------

def plot(report: dict, path: Path) -> None:
    """Left: FPIR against threshold for several gallery sizes, observed and modelled. Right:
    the threshold against gallery size at each target FPIR. Needs matplotlib (.venv-train)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    colours = plt.cm.viridis(np.linspace(0, 0.85, len(report["gallery_size_check"])))
    for check, colour in zip(report["gallery_size_check"], colours, strict=True):
        curve = check["curve"]
        for key, style in (("observed_margin_0", {"lw": 1.8}), ("observed", {"lw": 0.8,
                                                                            "ls": ":"})):
            observed = np.array(curve[key], float)
            observed[observed == 0] = np.nan
            label = (f"N={check['gallery_size']}: observed ({check['searches']:,} searches)"
                     if key == "observed_margin_0" else None)
            left.plot(curve["threshold"], observed, color=colour, label=label, **style)
        left.plot(curve["threshold"], curve["model"], color=colour, lw=1, ls="--")
    target = report["target_fpir"]
    left.axhline(target, color="grey", lw=0.8)
    left.text(0.305, target * 1.15, f"target FPIR {100 * target:g}%", fontsize=8, color="grey")
    left.set_yscale("log")
    left.set_ylim(1e-5, 1)
    left.set_xlim(0.30, 0.70)
    left.set_xlabel("threshold (cosine)")
    left.set_ylabel("FPIR: share of stranger searches accepted")
    left.set_title("FPIR against threshold: observed (solid; dotted with the door's margin)\n"
                   "and the tail model 1 - (1 - p(t))^N (dashed)", fontsize=10)
    left.legend(fontsize=7, loc="lower left")

    measured = report["gallery_size_check"][-1]["gallery_size"]
    others = iter(["#2166ac", "#b2182b", "#e08214", "#762a83", "#4d4d4d"])
    for key, rows in report["curves"].items():
        sizes = [r["gallery_size"] for r in rows]
        main = float(key) == target
        right.plot(sizes, [r["threshold"] for r in rows], marker="o" if main else None,
                   lw=2.2 if main else 0.9, color="#1b7837" if main else next(others),
                   label=f"FPIR {100 * float(key):g}%" + (" (the card)" if main else ""))
        if main:
            right.fill_between(sizes, [r["band_95"][0] for r in rows],
                               [r["band_95"][1] for r in rows], color="#1b7837", alpha=0.15,
                               label="tail-fit uncertainty (scale +- 2 s.e.)")
    for check in report["gallery_size_check"]:
        point = next(a for a in check["at"] if a["fpir"] == target)
        right.plot(check["gallery_size"], point["empirical_threshold"], "kx", ms=7)
    right.plot([], [], "kx", label="observed threshold at the target (sub-galleries)")
    if "previous_threshold" in report:
        before = report["previous_threshold"]["threshold"]
        right.axhline(before, color="grey", lw=0.8, ls="--")
        right.text(1.1, before + 0.003, f"the one threshold before: {before:.2f}", fontsize=8,
                   color="grey")
    right.axvspan(measured, 100000, color="grey", alpha=0.08)
    right.text(measured * 1.2, right.get_ylim()[0] + 0.01, "beyond lfw-a: extrapolated",
               fontsize=8, color="grey")
    right.set_xscale("log")
    right.set_xlabel("people enrolled (N)")
    right.set_ylabel("threshold (cosine)")
    right.set_title("Threshold that holds the target FPIR, by gallery size")
    right.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- command line ----------------------------------------------------------------------------

def load_faces(args: argparse.Namespace) -> tuple[Faces, np.ndarray, str, dict]:
    """The two folders' embeddings (from the cache when there), less the label noise."""
    pipeline = FacePipeline.from_models_dir(args.models_dir, embedder=args.model)
    tag = embedding_cache_tag(pipeline)

    def embedded(folder: Path) -> EmbeddedSet:
        cache = args.cache / f"{tag}-{folder.name}.npz" if args.cache else None
        return embed_folder(pipeline, folder, cache)

    faces = faces_from(embedded(args.data), KNOWN_WRONG_FACE)
    strangers = faces_from(embedded(args.strangers), KNOWN_LABEL_NOISE).embeddings
    return faces, strangers, pipeline.model_name, pipeline.embedder_card.threshold


def print_summary(report: dict) -> None:
    print(f"{report['stranger_searches']['total']:,} stranger searches, "
          f"{report['tail_model']['comparisons']:,} impostor comparisons")
    print("\ngallery size | observed FPIR at the model's threshold for "
          f"{100 * report['target_fpir']:g}% (model)")
    for check in report["gallery_size_check"]:
        a = check["at"][-1]
        print(f"{check['gallery_size']:>12} | {100 * a['observed_fpir']:.3f}% "
              f"({a['accepted']} of {check['searches']:,}; model {100 * a['model_fpir']:.3f}%)"
              f" at {a['model_threshold']:.3f}")
    print("\ngallery size | threshold | matched | mistaken | FNIR  (genuine: 830 people)")
    for row in report["genuine"]["at_curve_thresholds"]:
        print(f"{row['gallery_size']:>12} | {row['threshold']:.3f} | "
              f"{100 * row['matched']:.2f}% | {100 * row['mistaken']:.3f}% | "
              f"{100 * row['fnir']:.2f}%")
    print("\ntarget FPIR | threshold at 830 | stranger FPIR (N=829) | matched | FNIR")
    for f, row in report["genuine"]["at_830_people_by_target_fpir"].items():
        print(f"{100 * float(f):>10g}% | {row['threshold']:.3f} | "
              f"{100 * row['stranger_fpir']:.3f}% | {100 * row['matched']:.2f}% | "
              f"{100 * row['fnir']:.2f}%")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="one sub-folder per person, each with 2+ images (lfw-a)")
    parser.add_argument("--strangers", type=Path, required=True,
                        help="people never enrolled, one folder each (lfw-a-singles)")
    parser.add_argument("--models-dir", type=Path, default=default_models_dir())
    parser.add_argument("--model", default=None, help="embedder name (default: SFace int8)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder of embedding caches, as training.evaluate writes them")
    parser.add_argument("--target-fpir", type=float, default=TARGET_FPIR,
                        help=f"share of stranger presentations accepted (default {TARGET_FPIR})")
    parser.add_argument("--margin", type=float, default=None,
                        help="the door's margin over the next person (default: the card's)")
    parser.add_argument("--variants", type=int, default=VARIANTS,
                        help=f"choices of the enrolled photo (default {VARIANTS})")
    parser.add_argument("--no-experiments", action="store_true",
                        help="skip the normalisation, template and margin experiments")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--plot", type=Path, help="write the PNG plot here (needs matplotlib)")
    parser.add_argument("--write-card", type=Path, metavar="CARD.json",
                        help="rewrite this card's threshold block and its accuracy at it")
    args = parser.parse_args(argv)
    command = "python -m training.calibrate_open_set " + shlex.join(
        sys.argv[1:] if argv is None else argv)

    faces, strangers, model_name, card_threshold = load_faces(args)
    margin = args.margin if args.margin is not None else card_threshold.get("margin", 0.0)
    report = {"command": command, "model": model_name,
              "data": str(args.data), "strangers": str(args.strangers),
              "left_out": {**KNOWN_WRONG_FACE, **KNOWN_LABEL_NOISE},
              **calibrate(faces, strangers, target=args.target_fpir, margin=margin,
                          variants=args.variants, experiments=not args.no_experiments)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        plot(report, args.plot)
    if args.write_card:
        write_card(args.write_card, report, command)
    print_summary(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
