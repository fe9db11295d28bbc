"""PNG plots of a comparison run, drawn from its JSON alone.

    bench/.peers-venv/bin/python bench/plots.py bench/results/comparison.json --out bench/results

Runs with the peers' environment's Python, which has matplotlib (the product never does).
Writes ``latency-per-stage.png`` (our stages and the peers' per frame), ``search-vs-gallery.png``
(1:N search time against gallery size, log-log, with the memory-bandwidth limit) and
``roc.png`` (true- against false-accept rate of every system on the same pairs); a quick run's
names end in ``-quick``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAMES = {"facegate": "facegate", "face_recognition": "face_recognition (dlib)",
         "yunet_sface": "OpenCV YuNet + SFace"}
COLOURS = {"facegate": "#1b7837", "face_recognition": "#b2182b", "yunet_sface": "#2166ac"}
OUR_STAGES = ("detection", "landmarks (FaceMesh)", "alignment", "embedding",
              "liveness (per face)")
FRAMES = ("one face", "two faces", "group")


def latency(report: dict, path: Path) -> None:
    """Left: one-face frame split into stages. Right: whole frame, 1 / 2 / group faces."""
    systems = report["frames"]["systems"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8),
                                      gridspec_kw={"width_ratios": [1.3, 1]})
    ours = systems["facegate"]["stages"]
    stages = [(s, ours[s]["median_ms"]) for s in OUR_STAGES if s in ours]
    whole = systems["facegate"]["frames"]["one face"]["whole"]["median_ms"]
    stages.append(("other (quality, bookkeeping)", max(0.0, whole - sum(ms for _, ms in stages))))
    bars = [("facegate", stages)]
    for peer in ("face_recognition", "yunet_sface"):
        if peer in systems:
            frame = systems[peer]["frames"]["one face"]
            bars.append((peer, [("detection", frame["detection"]["median_ms"]),
                                ("landmarks, alignment, embedding",
                                 frame["embedding (all faces)"]["median_ms"])]))
    shades = {"detection": "#fdb863", "landmarks (FaceMesh)": "#b2abd2", "alignment": "#8073ac",
              "embedding": "#5e3c99", "liveness (per face)": "#e08214",
              "other (quality, bookkeeping)": "#d9d9d9",
              "landmarks, alignment, embedding": "#de77ae"}
    seen = set()
    for row, (system, stages) in enumerate(bars):
        start = 0.0
        for stage, ms in stages:
            left.barh(row, ms, left=start, color=shades[stage],
                      label=None if stage in seen else stage, edgecolor="white")
            seen.add(stage)
            start += ms
        frame_ms = systems[system]["frames"]["one face"]["whole"]["median_ms"]
        left.text(start, row, f" whole frame {frame_ms:.1f} ms", va="center", fontsize=9)
    left.set_yticks(range(len(bars)), [NAMES[s] for s, _ in bars])
    left.invert_yaxis()
    left.set_xlabel("ms per stage, median of each stage timed alone (640x480, one face; "
                    "no matching)")
    left.set_xlim(0, max(sum(ms for _, ms in st) for _, st in bars) * 1.5)
    left.legend(fontsize=8, loc="lower right")
    left.set_title("Where the time goes")

    width = 0.8 / len(systems)
    for index, system in enumerate(systems):
        frames = systems[system]["frames"]
        medians = [frames[f]["whole"]["median_ms"] for f in FRAMES]
        xs = [i + (index - (len(systems) - 1) / 2) * width for i in range(len(FRAMES))]
        right.bar(xs, medians, width, color=COLOURS[system], label=NAMES[system])
        for x, ms, f in zip(xs, medians, FRAMES, strict=True):
            right.text(x, ms, f"{ms:.0f}\n({frames[f]['faces']})", ha="center",
                       va="bottom", fontsize=7)
    right.set_yscale("log")
    right.set_xticks(range(len(FRAMES)), FRAMES)
    right.set_ylabel("ms per frame, median (log scale)")
    right.set_title("Whole frame: detect and embed every face (faces found)"
                    + ("\nours with the liveness check" if "liveness (per face)" in ours else ""))
    right.legend(fontsize=8, loc="upper left")
    right.set_ylim(top=right.get_ylim()[1] * 3)
    _save(fig, path)


def search(report: dict, path: Path) -> None:
    rows = report["search"]["results"]
    fig, axis = plt.subplots(figsize=(7.5, 5))
    for dtype, colour in (("float32", "#1b7837"), ("float16", "#762a83")):
        mine = sorted((r for r in rows if r["dtype"] == dtype), key=lambda r: r["templates"])
        sizes = [r["templates"] for r in mine]
        axis.plot(sizes, [r["decide_median_ms"] for r in mine], "o-", color=colour,
                  label=f"{dtype}: Matcher.decide, median")
        axis.plot(sizes, [r["bandwidth_limit_ms"] for r in mine], "--", color=colour,
                  label=f"{dtype}: bandwidth limit (bytes / GB/s)")
        axis.fill_between(sizes, [r["bandwidth_limit_ms"] for r in mine],
                          [2 * r["bandwidth_limit_ms"] for r in mine], color=colour, alpha=0.08)
    axis.axvline(100_000, color="grey", lw=0.8, ls=":")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("templates in the gallery (128-d)")
    axis.set_ylabel("ms per probe")
    bandwidth = report["search"]["machine"]["read_bandwidth_gb_s"]
    axis.set_title(f"1:N search vs gallery size (read bandwidth {bandwidth} GB/s; "
                   "shaded: within 2x the limit)", fontsize=10)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    _save(fig, path)


def roc(report: dict, path: Path) -> None:
    systems = report["accuracy"]["systems"]
    fig, axis = plt.subplots(figsize=(7.5, 5))
    lowest = 1.0
    for system in ("facegate", "face_recognition", "yunet_sface"):
        if system not in systems:
            continue
        verification = systems[system]["verification"]
        curve = systems[system]["roc_at_far"]
        lowest = min(lowest, min(curve["tar"]))
        axis.plot(curve["far"], curve["tar"], color=COLOURS[system],
                  label=f"{NAMES[system]}: {100 * verification['accuracy_mean']:.2f}%, "
                        f"TAR@1e-3 {100 * verification['tar_at_far_0.001']:.2f}%")
    pairs = next(iter(systems.values()))["verification"]["pairs"]
    axis.axvline(1e-3, color="grey", lw=0.8, ls=":")
    axis.set_xscale("log")
    axis.set_xlabel(f"false-accept rate ({pairs // 2:,} different-person pairs)")
    axis.set_ylabel("true-accept rate")
    axis.set_title("ROC on the same LFW-style pairs from lfw-a")
    axis.set_ylim(max(0.0, lowest - 0.02), 1.002)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="comparison.json")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    report = json.loads(args.report.read_text())
    suffix = "-quick" if report["mode"] == "quick" else ""
    args.out.mkdir(parents=True, exist_ok=True)
    latency(report, args.out / f"latency-per-stage{suffix}.png")
    search(report, args.out / f"search-vs-gallery{suffix}.png")
    roc(report, args.out / f"roc{suffix}.png")
    print(f"wrote {args.out}/{{latency-per-stage,search-vs-gallery,roc}}{suffix}.png",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

