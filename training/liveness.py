"""Liveness models for the door: convert upstream's networks, fine-tune them, measure them.

    python -m training.liveness convert --out models/        # make models-liveness
    python -m training.liveness train --out models/          # make train-liveness (~15 min)
    python -m training.liveness evaluate --json bench/results/liveness.json   # make eval-liveness

``convert`` rebuilds Minivision's MiniFASNetV2 and MiniFASNetV1SE (``../shared/third_party``)
in Keras, converts each to TFLite and checks the file against onnxruntime on real pad-dev
crops (every class probability within 1e-3), writing ``liveness_minifasnet_*_2020aug``.

``train`` splits pad-dev by capture session (``training/liveness_data.py``): a quarter of it
held apart for ``evaluate``, five cross-validation folds in the rest. Both networks are
fine-tuned five times, each time on four folds, and score the fifth: the pooled out-of-fold
scores choose the threshold (the highest whose BPCER stays at ``--target-bpcer``). Then both
are fine-tuned on all five folds, fused (mean of the two live probabilities, in one TFLite
graph) and written with a card holding the threshold and the cross-validated APCER/BPCER.

``evaluate`` scores the held-apart part with the TFLite files through the door's own
``LivenessModel`` and writes APCER per attack type, BPCER, confidence intervals, the DET
curve's points and the pretrained baseline, as bench/results/liveness.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from training.liveness_train import FineTuning

VAR = Path("var/liveness")
BOXES_CACHE = VAR / "boxes.json"
PRETRAINED_NAME = "liveness_minifasnet_{key}_2020aug"
FINE_TUNED_NAME = "liveness_minifasnet_fused_paddev_2026dec"


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dataset():
    from training.liveness_data import list_photos, locate, split
    from training.liveness_train import load_photos

    samples, missing = locate(list_photos(), cache=BOXES_CACHE)
    folds, test = split(samples)
    return samples, missing, folds, test, load_photos(samples)


def _plain_crops(photos, samples, indices, network) -> np.ndarray:
    from device.vision.liveness import liveness_crop

    return np.stack([liveness_crop(photos[i], samples[i].box, network.crop_scale)
                     for i in indices])


def convert(out: Path) -> int:
    """The two pretrained networks as TFLite, each checked against onnxruntime."""
    from training.liveness_export import checked_export, write_model
    from training.minifasnet import NETWORKS, keras_from_onnx, onnx_probabilities

    samples, _, _, _, photos = _dataset()
    parity_set = list(range(0, len(samples), 8))  # 260 faces, both classes
    for key, network in NETWORKS.items():
        crops = _plain_crops(photos, samples, parity_set, network)
        reference = onnx_probabilities(network.onnx_file, crops)
        model = keras_from_onnx(network.onnx_file)
        flatbuffer, precision, check = checked_export(model, [network], [crops], reference)
        name = f"{PRETRAINED_NAME.format(key=key)}_{precision}"
        check["against"] = "onnxruntime on the upstream ONNX, real pad-dev crops"
        card = write_model(out, name, flatbuffer, _card(
            architecture=f"Minivision MiniFASNet{key.upper().replace('SE', 'SE')}, as published",
            networks=[network], precision=precision, parity=check,
            source={"upstream": "minivision-ai/Silent-Face-Anti-Spoofing",
                    "commit": "b6d5f04ad78778917853b25c778acef6d5626d15",
                    "onnx": f"../shared/third_party/silent-face-anti-spoofing/onnx/"
                            f"{network.onnx_file.name}",
                    "onnx_sha256": _sha256(network.onnx_file),
                    "onnx_from": "feni-katharotiya/Silent-Face-Anti-Spoofing-TFLite a89a24b"},
            produced_by="make models-liveness (python -m training.liveness convert)",
            threshold={"live": 0.5, "chosen_by": "upstream's rule (argmax), not measured"}))
        print(f"{name}.tflite: {precision}, max class-probability difference "
              f"{check['max_probability_difference']:.2g} on {check['faces']} faces, "
              f"SHA-256 {card['sha256']}")
    return 0


def train(out: Path, *, target_bpcer: float, settings, run_dir: Path, networks: list[str],
          folds_only: bool = False) -> int:
    """Cross-validate the fine-tuning, choose the threshold, fine-tune on everything but the
    held-apart part, fuse and export with a card."""
    from training.liveness_data import ATTACK
    from training.liveness_export import checked_export, fused, write_model
    from training.liveness_train import error_rates, fine_tune, live_scores, threshold_at_bpcer
    from training.minifasnet import NETWORKS

    samples, missing, folds, test, photos = _dataset()
    labels = np.array([s.label for s in samples])
    chosen = [NETWORKS[key] for key in networks]
    run_dir.mkdir(parents=True, exist_ok=True)
    n_folds = max(folds) + 1
    development = [i for i, f in enumerate(folds) if f >= 0]
    print(f"pad-dev: {len(samples)} photos with a face ({len(missing)} without), "
          f"{len(development)} for training and cross-validation, {len(test)} held apart")

    # Out-of-fold live scores: each fold scored by networks that never saw it. A rerun with
    # the same recipe reuses them (``--run`` keeps them with the recipe they came from).
    recipe = {"networks": networks, **vars(settings)}
    saved = run_dir / "cross_validation.npz"
    if saved.is_file() and json.loads(str(np.load(saved)["recipe"])) == recipe:
        out_of_fold = np.load(saved)["scores"]
        print(f"cross-validation scores reused from {saved}")
    else:
        out_of_fold = np.full((len(chosen), len(samples)), np.nan)
        for fold in range(n_folds):
            held = [i for i in development if folds[i] == fold]
            rest = [i for i in development if folds[i] != fold]
            for row, network in enumerate(chosen):
                model = fine_tune(network, photos, samples, rest, settings)
                out_of_fold[row, held] = live_scores(model, photos, samples, held, network)
            fused_scores = out_of_fold[:, held].mean(axis=0)
            apcer, bpcer = error_rates(fused_scores, labels[held], 0.5)
            print(f"fold {fold + 1}/{n_folds}: {len(held)} photos, at 0.5 APCER {apcer:.3f} "
                  f"BPCER {bpcer:.3f}")
        np.savez(saved, scores=out_of_fold, labels=labels, folds=np.array(folds),
                 recipe=json.dumps(recipe))
    pooled = out_of_fold[:, development].mean(axis=0)
    dev_labels = labels[development]
    # Rounded down to the 4 decimals the card keeps, so the card's threshold never rejects
    # more than the target share of the cross-validation's live faces.
    threshold = math.floor(threshold_at_bpcer(pooled, dev_labels, target_bpcer) * 1e4) / 1e4
    cv_apcer, cv_bpcer = error_rates(pooled, dev_labels, threshold)
    print(f"cross-validated: threshold {threshold:.4f} at BPCER <= {target_bpcer}: "
          f"APCER {cv_apcer:.4f}, BPCER {cv_bpcer:.4f}")
    if folds_only:
        return 0

    finals = [fine_tune(network, photos, samples, development, settings) for network in chosen]
    for network, model in zip(chosen, finals, strict=True):
        model.save_weights(run_dir / f"{network.key}.weights.h5")
    model = fused(finals, FINE_TUNED_NAME)
    parity_set = test[::3]
    crops = [_plain_crops(photos, samples, parity_set, network) for network in chosen]
    reference = model.predict(crops if len(chosen) > 1 else crops[0], verbose=0)
    flatbuffer, precision, check = checked_export(model, chosen, crops, reference)
    check["against"] = "the fine-tuned Keras model, held-apart pad-dev crops"
    name = f"{FINE_TUNED_NAME}_{precision}"
    attacks = int(np.sum(dev_labels == ATTACK))
    card = write_model(out, name, flatbuffer, _card(
        architecture="MiniFASNetV2 (crop 2.7x) and MiniFASNetV1SE (crop 4.0x), fine-tuned "
                     "on pad-dev, probabilities averaged in the graph",
        networks=chosen, precision=precision, parity=check,
        source={"start": [PRETRAINED_NAME.format(key=n.key) for n in chosen],
                "data": "../shared/data/pad-dev, split by capture session "
                        "(training/liveness_data.py, seed 0): "
                        f"{len(development)} photos for training, {len(test)} held apart",
                "fine_tuning": {k: v for k, v in vars(settings).items()}},
        produced_by="make train-liveness (python -m training.liveness train)",
        threshold={"live": round(threshold, 4), "votes_needed": 2,
                   "chosen_by": f"{n_folds}-fold cross-validation on the training part: the "
                                f"highest threshold with BPCER <= {target_bpcer}",
                   "cross_validated": {"apcer": round(cv_apcer, 4), "bpcer": round(cv_bpcer, 4),
                                       "attacks": attacks,
                                       "bona_fide": len(dev_labels) - attacks}},
        accuracy={"held_apart": "make eval-liveness -> bench/results/liveness.json"}))
    print(f"{name}.tflite: {precision}, SHA-256 {card['sha256']}")
    return 0


def evaluate(model: str, out_json: Path, plot: Path | None, write_cards: bool = False) -> int:
    from device.vision.models import DEFAULT_LIVENESS
    from training.liveness_evaluate import evaluate as run_evaluation

    pretrained = [f"{PRETRAINED_NAME.format(key=key)}_float32" for key in ("v2", "v1se")]
    default = model or DEFAULT_LIVENESS
    report = run_evaluation(default, [p for p in pretrained if p != default],
                            tuple(pretrained), out_json, plot, BOXES_CACHE)
    print(f"{'model':58} {'threshold':>9} {'APCER':>7} {'BPCER':>7} {'A@B5%':>7} {'EER':>6}")
    for name, entry in report["models"].items():
        at = entry["at_card_threshold"]
        print(f"{name:58} {at['threshold']:9.4f} {at['apcer']:7.3f} {at['bpcer']:7.3f} "
              f"{entry['apcer_at_bpcer_0.05']:7.3f} {entry['eer']:6.3f}")
    print(f"wrote {out_json}" + (f" and {plot}" if plot else ""))
    if write_cards:
        for name, entry in report["models"].items():
            card_path = Path("models") / f"{name}.json"
            if not card_path.is_file():
                continue  # the fused pretrained baseline has no file of its own
            card = json.loads(card_path.read_text())
            at = entry["at_card_threshold"]
            card["accuracy"] = {
                "held_apart": {key: at[key] for key in (
                    "threshold", "apcer", "apcer_interval_95", "bpcer", "bpcer_interval_95",
                    "attacks", "bona_fide", "apcer_per_type")},
                "apcer_at_bpcer_0.05": entry["apcer_at_bpcer_0.05"], "eer": entry["eer"],
                "data": "pad-dev's held-apart part (printed photos only; no screens)",
                "measured_by": "make eval-liveness (bench/results/liveness.json)"}
            card_path.write_text(json.dumps(card, indent=2) + "\n")
            print(f"{card_path}: accuracy block rewritten")
    return 0


def _card(*, architecture: str, networks, precision: str, parity: dict, source: dict,
          produced_by: str, threshold: dict, **extra) -> dict:
    return {
        "task": "liveness",
        "architecture": architecture,
        "inputs": [{"crop_scale": n.crop_scale, "size": 80, "network": n.key} for n in networks],
        "input": {"layout": "NHWC float32 [1, 80, 80, 3] per input", "colour": "BGR",
                  "normalisation": "none (0..255)",
                  "crop": "the face box scaled by crop_scale about its centre, at most to the "
                          "frame, shifted inside it, resized to 80x80 "
                          "(device/vision/liveness.py, upstream's rule)"},
        "output": {"probabilities": "[1, 3] softmax; class 1 = live, 0 and 2 = attack",
                   "fusion": "mean of the members' probabilities" if len(networks) > 1
                   else "single network"},
        "precision": precision,
        "threshold": threshold,
        "parity": parity,
        "source": source,
        "licence": "Apache-2.0 (Minivision's weights and code; see "
                   "../shared/third_party/silent-face-anti-spoofing/LICENSE)",
        "produced_by": produced_by,
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    parser = argparse.ArgumentParser(prog="python -m training.liveness",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    convert_parser = commands.add_parser("convert", help="pretrained networks -> TFLite")
    convert_parser.add_argument("--out", type=Path, default=Path("models"))
    train_parser = commands.add_parser("train", help="fine-tune, cross-validate, export")
    train_parser.add_argument("--out", type=Path, default=Path("models"))
    train_parser.add_argument("--run", type=Path, default=VAR / "run")
    train_parser.add_argument("--target-bpcer", type=float, default=0.03)
    train_parser.add_argument("--epochs", type=int, default=FineTuning.epochs)
    train_parser.add_argument("--learning-rate", type=float, default=FineTuning.learning_rate)
    train_parser.add_argument("--networks", nargs="+", default=["v2", "v1se"])
    train_parser.add_argument("--pull-to-start", type=float, default=FineTuning.pull_to_start,
                              help="share of the way back to upstream's weights per batch")
    train_parser.add_argument("--folds-only", action="store_true",
                              help="cross-validate only; write no model")
    evaluate_parser = commands.add_parser("evaluate", help="APCER/BPCER on the held-apart part")
    evaluate_parser.add_argument("--model", default="",
                                 help="the liveness model to judge (default: the door's)")
    evaluate_parser.add_argument("--json", type=Path, default=Path("bench/results/liveness.json"))
    evaluate_parser.add_argument("--plot", type=Path, default=None,
                                 help="a PNG of BPCER against APCER (needs matplotlib)")
    evaluate_parser.add_argument("--write-cards", action="store_true",
                                 help="write the figures into the models' cards")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.command == "convert":
        code = convert(args.out)
    elif args.command == "train":
        settings = FineTuning(epochs=args.epochs, learning_rate=args.learning_rate,
                              pull_to_start=args.pull_to_start)
        code = train(args.out, target_bpcer=args.target_bpcer, settings=settings,
                     run_dir=args.run, networks=args.networks, folds_only=args.folds_only)
    elif args.command == "evaluate":
        code = evaluate(args.model, args.json, args.plot, args.write_cards)
    else:  # pragma: no cover - argparse refuses unknown commands
        code = 2
    print(f"{args.command}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
