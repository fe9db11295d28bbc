"""The technician's command line: (harvest ->) prepare -> train -> evaluate -> export.

Every setting has a default; ``--config FILE.toml`` supplies others, one table per command
(``[prepare]``, ``[train]``, ``[evaluate]``, ``[export]``, keys as the long options with
underscores), and options on the command line win over both. ``docs/training.md`` walks
through a whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

from device.errors import FacegateError
from training import harvest

# Options whose default is None, and what they hold when given.
_OPTIONAL_TYPES = {"alpha": float, "steps_per_epoch": int, "init_from": str,
                   "time_budget_minutes": float, "gpus": int, "threads": int,
                   "train_top_units": int}
_HELP = {
    "data": "a prepared folder (prepare --out)",
    "out": "the run folder (running again resumes it)",
    "backbone": "mobilefacenet, resnet18, resnet34 or resnet50",
    "width": "channel multiplier of the backbone",
    "loss": "coco (the method) or triplet (the FaceNet baseline)",
    "alpha": "COCO scale (default: the lower bound for the number of people)",
    "alpha_epsilon": "posterior shortfall the alpha bound allows",
    "people_per_batch": "triplet batches: people per batch",
    "steps_per_epoch": "default: one pass over the training crops",
    "holdout_share": "share of people held apart for evaluation",
    "init_from": "start from sface (the door's default, with --backbone sface), a run "
                 "folder or a .weights.h5 (fine-tuning)",
    "validation_share": "share of the training people set aside for early stopping",
    "warmup_centres_epochs": "COCO fine-tuning: epochs training the class centres only",
    "warmup_learning_rate": "the centres' learning rate in that warm-up",
    "train_top_units": "fine-tuning: train only the top N units (default: all)",
    "freeze_batchnorm": "keep the start model's batch-norm statistics",
    "early_stopping_patience": "stop after N epochs without a lower validation FNIR",
    "time_budget_minutes": "stop cleanly after this long",
    "mixed_precision": "float16 compute on a GPU",
    "gpus": "how many GPUs (default: all; 0: CPU)",
    "threads": "CPU threads for the backend (default: all)",
    "workers": "threads decoding and augmenting batches",
    "eval_every": "held-out verification every N epochs (0: never)",
    "checkpoint_every": "save the embedder every N epochs",
}


def _config_section(argv: list[str], section: str) -> dict:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    known, _ = pre.parse_known_args(argv)
    if known.config is None:
        return {}
    try:
        return tomllib.loads(known.config.read_text()).get(section, {})
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise FacegateError(f"{known.config}: {error}") from None


def _prepare_parser(sub) -> None:
    parser = sub.add_parser("prepare", help="align a dataset once and cache the crops",
                            description="Align every photo of a one-folder-per-person dataset "
                            "with the door's own detector, FaceMesh and aligner; cache the "
                            "crops with a manifest and a list of rejected images. Resumable.")
    parser.add_argument("--data", type=Path, required=True, help="one sub-folder per person")
    parser.add_argument("--out", type=Path, required=True, help="folder for the crops")
    parser.add_argument("--workers", type=int, default=0, help="processes (default: CPUs)")
    parser.add_argument("--alignment", choices=["similarity", "homography"],
                        default="similarity")
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--max-people", type=int, default=None,
                        help="only the first N people (a quick trial)")
    parser.add_argument("--no-progress", action="store_true", default=None)


def _train_parser(sub) -> None:
    from training.train import TrainConfig

    parser = sub.add_parser("train", help="train an embedding network",
                            description="Train on prepared crops with the COCO loss (or the "
                            "triplet baseline); writes a run folder; rerun to resume.")
    for f in fields(TrainConfig):
        if f.name == "augmentation":
            continue  # a table in the config file
        option = "--" + f.name.replace("_", "-")
        default = getattr(TrainConfig(), f.name)
        if isinstance(default, bool):
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=None,
                                help=_HELP.get(f.name, ""))
        else:
            kind = _OPTIONAL_TYPES.get(f.name, type(default))
            parser.add_argument(option, type=kind, default=None,
                                help=f"{_HELP.get(f.name, f.name.replace('_', ' '))} "
                                     f"(default: {default})")


def _evaluate_parser(sub) -> None:
    parser = sub.add_parser("evaluate", help="verification and open-set figures",
                            description="Judge a trained run (Keras), a .tflite file (through "
                            "the door's interpreter) or a model by name on the held-out people "
                            "of a prepared folder; or on raw photos through the whole door "
                            "pipeline (--model with --photos).")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", type=Path, help="a run folder (train --out)")
    what.add_argument("--tflite", type=Path, help="a .tflite embedder with its .json card")
    what.add_argument("--model", help="an embedder by name from --models-dir")
    parser.add_argument("--data", type=Path, help="prepared folder (default: the run's)")
    parser.add_argument("--people", choices=["held-out", "all"], default=None,
                        help="which people of --data (default: held-out for a run, else all)")
    parser.add_argument("--split", type=Path, help="split.json naming the held-out people")
    parser.add_argument("--pairs", type=Path, help="an LFW-format pairs file (else 10-fold "
                        "pairs are generated from the people)")
    parser.add_argument("--strangers", type=Path,
                        help="prepared folder of people never enrolled (open-set)")
    parser.add_argument("--against", metavar="MODEL",
                        help="also judge this model (by name, e.g. the door's current one) on "
                        "the same people, with the door's protocol and a verdict")
    parser.add_argument("--photos", type=Path, help="raw photos, one folder per person: the "
                        "whole door pipeline (with --model)")
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--plot", type=Path, help="write the ROC curve here (PNG)")
    parser.add_argument("--compare", type=Path, nargs="+", metavar="JSON",
                        help="also draw these earlier --json reports in the plot")


def _export_parser(sub) -> None:
    parser = sub.add_parser("export", help="TFLite float16 and int8 for the door, with cards",
                            description="Convert a run to TFLite (float16 and full-integer "
                            "int8), check each against the Keras model, calibrate the "
                            "threshold and write model + card. Needs TensorFlow.")
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--name", required=True, help="model name, e.g. "
                        "facegate_mobilefacenet_coco_2026nov (precision is appended)")
    parser.add_argument("--out", type=Path, default=None, help="default: models/")
    parser.add_argument("--precision", choices=["int8", "float16", "both"], default="both")
    parser.add_argument("--int8", choices=["full", "dynamic"], default="full",
                        help="full integer (default) or dynamic-range weights with float "
                        "activations, as the door's default SFace")
    parser.add_argument("--calibration-images", type=int, default=300,
                        help="representative crops for int8, from the training people")
    parser.add_argument("--min-cosine", type=float, default=0.99,
                        help="least mean cosine to the Keras model on held-out faces")
    parser.add_argument("--target-far", type=float, default=1e-3,
                        help="false-accept rate the 1:1 threshold is set at")
    parser.add_argument("--target-fpir", type=float, default=1e-3,
                        help="stranger acceptance the door's threshold is set at")
    parser.add_argument("--strangers", type=Path,
                        help="prepared folder of strangers for the door's threshold")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, dict], dict[str, list[str]]]:
    """The parser, each command's defaults and its required settings.

    The defaults are taken out of argparse, so a value from the config file is not masked by
    a default the user never typed; they are applied last, in ``_merge``.
    """
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--config", type=Path, help="TOML file with [prepare], [train], ...")
    sub = parser.add_subparsers(dest="command", required=True)
    _prepare_parser(sub)
    _train_parser(sub)
    _evaluate_parser(sub)
    _export_parser(sub)
    harvest.add_parser(sub)
    defaults, required = {}, {}
    for command, subparser in sub.choices.items():
        defaults[command], required[command] = {}, []
        for action in subparser._actions:
            if action.dest == "help":
                continue
            if action.default is not None:
                defaults[command][action.dest] = action.default
                action.default = None
            if action.required:
                required[command].append(action.dest)
                action.required = False
        for group in subparser._mutually_exclusive_groups:
            group.required = False
    return parser, defaults, required


def _merge(args: argparse.Namespace, section: dict, defaults: dict) -> dict:
    """Command line over config file; config file over the defaults."""
    values = dict(defaults)
    values.update({k.replace("-", "_"): v for k, v in section.items()})
    values.update({k: v for k, v in vars(args).items() if v is not None})
    for key in ("command", "config"):
        values.pop(key, None)
    return values


def _check_required(command: str, values: dict, required: list[str]) -> None:
    missing = [name for name in required if values.get(name) is None]
    if missing:
        raise FacegateError(f"{command} needs " + ", ".join(
            f"--{name.replace('_', '-')}" for name in missing) + f" (or in [{command}])")
    if command == "evaluate" and sum(bool(values.get(k)) for k in ("run", "tflite",
                                                                   "model")) != 1:
        raise FacegateError("evaluate needs exactly one of --run, --tflite or --model")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, defaults, required = build_parser()
    args = parser.parse_args(argv)
    try:
        section = _config_section(argv, args.command)
        values = _merge(args, section, defaults[args.command])
        # Cards record how they were made, word for word.
        values["command_line"] = "python -m training " + " ".join(shlex.quote(a) for a in argv)
        _check_required(args.command, values, required[args.command])
        if args.command == "prepare":
            from training.prepare import prepare

            counts = prepare(Path(values["data"]), Path(values["out"]),
                             workers=values["workers"], alignment=values["alignment"],
                             models_dir=values.get("models_dir"),
                             max_people=values.get("max_people"),
                             progress=not values.get("no_progress"))
            print(json.dumps(counts, indent=2))
        elif args.command == "train":
            from training.train import TrainConfig, train

            values.pop("command_line")
            print(json.dumps(train(TrainConfig.from_dict(values)), indent=2))
        elif args.command == "evaluate":
            from training.crop_evaluation import evaluate_command

            print(json.dumps(evaluate_command(values), indent=2))
        elif args.command == "harvest":
            print(json.dumps(harvest.harvest_command(values), indent=2))
        elif args.command == "export":
            os.environ.setdefault("KERAS_BACKEND", "tensorflow")
            from training.export import export_command

            print(json.dumps(export_command(values), indent=2))
    except FacegateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
