"""Two embedders judged side by side on the same held-apart people, as the door would use them.

``python -m training evaluate --run RUN (or --tflite FILE) --against MODEL --strangers DIR``
embeds the same prepared crops with both models and reports, for each:

- **pairs**: 10-fold verification accuracy and TAR at FAR 1e-3 (``training.evaluate``);
- **the door's protocol**: each person enrolled from one photo, identified by their next five;
  strangers are the held-apart people themselves, each searched against a gallery without
  them (leave-one-out), and ``--strangers`` (people never enrolled) against everyone. Repeated
  for ten choices of the enrolled photo (the first, the second, ... wrapping round) so the
  FPIR of 1e-3 rests on thousands of stranger searches rather than hundreds. FNIR at FPIR
  1e-3 and 1e-2, with the door's margin over the next person;
- **the threshold curve**: the open-set threshold at FPIR 1e-3 against the gallery size, from
  the tail model of ``training/calibrate_open_set.py`` (what a card's ``by_gallery_size``
  holds), fitted on these people;
- **the verdict**: whether the candidate is at least as good on pairs accuracy and TAR and
  strictly better on both FNIRs — the rule for making a fine-tuned model the default.

Both models see exactly the same crops and stranger searches, so the difference is the
models'. The figures are development figures on held-apart people of ``../shared``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from training.calibrate_open_set import (
    SCORE_FLOOR,
    Faces,
    TailModel,
    cluster_interval,
    open_set_trial,
    threshold_curves,
)
from training.data import CropSet
from training.evaluate import KNOWN_LABEL_NOISE, KNOWN_WRONG_FACE, verification

DOOR_MARGIN = 0.02  # the default SFace card's margin over the next person
DOOR_VARIANTS = 10  # choices of the enrolled photo
FPIRS = (1e-3, 1e-2)


def faces_of(crops: CropSet, embeddings: np.ndarray,
             leave_out: dict[str, str] | None = None) -> Faces:
    """Unit embeddings grouped by person in file order (CropSet rows are sorted that way),
    less the photos named in ``leave_out`` (file name -> why)."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    keep = np.array([path.name not in (leave_out or {}) for path in crops.paths], bool)
    kept, labels = np.unique(crops.labels[keep], return_inverse=True)
    return Faces(unit[keep].astype(np.float32), labels.astype(int),
                 [crops.names[i] for i in kept])


def door_protocol(faces: Faces, strangers: np.ndarray, *, margin: float = DOOR_MARGIN,
                  variants: int = DOOR_VARIANTS, curve: bool = True,
                  misses: dict | None = None) -> dict:
    """FNIR at FPIR 1e-3 and 1e-2 with one photo enrolled and the next five as probes (and
    the threshold curve, unless ``curve`` is False). ``misses``, when given, receives each
    FPIR's per-probe misses and the probes' people, for a paired comparison."""
    trial = open_set_trial(faces, strangers, variants=variants, genuine_variants=variants,
                           floor=SCORE_FLOOR)
    first = open_set_trial(faces, strangers, variants=1, floor=SCORE_FLOOR)
    report = {"people": faces.people, "photos": int(len(faces.labels)),
              "strangers_never_enrolled": int(len(strangers)), "margin": margin,
              "variants": variants, "stranger_searches": len(trial.searches),
              "genuine_probes": int(len(trial.genuine.best)),
              "rank1": round(float(trial.genuine.right.mean()), 4)}
    for fpir in FPIRS:
        threshold = trial.searches.threshold_at(fpir, margin)
        figures = trial.genuine.figures(threshold, margin)
        if misses is not None:
            genuine = trial.genuine
            accepted = (genuine.best >= threshold) & (genuine.best - genuine.second >= margin)
            misses[fpir] = (~(accepted & genuine.right), genuine.person)
        first_threshold = first.searches.threshold_at(fpir, margin)
        report[f"at_fpir_{fpir:g}"] = {
            "threshold": round(threshold, 4),
            "fpir": round(trial.searches.fpir(threshold, margin), 5),
            "fnir": round(figures["fnir"], 4), "mistaken": round(figures["mistaken"], 5),
            # The single choice the issue names (the first photo enrolled): fewer searches.
            "first_photo_only": {
                "stranger_searches": len(first.searches),
                "threshold": round(first_threshold, 4),
                "fnir": round(first.genuine.figures(first_threshold, margin)["fnir"], 4)}}
    # The door's trade-off over thresholds (a DET curve): FNIR at each FPIR.
    report["fnir_by_fpir"] = [
        [float(f"{fpir:.3g}"), round(trial.genuine.figures(
            trial.searches.threshold_at(fpir, margin), margin)["fnir"], 4)]
        for fpir in np.logspace(-3.5, -0.5, 25) if fpir * len(trial.searches) >= 1]
    if not curve:
        return report
    try:
        model = TailModel.heaviest(trial.comparisons)
    except ValueError as error:  # a handful of people: too few look-alikes to fit a tail
        report["threshold_by_gallery_size"] = None
        report["threshold_curve_missing_because"] = str(error)
        return report
    report["threshold_by_gallery_size"] = [
        [row["gallery_size"], row["threshold"]]
        for row in threshold_curves(model, (1e-3,))["0.001"]]
    return report


def judge(crops: CropSet, strangers: CropSet | None,
          embed: Callable[[CropSet], np.ndarray], label: str,
          misses: dict | None = None) -> dict:
    """Every figure of one model on ``crops`` (and ``strangers``); ``misses`` as for
    ``door_protocol``."""
    from training.crop_evaluation import as_embedded_set

    embeddings = embed(crops)
    figures = verification(as_embedded_set(crops, embeddings))
    report = {"model": label, "verification": figures}
    if strangers is not None:
        # As the calibration does: a "stranger" who is an enrolled person under another
        # name, and a photo whose largest face is someone else, are left out (and listed).
        stranger_faces = faces_of(strangers, embed(strangers), KNOWN_LABEL_NOISE)
        report["door_protocol"] = door_protocol(faces_of(crops, embeddings, KNOWN_WRONG_FACE),
                                                stranger_faces.embeddings, misses=misses)
        report["door_protocol"]["left_out"] = {
            name: why for name, why in {**KNOWN_LABEL_NOISE, **KNOWN_WRONG_FACE}.items()
            if name in {path.name for path in (*crops.paths, *strangers.paths)}}
    return report


def headline(report: dict) -> dict[str, float]:
    """The four figures the verdict weighs."""
    figures = {"pairs_accuracy": report["verification"]["accuracy_mean"],
               "tar_at_far_1e-3": report["verification"]["tar_at_far_0.001"]}
    door = report.get("door_protocol")
    if door:
        for fpir in FPIRS:
            figures[f"fnir_at_fpir_{fpir:g}"] = door[f"at_fpir_{fpir:g}"]["fnir"]
    return figures


def paired_interval(new_misses: np.ndarray, old_misses: np.ndarray, people: np.ndarray,
                    resamples: int = 2000, seed: int = 0) -> list[float]:
    """95% interval of FNIR(new) - FNIR(old) over the same genuine probes, resampling whole
    people (one person's probes are not independent), each model at its own threshold: the
    calibration's resampling, applied to the per-probe difference of misses (-1, 0 or 1)."""
    difference = new_misses.astype(float) - old_misses.astype(float)
    return [round(q, 4) for q in cluster_interval(difference, people, resamples, seed)]


def verdict(candidate: dict, against: dict, new_misses: dict | None = None,
            old_misses: dict | None = None) -> dict:
    """Is the candidate at least as good on pairs and TAR, and lower on every FNIR? With the
    misses of both, each FNIR difference also gets its 95% interval over resampled people
    (the thresholds held where the full set put them)."""
    new, old = headline(candidate), headline(against)
    better = {}
    for key in new:
        if key.startswith("fnir"):
            better[key] = new[key] < old[key]
        else:
            better[key] = new[key] >= old[key]
    report = {"candidate": new, "against": old,
              "difference": {k: round(new[k] - old[k], 4) for k in new},
              "better_on": better, "better_on_every_figure": all(better.values())}
    if new_misses and old_misses:
        report["fnir_difference_interval_95"] = {
            f"fnir_at_fpir_{fpir:g}": paired_interval(new_misses[fpir][0],
                                                      old_misses[fpir][0],
                                                      new_misses[fpir][1])
            for fpir in FPIRS if fpir in new_misses and fpir in old_misses}
    return report
