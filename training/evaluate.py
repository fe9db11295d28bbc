"""Evaluate an embedder exactly as the door runs it (the device's TFLite pipeline).

Two measurements on folders laid out one sub-folder per person:

- ``verification``: LFW-style pairs (10 folds, people disjoint across folds, 300 same and
  300 different pairs per fold), 10-fold cross-validated accuracy with each fold's threshold
  picked on the other nine, and the true-accept rate at false-accept rates 1e-2, 1e-3, 1e-4.
- ``openset``: what a door does. One image per person is enrolled; the person's other images
  are genuine probes and a separate folder of people with one image each are strangers. For
  each threshold the share of strangers accepted as someone (FPIR) and the share of genuine
  probes not matched to the right person (FNIR).

    python -m training.evaluate --data ../shared/data/lfw-a \
        --strangers ../shared/data/lfw-a-singles \
        --json bench/results/accuracy.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.errors import FacegateError
from device.identification import Decision
from device.vision.image_io import read_image
from device.vision.models import default_models_dir
from device.vision.pipeline import FacePipeline

FOLDS = 10
PAIRS_PER_FOLD = 300
FARS = (1e-2, 1e-3, 1e-4)
FPIRS = (1e-2, 5e-3, 1e-3)
# Strangers that are in fact enrolled people under another name (LFW's label noise), found by
# looking at the top-scoring strangers; left out of the stranger set, and reported.
KNOWN_LABEL_NOISE = {
    "Carlos_Ruckauf_0001.jpg": "shows Eduardo Duhalde (lfw-a), cosine 0.85 to his photos",
}
# lfw-a photos whose most prominent face is another enrolled person, not the one labelled:
# left out where a photo is judged by that face (the calibration, the door protocol).
KNOWN_WRONG_FACE = {
    "Kosuke_Kitajima_0002.jpg": "the largest face is Brendan Hansen (lfw-a) beside him on the "
                                "podium: cosine 0.91 to Brendan_Hansen_0002.jpg",
}


# How two embeddings are compared, as "higher is more alike", so one scoring code serves
# every system: a cosine for unit embeddings (ours, OpenCV's SFace), minus the Euclidean
# distance for dlib's (face_recognition accepts at distance <= 0.6, i.e. score >= -0.6).
# An image where no face was found gets the floor score, below every threshold.
METRICS = ("cosine", "neg_euclidean")
FLOOR = {"cosine": -1.0, "neg_euclidean": -1e6}


def similarity(a: np.ndarray, b: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """(len(a), len(b)) scores between the rows of ``a`` and of ``b``; higher is more alike."""
    if metric == "cosine":
        return a @ b.T
    if metric == "neg_euclidean":
        squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * (a @ b.T)
        return -np.sqrt(np.maximum(squared, 0.0))
    raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")


def pair_similarity(a: np.ndarray, b: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Row-by-row scores of two equally long embedding arrays."""
    if metric == "cosine":
        return np.einsum("ij,ij->i", a, b)
    if metric == "neg_euclidean":
        return -np.linalg.norm(a - b, axis=1)
    raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})")


@dataclass
class EmbeddedSet:
    """Embeddings of a folder of people; rows without a face are all-zero and flagged.

    Any system's embeddings fit here (``metric`` says how they compare), so a peer's are
    scored by the same code as ours.
    """

    paths: list[str]
    labels: np.ndarray  # (n,) int person index
    names: list[str]  # person index -> folder name
    embeddings: np.ndarray  # (n, dim) float32, unit rows (zeros where no face)
    found: np.ndarray  # (n,) bool
    metric: str = "cosine"

    @property
    def missing(self) -> list[str]:
        return [p for p, ok in zip(self.paths, self.found, strict=True) if not ok]


def list_people(folder: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Every image of a one-folder-per-person tree, in a fixed order: paths, person index of
    each, and the people's folder names. Every system embeds the images in this order."""
    people = sorted(p for p in folder.iterdir() if p.is_dir())
    paths, labels = [], []
    for index, person in enumerate(people):
        for image in sorted(person.iterdir()):
            paths.append(str(image))
            labels.append(index)
    return paths, np.array(labels), [p.name for p in people]


def embedding_cache_tag(pipeline: FacePipeline) -> str:
    """The name under which a folder's embeddings by ``pipeline`` are cached: the model, the
    alignment and mirroring, and a digest of the vision code and model files that find and
    align the faces, so that a changed detector never reuses embeddings of the old one."""
    import hashlib

    from device.vision import models as model_cards

    vision = Path(model_cards.__file__).parent
    digest = hashlib.sha256()
    for name in ("detector.py", "landmarks.py", "alignment.py", "pipeline.py", "embedder.py"):
        digest.update((vision / name).read_bytes())
    models = Path(pipeline.embedder_card.path).parent
    for card in sorted([*models.glob("face_detection_*.json"), models / "face_landmark.json"]):
        digest.update(card.read_bytes())
    # The embedder's file, not its card: a card's thresholds are rewritten by calibration.
    digest.update(str(pipeline.embedder_card.card.get("sha256")).encode())
    return (f"{pipeline.model_name}-{pipeline.aligner.method}-mirror{pipeline.embedder.mirror}"
            f"-{digest.hexdigest()[:8]}")


def embed_folder(pipeline: FacePipeline, folder: Path, cache: Path | None = None) -> EmbeddedSet:
    """Embed the largest face of every image (after the same steps as the door)."""
    if cache is not None and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        return EmbeddedSet(list(data["paths"]), data["labels"], list(data["names"]),
                           data["embeddings"], data["found"])
    paths, labels, names = list_people(folder)
    embeddings = np.zeros((len(paths), pipeline.embedder.dim), np.float32)
    found = np.zeros(len(paths), bool)
    for row, path in enumerate(paths):
        try:
            frame, _ = read_image(path)
        except FacegateError:
            continue
        faces = pipeline.process(frame, thorough=True)
        if faces:
            embeddings[row] = faces[0].embedding
            found[row] = True
    result = EmbeddedSet(paths, labels, names, embeddings, found)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, paths=np.array(paths), labels=result.labels,
                 names=np.array(result.names), embeddings=embeddings, found=found)
    return result


# --- verification ---------------------------------------------------------------------------

def make_pairs(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LFW View-2-style pairs: (i, j) indices, same-person flags and fold numbers.

    People are dealt into ten folds, so no person appears in two folds and a threshold is
    never tuned on the people it is tested on. Under 20 people (a smoke test) there are fewer
    folds, each with two people or more.
    """
    rng = np.random.default_rng(seed)
    people = rng.permutation(np.unique(labels))
    folds_wanted = min(FOLDS, len(people) // 2)
    if folds_wanted < 2:
        raise ValueError(f"verification needs at least 4 people, not {len(people)}")
    fold_of_person = {person: k % folds_wanted for k, person in enumerate(people)}
    by_person = {p: np.flatnonzero(labels == p) for p in people}
    pairs, same, folds = [], [], []
    for fold in range(folds_wanted):
        members = [p for p in people if fold_of_person[p] == fold]
        with_two = [p for p in members if len(by_person[p]) >= 2]
        for _ in range(PAIRS_PER_FOLD if with_two else 0):
            person = with_two[rng.integers(len(with_two))]
            i, j = rng.choice(by_person[person], 2, replace=False)
            pairs.append((i, j)), same.append(True), folds.append(fold)
        for _ in range(PAIRS_PER_FOLD):
            a, b = rng.choice(len(members), 2, replace=False)
            pairs.append((rng.choice(by_person[members[a]]), rng.choice(by_person[members[b]])))
            same.append(False), folds.append(fold)
    return np.array(pairs), np.array(same), np.array(folds)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The score that classifies the most pairs right (midpoint between neighbours)."""
    candidates = np.unique(scores)
    # Accept-all and reject-all ends: -1 and 1 for cosines, the scores' own range otherwise.
    low, high = min(-1.0, float(candidates[0])), max(1.0, float(candidates[-1]))
    candidates = np.concatenate([[low], (candidates[:-1] + candidates[1:]) / 2, [high]])
    correct = [np.mean((scores >= t) == same) for t in candidates]
    return float(candidates[int(np.argmax(correct))])


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float]:
    """True-accept rate at the threshold where at most ``far`` of different pairs pass."""
    impostors = np.sort(scores[~same])[::-1]
    allowed = int(np.floor(far * len(impostors)))
    threshold = impostors[allowed] + 1e-6 if allowed < len(impostors) else -1.0
    return float(np.mean(scores[same] >= threshold)), float(threshold)


def roc_curve(scores: np.ndarray, same: np.ndarray, points: int = 200) -> dict[str, list]:
    thresholds = np.quantile(scores, np.linspace(0, 1, points))
    return {
        "threshold": [round(float(t), 4) for t in thresholds],
        "far": [float(np.mean(scores[~same] >= t)) for t in thresholds],
        "tar": [float(np.mean(scores[same] >= t)) for t in thresholds],
    }


def verification_scores(embeddings: np.ndarray, found: np.ndarray, labels: np.ndarray, *,
                        metric: str = "cosine", seed: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores of the ``make_pairs`` pairs (seeded: every system gets the same pairs), their
    same-person flags and folds. A pair with an image where no face was found counts as a
    wrong answer, not as dropped: its score is the floor, below every threshold."""
    pairs, same, folds = make_pairs(labels, seed)
    scores = pair_similarity(embeddings[pairs[:, 0]], embeddings[pairs[:, 1]], metric)
    scores = np.where(found[pairs[:, 0]] & found[pairs[:, 1]], scores, FLOOR[metric])
    return scores, same, folds


def cross_validate(scores: np.ndarray, same: np.ndarray, folds: np.ndarray
                   ) -> tuple[list[float], list[float]]:
    """Per fold: the accuracy at the threshold picked on the other nine, and that threshold."""
    if len(np.unique(folds)) < 2:
        raise ValueError("cross-validation needs pairs in two folds or more")
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        threshold = best_threshold(scores[train], same[train])
        thresholds.append(threshold)
        accuracies.append(float(np.mean((scores[test] >= threshold) == same[test])))
    return accuracies, thresholds


def verification_from_scores(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    """10-fold accuracy, TAR at each of ``FARS`` and the ROC curve, from pair scores."""
    accuracies, thresholds = cross_validate(scores, same, folds)
    result = {
        "pairs": int(len(same)),
        "accuracy_mean": round(float(np.mean(accuracies)), 4),
        "accuracy_std": round(float(np.std(accuracies)), 4),
        "threshold_mean": round(float(np.mean(thresholds)), 4),
    }
    for far in FARS:
        tar, threshold = tar_at_far(scores, same, far)
        result[f"tar_at_far_{far:g}"] = round(tar, 4)
        result[f"threshold_at_far_{far:g}"] = round(threshold, 4)
    result["roc"] = roc_curve(scores, same)
    return result


def all_pairs_thresholds(data: EmbeddedSet, fars: tuple[float, ...] = (1e-3, 1e-4, 1e-5)
                         ) -> dict:
    """Thresholds at strict false-accept rates from EVERY pair of images of different people
    (millions of pairs, where 6,000 pairs cannot reach 1e-4), with the share of every pair of
    the same person that passes. The enrolment service's 1:1 check uses FAR 1e-4."""
    rows = np.flatnonzero(data.found)
    embeddings, labels = data.embeddings[rows], data.labels[rows]
    upper = np.triu_indices(len(rows), 1)
    scores = similarity(embeddings, embeddings, data.metric)[upper]
    same = (labels[:, None] == labels[None, :])[upper]
    impostors = np.sort(scores[~same])[::-1]
    result = {"impostor_pairs": int(len(impostors)), "genuine_pairs": int(same.sum())}
    for far in fars:
        threshold = float(impostors[int(far * len(impostors))]) + 1e-6
        result[f"threshold_at_far_{far:g}"] = round(threshold, 4)
        result[f"tar_at_far_{far:g}"] = round(float(np.mean(scores[same] >= threshold)), 4)
    return result


def verification(data: EmbeddedSet, seed: int = 0) -> dict:
    scores, same, folds = verification_scores(data.embeddings, data.found, data.labels,
                                              metric=data.metric, seed=seed)
    figures = verification_from_scores(scores, same, folds)
    head = ("pairs", "accuracy_mean", "accuracy_std", "threshold_mean")
    return {**{key: figures.pop(key) for key in head},
            "images": len(data.paths),
            "images_without_face": len(data.missing),
            "missing": data.missing,
            "all_pairs": all_pairs_thresholds(data),
            **figures}


# --- open-set identification ----------------------------------------------------------------

def best_two(probes: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray,
             metric: str = "cosine") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per probe: best person, its score, and the best score of any other person.

    With one template per person (the case here) rows are people; several per person are
    reduced to the best per person first.
    """
    scores = similarity(probes, gallery, metric)
    people = np.unique(gallery_labels)
    if len(people) != len(gallery_labels):
        scores = np.stack([scores[:, gallery_labels == p].max(1) for p in people], axis=1)
    order = np.argsort(-scores, axis=1)[:, :2]
    rows = np.arange(len(probes))
    return people[order[:, 0]], scores[rows, order[:, 0]], scores[rows, order[:, 1]]


def first_with_face(labels: np.ndarray, found: np.ndarray) -> np.ndarray:
    """The row of each person's first image with a face found: the one photo enrolled."""
    rows = []
    for person in np.unique(labels):
        candidates = np.flatnonzero((labels == person) & found)
        if len(candidates):
            rows.append(candidates[0])
    return np.array(rows, int)


@dataclass
class OpenSetScores:
    """Every probe's best match in a one-photo-per-person gallery, genuine and stranger."""

    enrolled_rows: np.ndarray  # rows of the data set enrolled, one per person
    genuine_rows: np.ndarray  # the enrolled people's other images
    genuine_best: np.ndarray  # best score (the floor where no face was found)
    genuine_second: np.ndarray  # best score of anyone else
    genuine_right: np.ndarray  # the best match is the right person
    stranger_rows: np.ndarray  # rows of the stranger set probed (face found, not label noise)
    stranger_person: np.ndarray  # the enrolled person each stranger is closest to
    stranger_best: np.ndarray
    stranger_second: np.ndarray

    def fnir(self, threshold: float, margin: float = 0.0) -> float:
        """Share of genuine probes not matched to the right person (wrong, or below the rule)."""
        accepted = ((self.genuine_best >= threshold)
                    & (self.genuine_best - self.genuine_second >= margin) & self.genuine_right)
        return float(1 - accepted.mean())

    def fpir(self, threshold: float, margin: float = 0.0) -> float:
        """Share of strangers accepted as someone."""
        return float(np.mean((self.stranger_best >= threshold)
                             & (self.stranger_best - self.stranger_second >= margin)))

    def threshold_at_fpir(self, target: float, floor: float, margin: float = 0.0) -> float:
        """The lowest score at which at most ``target`` of the strangers are accepted."""
        passing = self.stranger_best - self.stranger_second >= margin
        ranked = np.sort(np.where(passing, self.stranger_best, floor))[::-1]
        return float(ranked[int(np.floor(target * len(ranked)))]) + 1e-6


def open_set_scores(embeddings: np.ndarray, found: np.ndarray, labels: np.ndarray,
                    stranger_embeddings: np.ndarray, stranger_found: np.ndarray, *,
                    metric: str = "cosine", enrolled_rows: np.ndarray | None = None,
                    stranger_excluded: np.ndarray | None = None) -> OpenSetScores:
    """Enrol one image per person, probe with the rest and with the strangers.

    ``enrolled_rows`` defaults to each person's first image with a face; pass the same rows to
    compare systems on the same gallery and the same probes (each must have a face found).
    Strangers with no face found, or flagged in ``stranger_excluded``, are not probed.
    """
    if enrolled_rows is None:
        enrolled_rows = first_with_face(labels, found)
    if not found[enrolled_rows].all():
        raise ValueError("an enrolled image has no face found")
    genuine_rows = np.setdiff1d(np.arange(len(labels)), enrolled_rows)
    genuine_rows = genuine_rows[np.isin(labels[genuine_rows], labels[enrolled_rows])]
    gallery, gallery_labels = embeddings[enrolled_rows], labels[enrolled_rows]

    g_person, g_best, g_second = best_two(embeddings[genuine_rows], gallery, gallery_labels,
                                          metric)
    # A genuine probe with no face found is a miss at every threshold.
    g_best = np.where(found[genuine_rows], g_best, FLOOR[metric])
    excluded = (np.zeros(len(stranger_found), bool) if stranger_excluded is None
                else stranger_excluded)
    s_rows = np.flatnonzero(stranger_found & ~excluded)
    s_person, s_best, s_second = best_two(stranger_embeddings[s_rows], gallery,
                                          gallery_labels, metric)
    return OpenSetScores(enrolled_rows, genuine_rows, g_best, g_second,
                         g_person == labels[genuine_rows], s_rows, s_person, s_best, s_second)


def open_set(data: EmbeddedSet, strangers: EmbeddedSet, margin: float = 0.0,
             threshold: float | None = None, enrolled_rows: np.ndarray | None = None) -> dict:
    """Enrol the first image of each person (with a face), probe with the rest and strangers.

    ``enrolled_rows`` overrides the choice of enrolled images (see ``open_set_scores``).
    """
    noise = np.array([Path(p).name in KNOWN_LABEL_NOISE for p in strangers.paths])
    scores = open_set_scores(data.embeddings, data.found, data.labels, strangers.embeddings,
                             strangers.found, metric=data.metric, enrolled_rows=enrolled_rows,
                             stranger_excluded=noise)
    s_rows, s_best = scores.stranger_rows, scores.stranger_best
    result = {
        "enrolled_people": int(len(scores.enrolled_rows)),
        "genuine_probes": int(len(scores.genuine_rows)),
        "stranger_probes": int(len(s_rows)),
        "strangers_without_face": int((~strangers.found).sum()),
        "strangers_left_out_as_label_noise": {
            name: why for name, why in KNOWN_LABEL_NOISE.items()
            if name in {Path(p).name for p in strangers.paths}},
        "margin": margin,
        "rank1_identification_rate": round(float(scores.genuine_right.mean()), 4),
        "at_fpir": {},
        # Look at these before trusting a figure at 0.1%: LFW has people under two names.
        "top_strangers": [
            {"path": strangers.paths[s_rows[i]], "score": round(float(s_best[i]), 4),
             "looks_like": data.names[int(scores.stranger_person[i])]}
            for i in np.argsort(-s_best)[:5]
        ],
    }
    for target in FPIRS:
        t = scores.threshold_at_fpir(target, FLOOR[data.metric], margin)
        fpir = scores.fpir(t, margin)
        result["at_fpir"][f"{target:g}"] = {
            "threshold": round(t, 4), "fpir": round(fpir, 4),
            "fnir": round(scores.fnir(t, margin), 4),
            "strangers_accepted": int(round(fpir * len(s_rows)))}
    if threshold is not None:
        fpir = scores.fpir(threshold, margin)
        result["at_threshold"] = {
            "threshold": round(threshold, 4), "fpir": round(fpir, 4),
            "fnir": round(scores.fnir(threshold, margin), 4),
            "strangers_accepted": int(round(fpir * len(s_rows))),
            # A few hundred strangers cannot show an FPIR of 0.1%: the figure for that is the
            # leave-one-out calibration (training/calibrate_open_set.py, make calibrate).
        }
    return result


# --- command line ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="one sub-folder per person, at least one with 2+ images")
    parser.add_argument("--strangers", type=Path, help="people never enrolled (open-set)")
    parser.add_argument("--models-dir", type=Path, default=default_models_dir())
    parser.add_argument("--model", default=None, help="embedder name (default: SFace)")
    parser.add_argument("--alignment", choices=["similarity", "homography"], default=None,
                        help="override the card's alignment method")
    parser.add_argument("--mirror", choices=["on", "off"], default=None,
                        help="override the card's mirror averaging")
    parser.add_argument("--margin", type=float, default=None,
                        help="open-set margin (default: the card's)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="also report FPIR/FNIR at this cosine (default: the card's)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for embedding caches (reruns skip the network)")
    parser.add_argument("--json", type=Path, help="write all figures here")
    args = parser.parse_args(argv)

    mirror = None if args.mirror is None else args.mirror == "on"
    pipeline = FacePipeline.from_models_dir(args.models_dir, embedder=args.model,
                                            alignment=args.alignment, mirror=mirror)
    tag = embedding_cache_tag(pipeline)
    started = time.perf_counter()
    data = embed_folder(pipeline, args.data,
                        args.cache / f"{tag}-{args.data.name}.npz" if args.cache else None)
    report = {"model": pipeline.model_name, "alignment": pipeline.aligner.method,
              "mirror": pipeline.embedder.mirror, "data": str(args.data),
              "verification": verification(data)}
    card_threshold = pipeline.embedder_card.threshold
    margin = args.margin if args.margin is not None else card_threshold.get("margin", 0.0)
    if args.strangers:
        strangers = embed_folder(pipeline, args.strangers, args.cache / f"{tag}-"
                                 f"{args.strangers.name}.npz" if args.cache else None)
        # The door's threshold for a gallery of this size (the card's curve), unless given.
        people = len(first_with_face(data.labels, data.found))
        threshold = (args.threshold if args.threshold is not None
                     else Decision.from_card(card_threshold).threshold_for(people))
        report["open_set"] = open_set(data, strangers, margin, threshold)
    report["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    summary = {k: v for k, v in report["verification"].items() if k not in ("roc", "missing")}
    print(json.dumps({"model": report["model"], "alignment": report["alignment"],
                      "mirror": report["mirror"], "verification": summary,
                      "open_set": {k: v for k, v in report.get("open_set", {}).items()}},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
