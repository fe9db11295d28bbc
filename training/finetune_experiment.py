"""``make train-finetune``: fine-tune SFace several ways on one budget, choose, export, judge.

    python -m training.finetune_experiment --config training/sface-finetune.toml \\
        --runs var/train/finetune --minutes 25 --parallel 2 \\
        --name face_recognition_sface_coco_finetune_2026dec \\
        --strangers var/train/lfw-a-singles \\
        --json bench/results/finetune.json --plot bench/results/finetune-roc.png

1. **Train** every setting of ``SETTINGS`` (``python -m training train`` with the config
   file's ``[train]`` table and the setting's changes), ``--parallel`` at a time, one CPU
   thread each, each stopped by the same time budget (``--minutes``) or its own early
   stopping. A setting whose run folder already has ``training.json`` is not trained again.
2. **Choose** the setting with the lowest door miss rate (FNIR at FPIR 1e-2) on the
   *validation* people, which no run trained on; the held-out people are not looked at.
3. **Export** the chosen run (``export --int8 dynamic``: int8 weights as the door's SFace,
   and float16) into ``--models``, with cards.
4. **Judge** on the held-out people (never trained on, never used to choose): each
   setting's Keras model and the exported int8 file, each beside the start model
   (``evaluate --against``, the door's protocol, ``training/compare.py``), into one JSON,
   with a ROC plot of the start model against the fine-tuned file.

The verdict says whether the exported model beats the start model on every figure; making it
the door's default is a separate, deliberate change (models/README.md says which is).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from device.errors import FacegateError

# name -> the train settings it changes from the config file's [train] table.
SETTINGS: dict[str, dict] = {
    "coco-top9": {},
    "coco-top3": {"train_top_units": 3},
    "coco-top9-alpha24": {"alpha": 24.0},
    "triplet-top9": {"loss": "triplet", "people_per_batch": 25},
    "coco-top9-alpha48": {"alpha": 48.0},
    "coco-all-alpha24": {"train_top_units": 28, "alpha": 24.0},
}
START_MODEL = "face_recognition_sface_2021dec_int8dr_xnnpack"  # the door's default


def option_list(changes: dict) -> list[str]:
    """A setting's changes as command-line options."""
    options = []
    for key, value in changes.items():
        options += [f"--{key.replace('_', '-')}", str(value)]
    return options


def train_all(config: Path, runs: Path, minutes: float, parallel: int,
              only: list[str] | None = None) -> dict[str, Path]:
    """Every setting's run folder, training those not finished, ``parallel`` at a time."""
    runs.mkdir(parents=True, exist_ok=True)
    folders = {name: runs / name for name in (only or SETTINGS)}
    waiting = [name for name, folder in folders.items()
               if not (folder / "training.json").is_file()]
    running: list[tuple[str, subprocess.Popen, object]] = []
    while waiting or running:
        while waiting and len(running) < parallel:
            name = waiting.pop(0)
            command = [sys.executable, "-m", "training", "--config", str(config), "train",
                       "--out", str(folders[name]), "--time-budget-minutes", str(minutes),
                       *option_list(SETTINGS[name])]
            log = open(runs / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
            print(f"training {name}: {shlex.join(command)}", file=sys.stderr, flush=True)
            running.append((name, subprocess.Popen(command, stdout=log, stderr=log,
                                                   env={**os.environ, "PYTHONUNBUFFERED": "1"}),
                            log))
        time.sleep(2)
        for entry in list(running):
            name, process, log = entry
            if process.poll() is None:
                continue
            running.remove(entry)
            log.close()
            if process.returncode:
                raise FacegateError(f"training {name} failed (exit {process.returncode}); "
                                    f"see {runs / f'{name}.log'}")
            print(f"finished {name}", file=sys.stderr, flush=True)
    return folders


def validation_fnir(run: Path) -> float:
    facts = json.loads((run / "training.json").read_text()).get("fine_tuning", {})
    if "best_validation_fnir_at_fpir_1e-2" not in facts:
        raise FacegateError(f"{run}: no validation figure (was validation_share set?)")
    return float(facts["best_validation_fnir_at_fpir_1e-2"])


def judge_run(values: dict) -> dict:
    from training.crop_evaluation import evaluate_command

    evaluate_command(values)
    return json.loads(Path(values["json"]).read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.finetune_experiment",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="TOML with a [train] table")
    parser.add_argument("--runs", type=Path, required=True, help="folder for the run folders")
    parser.add_argument("--minutes", type=float, default=25.0, help="time budget per setting")
    parser.add_argument("--parallel", type=int, default=2, help="settings trained at once")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=None)
    parser.add_argument("--name", required=True, help="model name (precision is appended)")
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--strangers", type=Path, required=True,
                        help="prepared folder of people never enrolled")
    parser.add_argument("--against", default=START_MODEL, help="the start model's door file")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    command = "python -m training.finetune_experiment " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        report = run_experiment(args, command)
    except FacegateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print_table(report)
    return 0


def run_experiment(args: argparse.Namespace, command: str) -> dict:
    from training.export import export_command

    started = time.monotonic()
    folders = train_all(args.config, args.runs, args.minutes, args.parallel, args.settings)
    validation = {name: validation_fnir(folder) for name, folder in folders.items()}
    chosen = min(validation, key=lambda name: (validation[name], list(folders).index(name)))
    print(f"chosen on the validation people: {chosen}", file=sys.stderr, flush=True)
    exported = export_command({
        "run": str(folders[chosen]), "name": args.name, "out": str(args.models),
        "strangers": str(args.strangers), "int8": "dynamic", "precision": "both",
        "command_line": command})

    data = json.loads((folders[chosen] / "config.json").read_text())["data"]
    scratch = args.runs / "judged"
    scratch.mkdir(parents=True, exist_ok=True)
    common = {"data": data, "split": str(folders[chosen] / "split.json"),
              "strangers": str(args.strangers), "against": args.against}
    judged = {}
    for name, folder in folders.items():
        # Every run holds apart the same people (the split is seeded by the config's seed).
        same_people = json.loads((folder / "split.json").read_text())["held_out"]
        if same_people != json.loads((folders[chosen] / "split.json").read_text())["held_out"]:
            raise FacegateError(f"{name} held apart other people than {chosen}")
        judged[name] = judge_run({**common, "run": str(folder),
                                  "json": str(scratch / f"{name}.json")})
    exported_file = args.models / f"{args.name}_int8.tflite"
    final = judge_run({**common, "tflite": str(exported_file),
                       "json": str(scratch / "exported-int8.json")})
    report = {
        "command": command,
        "start_model": args.against,
        "held_out_people": final["people"], "held_out_crops": final["crops"],
        "strangers": str(args.strangers),
        "chosen_on_validation": chosen,
        "settings": {name: {"changes": SETTINGS[name],
                            "validation_fnir_at_fpir_1e-2": validation[name],
                            "training": _training_facts(folders[name]),
                            "held_out": judged[name]["verdict"]["candidate"]}
                     for name in folders},
        "start_model_on_held_out": final["verdict"]["against"],
        "exported": {"files": {name: {k: v for k, v in facts.items() if k != "accuracy"}
                               for name, facts in exported.items()},
                     "judged": final["verdict"]["candidate"]},
        "verdict": final["verdict"],
        "door_protocol": {"exported": final["door_protocol"],
                          "start_model": final["against"]["door_protocol"]},
        "roc": {"exported": final["verification"]["roc"],
                "start_model": final["against"]["verification"]["roc"]},
        # This invocation only: a rerun skips the settings already trained.
        "minutes_this_invocation": round((time.monotonic() - started) / 60, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    for name in exported:
        _write_verdict_into_card(args.models / f"{name}.json", report, args.json, command)
    if args.plot:
        plot(final, args.plot)
    return report


def plot(final: dict, path: Path) -> None:
    """ROC of the start model against the fine-tuned file on the held-out people, and the
    open-set threshold each needs at FPIR 1e-3 as the gallery grows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (roc_axis, det_axis, curve_axis) = plt.subplots(1, 3, figsize=(15, 4.6))
    for report, style in ((final["against"], "--"), (final, "-")):
        figures, door = report["verification"], report["door_protocol"]
        roc = figures["roc"]
        roc_axis.plot(np.maximum(roc["far"], 1e-5), roc["tar"], style,
                      label=f"{report['model']}: {100 * figures['accuracy_mean']:.2f}%, "
                            f"TAR@1e-3 {100 * figures['tar_at_far_0.001']:.2f}%")
        det = np.array(door["fnir_by_fpir"])
        det_axis.plot(det[:, 0], 100 * det[:, 1], style, label=report["model"])
        curve = door.get("threshold_by_gallery_size") or []
        if curve:
            curve_axis.plot([n for n, _ in curve], [t for _, t in curve], style, marker="o",
                            ms=3, label=f"{report['model']}: FNIR "
                            f"{100 * door['at_fpir_0.001']['fnir']:.2f}% at FPIR 1e-3")
    roc_axis.axvline(1e-3, color="grey", lw=0.8, ls=":")
    roc_axis.set(xscale="log", xlabel="false-accept rate", ylabel="true-accept rate",
                 title=f"ROC, 10-fold pairs of {final['people']} held-out people")
    roc_axis.set_ylim(0.9, 1.0)
    det_axis.axvline(1e-3, color="grey", lw=0.8, ls=":")
    det_axis.axvline(1e-2, color="grey", lw=0.8, ls=":")
    det_axis.set(xscale="log", xlabel="strangers accepted (FPIR)",
                 ylabel="enrolled people not let in (FNIR, %)",
                 title="the door's protocol: one photo enrolled, next five")
    curve_axis.set(xscale="log", xlabel="people enrolled",
                   ylabel="threshold for FPIR 1e-3 (cosine)",
                   title="open-set threshold by gallery size")
    if not curve_axis.lines:
        curve_axis.text(0.5, 0.5, "too few people for a tail fit", ha="center",
                        transform=curve_axis.transAxes)
    for axis in (roc_axis, det_axis, curve_axis):
        axis.grid(True, which="both", alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_verdict_into_card(card_path: Path, report: dict, report_path: Path,
                             command: str) -> None:
    """The card says how the model compares with the start model, and by which rule it may
    become the door's default."""
    card = json.loads(card_path.read_text())
    better = report["verdict"]["better_on_every_figure"]
    card["judged_against_start_model"] = {
        "status": ("better than the start model on every figure: may be made the door's "
                   "default" if better else "not better than the start model on every "
                   "figure: not the door's default"),
        "start_model": report["start_model"],
        "held_out_people": report["held_out_people"],
        "of_the_int8_file": report["verdict"],
        "rule": "made the door's default only if better than the start model on every figure "
                "(pairs accuracy and TAR at least as high, FNIR at FPIR 1e-3 and 1e-2 lower) "
                "on people held apart from the fine-tuning; models/README.md says which model "
                "is the default",
        "report": str(report_path), "measured_by": command}
    card_path.write_text(json.dumps(card, indent=2) + "\n")


def _training_facts(run: Path) -> dict:
    summary = json.loads((run / "training.json").read_text())
    keep = ("loss", "alpha", "epochs_run_this_time", "stopped_by_time_budget", "seconds",
            "images_per_second", "fine_tuning")
    return {k: summary[k] for k in keep if k in summary}


def print_table(report: dict) -> None:
    def row(label: str, figures: dict) -> str:
        return (f"| {label} | {100 * figures['pairs_accuracy']:.2f}% | "
                f"{100 * figures['tar_at_far_1e-3']:.2f}% | "
                f"{100 * figures['fnir_at_fpir_0.001']:.2f}% | "
                f"{100 * figures['fnir_at_fpir_0.01']:.2f}% |")

    print(f"\nheld-out people: {report['held_out_people']} "
          f"({report['held_out_crops']} crops); chosen on validation: "
          f"{report['chosen_on_validation']}\n")
    print("| model | pairs accuracy | TAR at FAR 1e-3 | FNIR at FPIR 1e-3 | FNIR at FPIR 1e-2 |")
    print("|---|---|---|---|---|")
    print(row(f"{report['start_model']} (start)", report["start_model_on_held_out"]))
    for name, setting in report["settings"].items():
        print(row(f"{name} (Keras)", setting["held_out"]))
    print(row("exported int8", report["exported"]["judged"]))
    for key, (low, high) in report["verdict"].get("fnir_difference_interval_95", {}).items():
        print(f"\n{key}, exported minus start: {100 * report['verdict']['difference'][key]:+.2f}"
              f" points (95% over resampled people: {100 * low:+.2f} to {100 * high:+.2f})")
    print(f"\nbetter than the start model on every figure: "
          f"{report['verdict']['better_on_every_figure']}")


if __name__ == "__main__":
    sys.exit(main())
