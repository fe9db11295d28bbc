"""facegate side by side with face_recognition (dlib) and OpenCV YuNet + SFace, in one run.

    python bench/compare.py [--quick] [--peers auto|install|skip] [--tf-python PATH]
                            [--out bench/results] [--cache var/bench-cache]

On this machine, in this run, on the same frames and the same images:

- speed: our existing benchmarks (``bench_pipeline.py`` per stage, ``bench_search.py``,
  ``bench_daemon.py``, ``bench_one_core.py``: one core, one thread, ``bench_still_path.py``:
  the still path beside the door path), run as they are, their
  JSON read back; then the same 640x480 frames (one face, two faces, a group) through our
  pipeline and through each peer, every face found detected and embedded (and, for us, judged
  by the liveness check, which the door runs by default), median and 90th percentile per
  frame; and still photos as a user meets them: ``facegate embed`` on 200 LFW photos in one
  process, start-up included, beside each peer's runner on the same files;
- accuracy: every system embeds ``../shared/data/lfw-a`` and ``lfw-a-singles`` (the largest
  face of each image; an image with no face found is a miss) and ``training/evaluate.py``
  scores all of them with the same code: the same 6,000 pairs, the same enrolled photo per
  person (the first image in which every system found a face), the same probes and strangers,
  and each system's own default rule;
- SFace at float32, float16 and int8 (``bench/embedder_variants.py``; float32 and int8 only
  with ``--tf-python``, or when an earlier run built them).

The peers run in their own environment, ``bench/.peers-venv`` (``bench/peers/``), made on
first use unless ``--peers auto`` (the default with ``--quick``) finds it missing, in which case
they are skipped with a line saying so. ``--quick`` (CI-sized, under two minutes with warm
caches or none) uses 30 people and 30 strangers and fewer repetitions. Embeddings are cached
under ``--cache``; ours share ``var/eval-cache`` with ``make eval``.

Writes ``OUT/comparison.json`` (every figure, the machine, the load average), ``OUT/summary.md``
(the headline table, ratios measured in this run) and, with the peers' environment, PNG plots.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
for path in (str(ROOT), str(BENCH)):
    if path not in sys.path:
        sys.path.insert(0, path)

import embedder_variants  # noqa: E402
import summary  # noqa: E402
from bench_pipeline import (  # noqa: E402
    bench_stages,
    door_step,
    one_face_frame,
    several_faces_frame,
    summarise,
)
from bench_search import _cpu_model  # noqa: E402
from peers import environment  # noqa: E402

from device.liveness import LivenessCheck, liveness_loader  # noqa: E402
from device.vision.pipeline import FacePipeline  # noqa: E402
from training import evaluate  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
PEERS = ("face_recognition", "yunet_sface")
SYSTEMS = ("facegate", *PEERS)
QUICK_PEOPLE, QUICK_STRANGERS, QUICK_MAX_IMAGES = 30, 30, 8
FRAME_ROUNDS = {"full": 3, "quick": 1}
FRAME_REPEATS = {"full": {"stages": 200, "facegate": 70, "peers": 17},
                 "quick": {"stages": 20, "facegate": 20, "peers": 5}}
STILL_PHOTOS = {"full": 200, "quick": 50}  # LFW photos per process
STILL_ROUNDS = {"full": 3, "quick": 1}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the machine --------------------------------------------------------------------------

def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def wait_until_quiet(limit_s: float, below: float = 1.0) -> dict:
    """Wait (up to ``limit_s``) for the 1-minute load average to fall under ``below``: other
    work on a 2-core machine slows every timing."""
    started = time.monotonic()
    while load_average() >= below and time.monotonic() - started < limit_s:
        time.sleep(5)
    return {"waited_s": round(time.monotonic() - started), "load_average": load_average()}


def machine() -> dict:
    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "opencv": cv2.__version__, "ai_edge_litert": version("ai-edge-litert"),
            "interpreter_threads": os.environ.get("FACEGATE_THREADS", "all cores")}


# --- our existing benchmarks --------------------------------------------------------------

def run_bench_script(script: str, json_path: Path, quick: bool) -> dict:
    """Run one of bench/*.py as it is (its table goes to the log) and read its JSON back."""
    command = [sys.executable, str(BENCH / script), "--json", str(json_path)]
    if quick:
        command.append("--quick")
    log(f"$ {shlex.join(command)}")
    subprocess.run(command, check=True, cwd=ROOT, stdout=sys.stderr)
    return json.loads(json_path.read_text())


# --- speed per frame ----------------------------------------------------------------------

def write_frames(folder: Path) -> dict[str, Path]:
    """640x480 frames saved losslessly, so every system reads the same pixels: one face and
    two faces as bench_pipeline.py builds them, and a group (tests/data's selfie, scaled to
    480 rows and centred)."""
    folder.mkdir(parents=True, exist_ok=True)
    group = cv2.imread(str(ROOT / "tests" / "data" / "selfie-many-people.jpg"))
    height, width = group.shape[:2]
    group = cv2.resize(group, (round(width * 480 / height), 480), interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 90, np.uint8)
    left = (640 - group.shape[1]) // 2
    canvas[:, left:left + group.shape[1]] = group
    frames = {"one face": one_face_frame(), "two faces": several_faces_frame(), "group": canvas}
    paths = {}
    for name, frame in frames.items():
        paths[name] = folder / f"frame-{name.replace(' ', '-')}.png"
        cv2.imwrite(str(paths[name]), frame)
    return paths


def sample_ms(function, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls, after one warm-up call."""
    function()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1e3)
    return samples


def run_ours(pipeline: FacePipeline, liveness: LivenessCheck, frames: dict[str, Path],
             repeats: int) -> dict:
    """One round of ours on every frame: ms per run of what the door does (every face
    detected, located, aligned, embedded and judged live or not: ``whole``), and of the
    pipeline alone (``without liveness``)."""
    results = {}
    for name, path in frames.items():
        frame = cv2.imread(str(path))
        results[name] = {"faces": len(pipeline.process(frame)), "samples_ms": {
            "whole": sample_ms(lambda f=frame: door_step(pipeline, liveness, f), repeats),
            "without liveness": sample_ms(lambda f=frame: pipeline.process(f), repeats)}}
    return results


def run_peer(python: Path, system: str, frames: dict[str, Path], repeats: int,
             models: Path, scratch: Path) -> tuple[dict, dict]:
    """One round of a peer on every frame (a child process): its settings, and ms per run."""
    out = scratch / f"peer-{system}-time.json"
    subprocess.run([str(python), str(BENCH / "peers" / "run_peer.py"), system, "time",
                    "--models", str(models), "--repeats", str(repeats), "--out", str(out),
                    "--frames", *map(str, frames.values())], check=True, cwd=ROOT)
    report = json.loads(out.read_text())
    return report["info"], {name: report["frames"][path.name] for name, path in frames.items()}


def time_frames(frames: dict[str, Path], peers: dict[str, Path], models: Path | None,
                scratch: Path, mode: str) -> dict:
    """Every system on the same frames, in interleaved rounds (ours, then each peer, again and
    again), so a burst of other work on the machine falls on all of them alike; the rounds'
    runs are pooled before the median is taken. Our stages are bench_pipeline's own
    measurement, taken first."""
    rounds, repeats = FRAME_ROUNDS[mode], FRAME_REPEATS[mode]
    pipeline = FacePipeline.from_models_dir()
    liveness = LivenessCheck(liveness_loader())  # the door's default: on, the default model
    systems = {"facegate": {"stages": bench_stages(pipeline, repeats["stages"], liveness)}}
    pooled: dict[str, dict] = {}
    for round_ in range(rounds):
        log(f"timing frames, round {round_ + 1} of {rounds} ...")
        measured = {"facegate": run_ours(pipeline, liveness, frames, repeats["facegate"])}
        for system, python in peers.items():
            systems.setdefault(system, {})["info"], measured[system] = run_peer(
                python, system, frames, repeats["peers"], models, scratch)
        for system, per_frame in measured.items():
            for frame, entry in per_frame.items():
                into = pooled.setdefault(system, {}).setdefault(
                    frame, {"faces": entry["faces"], "samples_ms": {}})
                for key, samples in entry["samples_ms"].items():
                    into["samples_ms"].setdefault(key, []).extend(samples)
    for system, per_frame in pooled.items():
        systems[system]["frames"] = {
            frame: {"faces": entry["faces"],
                    **{key: summarise(s) for key, s in entry["samples_ms"].items()}}
            for frame, entry in per_frame.items()}
    systems["facegate"]["liveness"] = liveness.model_name
    return {"rounds": rounds, "repeats_per_round": repeats,
            "files": {k: str(v) for k, v in frames.items()}, "systems": systems}


# --- speed on still photos, one process per system ----------------------------------------

def still_photos(folder: Path, count: int) -> list[Path]:
    """``count`` photos of ``folder`` (lfw-a-singles: one photo each of 500 people, 250x250,
    so no person comes twice, and only ever strangers here, never trained on), evenly spaced
    through their sorted list."""
    photos = sorted(folder.glob("*/*.jpg"))
    if len(photos) < count:
        raise SystemExit(f"compare: {folder} has {len(photos)} photos, {count} are needed")
    return [photos[i * len(photos) // count] for i in range(count)]


def still_commands(peers: dict[str, Path], models: Path | None) -> dict:
    """Per system, a function of a list of photos giving the command that embeds them all in
    one new process, and one giving how many of them it found a face in from its output."""
    script = Path(sys.executable).parent / "facegate"  # the console script of this venv
    facegate = [str(script)] if script.is_file() else [sys.executable, "-m", "device"]
    commands = {"facegate": (
        lambda photos, out: [*facegate, "embed", *map(str, photos)],
        lambda out: sum(1 for line in out.read_text().splitlines()
                        if json.loads(line).get("faces")))}
    for system, python in peers.items():
        def command(photos, out, system=system, python=python):
            listing = out.with_suffix(".txt")
            listing.write_text("\n".join(map(str, photos)) + "\n")
            return [str(python), str(BENCH / "peers" / "run_peer.py"), system, "embed",
                    "--models", str(models), "--list", str(listing),
                    "--out", str(out.with_suffix(".npz"))]

        commands[system] = (command, lambda out: int(np.load(out.with_suffix(".npz"))
                                                     ["found"].sum()))
    return commands


def wall_seconds(command: list[str], out: Path) -> float:
    """Seconds from starting ``command`` to its exit, its stdout to ``out``."""
    with out.open("w") as stdout:
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT, stdout=stdout)
        return time.perf_counter() - started


def time_stills(photos_folder: Path, peers: dict[str, Path], models: Path | None,
                scratch: Path, mode: str) -> dict:
    """Each system embeds the same N photos in one process, timed from outside, start-up
    (interpreter, imports, models) included, and the first of them alone in another; the
    difference over N - 1 is the time per photo once started. Interleaved rounds (every system
    once, again and again) after one untimed run each (files in the page cache); medians."""
    count, rounds = STILL_PHOTOS[mode], STILL_ROUNDS[mode]
    photos = still_photos(photos_folder, count)
    commands = still_commands(peers, models)
    folder = scratch / "stills"
    folder.mkdir(parents=True, exist_ok=True)
    for system, (command, _) in commands.items():
        warm_up = folder / f"{system}-warm-up.out"
        wall_seconds(command(photos[:1], warm_up), warm_up)
    runs: dict[str, dict[str, list[float]]] = {s: {"all": [], "one": []} for s in commands}
    found = {}
    for round_ in range(rounds):
        log(f"timing {count} still photos, one process per system, round {round_ + 1} of "
            f"{rounds} ...")
        for system, (command, count_found) in commands.items():
            for key, chosen in (("one", photos[:1]), ("all", photos)):
                out = folder / f"{system}-{key}.out"
                runs[system][key].append(wall_seconds(command(chosen, out), out))
            found[system] = count_found(folder / f"{system}-all.out")
    systems = {}
    for system, measured in runs.items():
        whole = statistics.median(measured["all"])
        after_start = statistics.median((a - o) / (count - 1)
                                        for a, o in zip(measured["all"], measured["one"],
                                                        strict=True))
        systems[system] = {
            "photos_with_a_face": found[system],
            "wall_s": [round(t, 3) for t in measured["all"]],
            "one_photo_wall_s": [round(t, 3) for t in measured["one"]],
            "ms_per_photo_with_startup": round(1e3 * whole / count, 2),
            "ms_per_photo_after_startup": round(1e3 * after_start, 2),
            "startup_s": round(statistics.median(measured["one"]) - after_start, 3)}
    return {"folder": str(photos_folder), "photos": count, "rounds": rounds,
            "choice": f"{count} of the folder's photos, evenly spaced through the sorted list",
            "files": [str(p) for p in photos],
            "commands": {"facegate": "facegate embed PHOTO ... (one JSON line a photo; "
                                     "thorough=True, every face embedded)",
                         **{s: f"bench/peers/run_peer.py {s} embed --list PHOTOS.txt "
                               "(the largest face of each photo)" for s in peers}},
            "systems": systems}


# --- accuracy -----------------------------------------------------------------------------

def quick_subset(source: Path, dest: Path, people: int, max_images: int, seed: int = 0) -> Path:
    """A fixed, seeded choice of people (each with at most ``max_images``), as symlinks."""
    candidates = sorted(p for p in source.iterdir() if p.is_dir()
                        and len(list(p.iterdir())) <= max_images)
    chosen = np.random.default_rng(seed).choice(len(candidates), people, replace=False)
    folder = dest / f"{source.name}-quick{people}"
    folder.mkdir(parents=True, exist_ok=True)
    for index in sorted(chosen):
        link = folder / candidates[index].name
        if not link.exists():
            link.symlink_to(candidates[index].resolve(), target_is_directory=True)
    return folder


def embed_ours(folder: Path, precision: str, cache: Path) -> evaluate.EmbeddedSet:
    """Our pipeline, exactly as ``make eval`` runs it (the default shares its cache)."""
    models = embedder_variants.models_dir(precision, cache)
    pipeline = FacePipeline.from_models_dir(models,
                                            embedder=embedder_variants.embedder_name(precision))
    tag = evaluate.embedding_cache_tag(pipeline)
    where = (ROOT / "var" / "eval-cache" if precision == embedder_variants.DEFAULT_PRECISION
             else cache)
    started = time.perf_counter()
    data = evaluate.embed_folder(pipeline, folder, where / f"{tag}-{folder.name}.npz")
    log(f"facegate {precision}: {folder.name} embedded ({time.perf_counter() - started:.0f} s)")
    return data


def peer_info(python: Path, system: str, models: Path, scratch: Path) -> dict:
    """The peer's settings and versions, as its runner reports them."""
    out = scratch / f"peer-{system}-info.json"
    subprocess.run([str(python), str(BENCH / "peers" / "run_peer.py"), system, "info",
                    "--models", str(models), "--out", str(out)], check=True, cwd=ROOT)
    return json.loads(out.read_text())


def embed_peer(python: Path, system: str, folder: Path, models: Path,
               cache: Path) -> tuple[evaluate.EmbeddedSet, dict]:
    """A peer's embeddings of every image of ``folder`` (cached), in our image order."""
    paths, labels, names = evaluate.list_people(folder)
    stamp = environment.stamp()[:8]
    npz = cache / f"peer-{system}-{stamp}-{folder.name}.npz"
    if npz.is_file():
        saved = np.load(npz)
        if (list(saved["paths"]) != paths
                or json.loads(str(saved["info"])) != peer_info(python, system, models, cache)):
            npz.unlink()  # the folder or the peer's settings changed since: embed again
    if not npz.is_file():
        listing = cache / f"peer-{system}-{folder.name}.txt"
        listing.write_text("\n".join(paths) + "\n")
        log(f"{system}: embedding {len(paths)} images of {folder.name} ...")
        started = time.perf_counter()
        subprocess.run([str(python), str(BENCH / "peers" / "run_peer.py"), system, "embed",
                        "--models", str(models), "--list", str(listing), "--out", str(npz)],
                       check=True, cwd=ROOT)
        log(f"{system}: done in {time.perf_counter() - started:.0f} s")
    saved = np.load(npz)
    info = json.loads(str(saved["info"]))
    seconds = saved["seconds"][np.isfinite(saved["seconds"])]
    info["seconds_per_image_median"] = round(float(np.median(seconds)), 4)
    data = evaluate.EmbeddedSet(paths, labels, names, saved["embeddings"], saved["found"],
                                metric=info["metric"])
    return data, info


def common_enrolment(sets: dict[str, evaluate.EmbeddedSet]) -> np.ndarray:
    """Each person's first image in which every system found a face: one gallery for all."""
    first = next(iter(sets.values()))
    found_by_all = np.logical_and.reduce([s.found for s in sets.values()])
    return evaluate.first_with_face(first.labels, found_by_all)


def score(data: evaluate.EmbeddedSet, strangers: evaluate.EmbeddedSet, enrolled: np.ndarray,
          threshold: float, margin: float) -> dict:
    """Verification, and open-set identification at margin 0 (the same rule for all) with
    FPIR/FNIR at the system's own default threshold."""
    return {"verification": evaluate.verification(data),
            "open_set": evaluate.open_set(data, strangers, 0.0, threshold, enrolled),
            "own_rule": {"threshold": threshold, "margin": margin,
                         **evaluate.open_set(data, strangers, margin, threshold,
                                             enrolled)["at_threshold"]}}


def roc_at_far(data: evaluate.EmbeddedSet, points: int = 40) -> dict[str, list[float]]:
    """TAR at false-accept rates from 1/impostor pairs to 1, log-spaced: a finer ROC at the
    low rates a door runs at than the JSON's quantile-spaced ``roc``."""
    scores, same, _ = evaluate.verification_scores(data.embeddings, data.found, data.labels,
                                                   metric=data.metric)
    fars = np.geomspace(1 / (~same).sum(), 1.0, points)
    return {"far": [float(f) for f in fars],
            "tar": [round(evaluate.tar_at_far(scores, same, f)[0], 4) for f in fars]}


def accuracy(folders: tuple[Path, Path], peers: dict, models: Path, cache: Path,
             precisions: list[str]) -> dict:
    """Every system (and every built SFace precision) scored on the same pairs and gallery."""
    data, strangers, infos = {}, {}, {}
    for precision in precisions:
        key = ("facegate" if precision == embedder_variants.DEFAULT_PRECISION
               else f"facegate {precision}")
        data[key], strangers[key] = (embed_ours(f, precision, cache) for f in folders)
    for system, python in peers.items():
        data[system], infos[system] = embed_peer(python, system, folders[0], models, cache)
        strangers[system], _ = embed_peer(python, system, folders[1], models, cache)
    enrolled = common_enrolment(data)
    card = FacePipeline.from_models_dir().embedder_card.threshold
    results = {}
    for key in data:
        if key.startswith("facegate"):
            threshold, margin = card["score"], card.get("margin", 0.0)
        else:
            threshold, margin = infos[key]["default_threshold"], 0.0
        results[key] = {"metric": data[key].metric,
                        **score(data[key], strangers[key], enrolled, threshold, margin),
                        "roc_at_far": roc_at_far(data[key])}
        if key in infos:
            results[key]["seconds_per_lfw_image"] = infos[key]["seconds_per_image_median"]
    return {"data": [str(f) for f in folders], "enrolled_people": int(len(enrolled)),
            "enrolment": "each person's first image in which every system found a face",
            "systems": results}


# --- SFace at each precision: speed -------------------------------------------------------

def time_precisions(cache: Path, frame: Path, mode: str) -> dict:
    """SFace at each built precision in the same pipeline: the embedding of one aligned crop
    and the whole one-face frame, in interleaved rounds like the frames; unbuilt ones say so."""
    rounds, repeats = FRAME_ROUNDS[mode], FRAME_REPEATS[mode]["facegate"]
    image = cv2.imread(str(frame))
    pipelines, samples = {}, {}
    for precision in embedder_variants.PRECISIONS:
        models = embedder_variants.models_dir(precision, cache)
        if models:
            pipelines[precision] = FacePipeline.from_models_dir(
                models, embedder=embedder_variants.embedder_name(precision))
            samples[precision] = {"embedding": [], "whole pipeline, one face": []}
    for _ in range(rounds):
        for precision, pipeline in pipelines.items():
            crop = pipeline.process(image)[0].aligned
            samples[precision]["embedding"] += sample_ms(lambda p=pipeline, c=crop:
                                                         p.embed_crop(c), repeats)
            samples[precision]["whole pipeline, one face"] += sample_ms(
                lambda p=pipeline: p.process(image), repeats)
    results = {}
    for precision, description in embedder_variants.PRECISIONS.items():
        if precision not in pipelines:
            results[precision] = {"description": description,
                                  "status": embedder_variants.NOT_BUILT}
            continue
        results[precision] = {
            "description": description,
            "file_bytes": pipelines[precision].embedder_card.path.stat().st_size,
            **{key: summarise(values) for key, values in samples[precision].items()}}
    return results


# --- the run ------------------------------------------------------------------------------

def find_peers(mode: str) -> tuple[Path | None, str | None]:
    """The peers' Python, or None and the reason they are skipped."""
    if mode == "skip":
        return None, "skipped (--peers skip)"
    try:
        return environment.peers_python(install=mode == "install"), None
    except environment.PeersUnavailable as reason:
        return None, f"skipped: {reason}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="30 people, 30 strangers, fewer repetitions (under 2 minutes)")
    parser.add_argument("--peers", choices=["auto", "install", "skip"], default=None,
                        help="install: make bench/.peers-venv if missing (default); auto: use "
                        "it if present (default with --quick); skip: ours only")
    train_python = ROOT / ".venv-train" / "bin" / "python"
    parser.add_argument("--tf-python", type=Path,
                        default=train_python if train_python.exists() else None,
                        help="a Python with TensorFlow (the train extra) to build SFace float32 "
                        "and int8 (default: .venv-train's, if there); built files are cached "
                        "and reused without it")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="folder with lfw-a, lfw-a-singles and wild (../shared/data)")
    parser.add_argument("--out", type=Path, default=BENCH / "results",
                        help="where the JSON, the table and the plots go (bench/results)")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "bench-cache",
                        help="embeddings, model files and built variants (var/bench-cache)")
    args = parser.parse_args(argv)
    # Everything runs from the checkout, and the report's paths are relative to it (as make
    # eval's are), so they name no folder of this machine.
    for name in ("data", "out", "cache"):
        setattr(args, name, Path(os.path.relpath(os.path.abspath(getattr(args, name)), ROOT)))
    if args.tf_python:
        args.tf_python = Path(os.path.abspath(args.tf_python))  # a venv's: not resolved
    os.chdir(ROOT)
    started = time.perf_counter()
    mode = "quick" if args.quick else "full"
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(["python bench/compare.py", *map(shlex.quote,
                                                                    argv or sys.argv[1:])]),
              "mode": mode, "machine": machine(), "load_average": {"start": load_average()}}

    peers_python, skipped = find_peers(args.peers or ("auto" if args.quick else "install"))
    if skipped:
        log(f"peers (face_recognition, OpenCV YuNet + SFace): {skipped}")
    models = environment.onnx_models(args.cache) if peers_python else None
    peers = {system: peers_python for system in PEERS} if peers_python else {}
    report["peers"] = {"python": os.path.relpath(peers_python, ROOT) if peers_python else None,
                       "skipped": skipped}

    # int8 is committed now (models/); float32 is still built here, and says whether to build.
    if args.tf_python and not embedder_variants.models_dir("float32", args.cache):
        log("building SFace float32 / int8 with TensorFlow ...")
        embedder_variants.build(args.tf_python, args.cache, environment.onnx_models(args.cache)
                                / environment.WHEEL_FILENAME, args.data / "wild")
    precisions = [p for p in embedder_variants.PRECISIONS
                  if embedder_variants.models_dir(p, args.cache)]

    # Speed first, while the machine is as quiet as it gets.
    report["load_average"]["before_timing"] = wait_until_quiet(10 if args.quick else 120)
    frames = write_frames(args.cache / "frames")
    report["frames"] = time_frames(frames, peers, models, args.cache, mode)
    report["frames"]["load_average_after"] = load_average()
    report["stills"] = time_stills(args.data / "lfw-a-singles", peers, models, args.cache, mode)
    report["stills"]["load_average_after"] = load_average()
    report["embedder_precisions"] = time_precisions(args.cache, frames["one face"], mode)

    suffix = "-quick" if args.quick else ""
    for name in ("pipeline", "search", "daemon"):
        report[name] = run_bench_script(f"bench_{name}.py", args.out / f"{name}{suffix}.json",
                                        args.quick)
    report["one_core"] = run_bench_script("bench_one_core.py",
                                          args.out / f"one-core{suffix}.json", args.quick)
    report["still_path"] = run_bench_script("bench_still_path.py",
                                            args.out / f"still-path{suffix}.json", args.quick)

    folders = (args.data / "lfw-a", args.data / "lfw-a-singles")
    if args.quick:
        folders = (quick_subset(folders[0], args.cache / "subsets", QUICK_PEOPLE,
                                QUICK_MAX_IMAGES),
                   quick_subset(folders[1], args.cache / "subsets", QUICK_STRANGERS, 1))
    report["accuracy"] = accuracy(folders, peers, models, args.cache, precisions)
    for precision in precisions:
        key = ("facegate" if precision == embedder_variants.DEFAULT_PRECISION
               else f"facegate {precision}")
        report["embedder_precisions"][precision]["accuracy"] = summary.accuracy_row(
            report["accuracy"]["systems"][key])

    report["load_average"]["end"] = load_average()
    report["seconds"] = round(time.perf_counter() - started)
    report["headline"] = summary.headline(report)
    (args.out / f"comparison{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = summary.markdown(report)
    (args.out / f"summary{suffix}.md").write_text(table)
    print(table)
    if peers_python:
        subprocess.run([str(peers_python), str(BENCH / "plots.py"),
                        str(args.out / f"comparison{suffix}.json"), "--out", str(args.out)],
                       check=True, cwd=ROOT)
    else:
        log("plots skipped: they are drawn with matplotlib from the peers' environment")
    log(f"wrote {args.out}/comparison{suffix}.json and summary{suffix}.md "
        f"in {report['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
