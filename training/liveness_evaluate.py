"""``evaluate``: the liveness models on pad-dev's held-apart part, in ISO/IEC 30107-3 terms.

- **APCER** (attack presentation classification error rate): the share of attack
  presentations of one type accepted as live, reported per attack type (the standard takes
  the worst type as the system's figure);
- **BPCER** (bona fide presentation classification error rate): the share of live faces
  rejected as attacks.

Every model is run from its TFLite file by the door's own ``LivenessModel`` on the door's own
BlazeFace boxes. Intervals are 95% bootstrap intervals that resample whole capture-session
blocks (photos of one session are not independent), so they are wider than a binomial
interval over photos would be.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from device.vision.image_io import read_image
from device.vision.liveness import LivenessModel
from device.vision.models import load_card
from training.calibrate_open_set import cluster_interval
from training.liveness_data import ATTACK, BONA, list_photos, locate, session_blocks, split

BPCER_POINTS = (0.01, 0.02, 0.05, 0.10)


def score_model(name: str, samples, indices, models_dir: Path | None = None) -> np.ndarray:
    model = LivenessModel.from_card(load_card(name, models_dir), num_threads=1)
    scores = np.empty(len(indices))
    for row, i in enumerate(indices):
        scores[row] = model.score(read_image(samples[i].path)[0], samples[i].box)
    return scores


def figures(scores: np.ndarray, labels: np.ndarray, types: list[str], blocks: np.ndarray,
            threshold: float) -> dict:
    """APCER per attack type and overall, BPCER, with block-bootstrap intervals."""
    live = scores >= threshold
    bona = labels == BONA
    result = {"threshold": round(float(threshold), 4),
              "bpcer": round(float(np.mean(~live[bona])), 4),
              "bpcer_interval_95": cluster_interval(~live[bona], blocks[bona]),
              "bona_fide": int(bona.sum())}
    attacks = labels == ATTACK
    result["apcer"] = round(float(np.mean(live[attacks])), 4)
    result["apcer_interval_95"] = cluster_interval(live[attacks], blocks[attacks])
    result["attacks"] = int(attacks.sum())
    per_type = {}
    for kind in sorted({t for t, a in zip(types, attacks, strict=True) if a}):
        members = np.array([t == kind for t in types]) & attacks
        per_type[kind] = {"apcer": round(float(np.mean(live[members])), 4),
                          "attacks": int(members.sum())}
    result["apcer_per_type"] = per_type
    result["apcer_worst_type"] = max(v["apcer"] for v in per_type.values())
    return result


def det_curve(scores: np.ndarray, labels: np.ndarray) -> list[dict]:
    """(threshold, APCER, BPCER) at every distinct score: the DET curve's points."""
    thresholds = np.unique(np.concatenate([[0.0, 1.0 + 1e-9], scores]))
    attacks, bona = scores[labels == ATTACK], scores[labels == BONA]
    return [{"threshold": float(t), "apcer": float(np.mean(attacks >= t)),
             "bpcer": float(np.mean(bona < t))} for t in thresholds]


def operating_points(curve: list[dict]) -> dict:
    """The best APCER at a few BPCER budgets, and the equal-error rate."""
    points = {}
    for budget in BPCER_POINTS:
        allowed = [p for p in curve if p["bpcer"] <= budget]
        best = min(allowed, key=lambda p: p["apcer"])
        points[f"apcer_at_bpcer_{budget:g}"] = round(best["apcer"], 4)
    eer = min(curve, key=lambda p: abs(p["apcer"] - p["bpcer"]))
    points["eer"] = round((eer["apcer"] + eer["bpcer"]) / 2, 4)
    return points


def evaluate(default_model: str, baselines: list[str], fused_baseline: tuple[str, str] | None,
             out_json: Path, plot: Path | None, cache: Path, models_dir: Path | None = None
             ) -> dict:
    samples, missing = locate(list_photos(), cache=cache)
    folds, test = split(samples)
    blocks = np.array(session_blocks(samples))[test]
    labels = np.array([samples[i].label for i in test])
    types = [samples[i].attack_type for i in test]
    report = {
        "data": "../shared/data/pad-dev, the held-apart part of training/liveness_data.py's "
                "split by capture session (seed 0): never trained on, never used for a "
                "threshold",
        "photos_without_a_face": missing,
        "machine": platform.machine(),
        "models": {},
    }
    scores_of = {}
    for name in [default_model, *baselines]:
        card = load_card(name, models_dir)
        scores_of[name] = score_model(name, samples, test, models_dir)
        curve = det_curve(scores_of[name], labels)
        threshold = float(card.threshold.get("live", 0.5))
        report["models"][name] = {
            "default": name == default_model,
            "at_card_threshold": figures(scores_of[name], labels, types, blocks, threshold),
            **operating_points(curve),
            "det": curve[:: max(1, len(curve) // 200)],
        }
    if fused_baseline is not None:
        # Upstream's own recipe: the mean of the two pretrained networks' live probabilities.
        name = "pretrained fused (mean), upstream's recipe"
        scores = (scores_of[fused_baseline[0]] + scores_of[fused_baseline[1]]) / 2
        curve = det_curve(scores, labels)
        report["models"][name] = {
            "default": False,
            "at_card_threshold": figures(scores, labels, types, blocks, 0.5),
            **operating_points(curve), "det": curve[:: max(1, len(curve) // 200)]}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=1) + "\n")
    if plot is not None:
        _plot(report, plot)
    return report


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    for name, entry in report["models"].items():
        curve = entry["det"]
        axes.plot([max(p["apcer"], 1e-3) for p in curve], [max(p["bpcer"], 1e-3) for p in curve],
                  label=name, linewidth=2.2 if entry["default"] else 1.2)
        at = entry["at_card_threshold"]
        axes.plot(max(at["apcer"], 1e-3), max(at["bpcer"], 1e-3), "o", color="black",
                  markersize=4)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("APCER (print attacks accepted as live)")
    axes.set_ylabel("BPCER (live faces rejected)")
    axes.set_title("pad-dev held-apart part (dots: each model's card threshold)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
