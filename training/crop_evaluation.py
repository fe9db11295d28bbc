"""``evaluate``: verification and open-set figures for a run, a .tflite file or a named model.

The figures are computed by ``training/evaluate.py`` (the same code that measured SFace), on
embeddings of prepared crops:

- ``--run``: the Keras network of a training run, on its held-out people;
- ``--tflite`` or ``--model`` with ``--data``: the TFLite file through the device's own
  ``FaceEmbedder`` and interpreter, so a quantised model is judged exactly as the door runs
  it (the crops came from the door's own detector, FaceMesh and aligner in ``prepare``);
- ``--model`` with ``--photos``: the whole door pipeline from raw photos.

Pairs come from an LFW-format pairs file (``--pairs``) or are generated from the people
(10 folds, people disjoint across folds). Output: JSON, and the ROC curve as PNG.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from device.errors import FacegateError
from device.vision.embedder import FaceEmbedder
from device.vision.models import ModelCard, default_models_dir, load_card
from training.data import CropSet, load_split
from training.evaluate import (
    FOLDS,
    EmbeddedSet,
    open_set,
    verification,
    verification_from_scores,
)

# --- embeddings of crops --------------------------------------------------------------------

def keras_embeddings(run: Path, crops: CropSet) -> np.ndarray:
    """Embed crops with a run's Keras network (any backend)."""
    from training.train import load_run_embedder

    embedder, _ = load_run_embedder(run)
    return np.asarray(embedder.predict(crops.images(), batch_size=100, verbose=0), np.float32)


def tflite_embeddings(card: ModelCard, crops: CropSet) -> np.ndarray:
    """Embed crops with a TFLite embedder through the device's wrapper, as the door does."""
    feed = card.card["input"]
    embedder = FaceEmbedder(card.path, colour=feed.get("colour", "RGB"),
                            mean=feed.get("mean", 0.0), std=feed.get("std", 1.0),
                            mirror=card.card.get("mirror", False))
    # CropSet gives RGB; FaceEmbedder takes the door's BGR crops and converts as the card says.
    return embedder.embed([crops.image(row)[:, :, ::-1] for row in range(len(crops))])


def card_for_file(path: Path) -> ModelCard:
    path = Path(path)
    return load_card(path.stem, path.parent)


def as_embedded_set(crops: CropSet, embeddings: np.ndarray) -> EmbeddedSet:
    return EmbeddedSet([str(p) for p in crops.paths], crops.labels, crops.names,
                       embeddings, np.ones(len(crops), bool))


# --- LFW pairs files ------------------------------------------------------------------------

def read_lfw_pairs(pairs_file: Path, crops: CropSet
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of (i, j), same-person flags, folds and whether both images have a crop.

    The LFW format: a header ``FOLDS N`` (or ``N``), then per fold N lines ``name i j`` (same
    person) and N lines ``name1 i name2 j`` (different people); images are ``name_000i``.
    A pair whose image has no crop (no face, or not in the set) is kept and counts as wrong.
    """
    lines = [line.split() for line in Path(pairs_file).read_text().splitlines() if line.strip()]
    header, body = lines[0], lines[1:]
    per_fold = 2 * int(header[-1]) if len(header) in (1, 2) else len(body) // FOLDS
    row_of = {p.stem: row for row, p in enumerate(crops.paths)}
    pairs, same, folds, found = [], [], [], []
    for index, fields in enumerate(body):
        if len(fields) == 3:
            a, b = f"{fields[0]}_{int(fields[1]):04d}", f"{fields[0]}_{int(fields[2]):04d}"
        elif len(fields) == 4:
            a, b = f"{fields[0]}_{int(fields[1]):04d}", f"{fields[2]}_{int(fields[3]):04d}"
        else:
            raise FacegateError(f"{pairs_file}: line {index + 2} is not an LFW pair")
        pairs.append((row_of.get(a, 0), row_of.get(b, 0)))
        same.append(len(fields) == 3)
        folds.append(min(index // max(per_fold, 1), FOLDS - 1))
        found.append(a in row_of and b in row_of)
    return np.array(pairs), np.array(same), np.array(folds), np.array(found)


def verification_on_pairs_file(data: EmbeddedSet, crops: CropSet, pairs_file: Path) -> dict:
    pairs, same, folds, found = read_lfw_pairs(pairs_file, crops)
    scores = np.einsum("ij,ij->i", data.embeddings[pairs[:, 0]], data.embeddings[pairs[:, 1]])
    scores = np.where(found, scores, -1.0)
    return {"pairs_file": str(pairs_file), "pairs_without_crop": int((~found).sum()),
            **verification_from_scores(scores, same, folds)}


# --- the ROC plot ---------------------------------------------------------------------------

def plot_roc(curves: dict[str, dict], path: Path, title: str) -> None:
    """TAR against FAR (log scale) for each named verification result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4.8))
    for label, figures in curves.items():
        roc = figures["roc"]
        axis.plot(np.maximum(roc["far"], 1e-5), roc["tar"],
                  label=f"{label}: {100 * figures['accuracy_mean']:.2f}%, "
                        f"TAR@1e-3 {100 * figures['tar_at_far_0.001']:.1f}%")
    axis.axvline(1e-3, color="grey", lw=0.8, ls=":")
    axis.set_xscale("log")
    axis.set_xlabel("false-accept rate")
    axis.set_ylabel("true-accept rate")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the command ----------------------------------------------------------------------------

def _people(values: dict, run: Path | None) -> set[str] | None:
    which = values.get("people") or ("held-out" if run or values.get("split") else "all")
    if which == "all":
        return None
    split = Path(values["split"]) if values.get("split") else (run / "split.json" if run
                                                                 else None)
    if split is None or not split.is_file():
        raise FacegateError("--people held-out needs --split (a run's split.json) or --run")
    return set(load_split(split)[1])


def evaluate_command(values: dict) -> dict:
    """What ``python -m training evaluate`` does; returns (and optionally writes) the report."""
    run = Path(values["run"]) if values.get("run") else None
    models_dir = Path(values["models_dir"]) if values.get("models_dir") else default_models_dir()
    if values.get("photos"):
        if not values.get("model"):
            raise FacegateError("--photos runs the whole door pipeline: name it with --model")
        return _photos_report(values, models_dir)
    data_dir = values.get("data") or (json.loads((run / "config.json").read_text())["data"]
                                      if run else None)
    if data_dir is None:
        raise FacegateError("--data (a prepared folder) is needed with --tflite or --model")
    crops = CropSet.load(Path(data_dir), _people(values, run))
    if len(crops) == 0:
        raise FacegateError(f"no crops of the chosen people in {data_dir}")

    if run:
        label = run.name

        def embed(c: CropSet) -> np.ndarray:
            return keras_embeddings(run, c)
    else:
        card = (card_for_file(Path(values["tflite"])) if values.get("tflite")
                else load_card(values["model"], models_dir))
        label = card.name

        def embed(c: CropSet) -> np.ndarray:
            return tflite_embeddings(card, c)

    if values.get("against"):
        return _finish(_against_report(values, crops, data_dir, embed, label, models_dir),
                       values, label)
    data = as_embedded_set(crops, embed(crops))
    report: dict = {"model": label, "data": str(data_dir), "people": len(crops.names),
                    "crops": len(crops)}
    report["verification"] = (verification_on_pairs_file(data, crops, Path(values["pairs"]))
                              if values.get("pairs") else verification(data))
    if values.get("strangers"):
        strangers = CropSet.load(Path(values["strangers"]))
        report["open_set"] = open_set(data, as_embedded_set(strangers, embed(strangers)))
    return _finish(report, values, label)


def _against_report(values: dict, crops: CropSet, data_dir, embed, label: str,
                    models_dir: Path) -> dict:
    """The candidate and the ``--against`` model on the same crops and strangers, with the
    verdict (``training/compare.py``)."""
    from training.compare import judge, verdict

    strangers = CropSet.load(Path(values["strangers"])) if values.get("strangers") else None
    against_card = load_card(values["against"], models_dir)

    def embed_against(c: CropSet) -> np.ndarray:
        return tflite_embeddings(against_card, c)

    new_misses: dict = {}
    old_misses: dict = {}
    candidate = judge(crops, strangers, embed, label, new_misses)
    against = judge(crops, strangers, embed_against, against_card.name, old_misses)
    return {**candidate, "data": str(data_dir), "people": len(crops.names), "crops": len(crops),
            "strangers": str(values.get("strangers")), "against": against,
            "verdict": verdict(candidate, against, new_misses, old_misses)}


def _photos_report(values: dict, models_dir: Path) -> dict:
    from device.vision.pipeline import FacePipeline
    from training.evaluate import embed_folder

    pipeline = FacePipeline.from_models_dir(models_dir, embedder=values["model"])
    data = embed_folder(pipeline, Path(values["photos"]))
    report = {"model": pipeline.model_name, "photos": str(values["photos"]),
              "verification": verification(data)}
    return _finish(report, values, pipeline.model_name)


def _finish(report: dict, values: dict, label: str) -> dict:
    if values.get("json"):
        path = Path(values["json"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
    if values.get("plot"):
        curves = {label: report["verification"]}
        if "against" in report:
            curves[report["against"]["model"]] = report["against"]["verification"]
        for earlier in values.get("compare") or []:
            other = json.loads(Path(earlier).read_text())
            curves[other["model"]] = other["verification"]
        plot_roc(curves, Path(values["plot"]),
                 f"ROC, {report['verification']['pairs']} pairs of "
                 f"{report.get('people', '?')} people")
    short = {k: v for k, v in report["verification"].items() if k not in ("roc", "missing")}
    if "against" in report:
        return {"model": label, "against": report["against"]["model"],
                "people": report["people"], "verdict": report["verdict"]}
    return {**report, "verification": short}
