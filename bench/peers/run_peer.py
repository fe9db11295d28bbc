"""Run one peer system on images, for ``bench/compare.py``; scoring happens in our code.

    PEERS_PYTHON bench/peers/run_peer.py SYSTEM embed --list PATHS.txt --out OUT.npz
    PEERS_PYTHON bench/peers/run_peer.py SYSTEM time --frames A.png B.png --repeats 200 \\
        --out OUT.json

SYSTEM is ``face_recognition`` or ``yunet_sface``; ``--models DIR`` holds the ONNX files the
second needs. ``embed`` embeds the largest face of every image listed (one path a line) and
writes embeddings, a found mask, the number of faces and the seconds each image took;
``time`` runs detection and embedding of every face on each frame ``--repeats`` times (after
one warm-up) and writes every run's milliseconds. It runs with the
peers' virtual environment's Python, which has neither our code nor our dependencies.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def load_system(name: str, models_dir: str | None):
    if name == "face_recognition":
        from face_recognition_dlib import FaceRecognitionDlib
        return FaceRecognitionDlib(models_dir)
    if name == "yunet_sface":
        from yunet_sface import YuNetSFace
        return YuNetSFace(models_dir)
    raise SystemExit(f"unknown system {name!r}: face_recognition or yunet_sface")


def embed_images(system, paths: list[str], progress_every: int = 500) -> dict[str, np.ndarray]:
    """The largest face of each image; rows where none is found stay zero and unflagged."""
    embeddings = np.zeros((len(paths), 128), np.float32)
    found = np.zeros(len(paths), bool)
    faces = np.zeros(len(paths), np.int32)
    seconds = np.full(len(paths), np.nan)
    for row, path in enumerate(paths):
        try:
            image = system.load(path)
        except (OSError, ValueError):
            continue
        started = time.perf_counter()
        boxes = system.detect(image)
        if len(boxes):
            embeddings[row] = system.embed(image, boxes[:1])[0]
            found[row] = True
        seconds[row] = time.perf_counter() - started
        faces[row] = len(boxes)
        if progress_every and (row + 1) % progress_every == 0:
            print(f"{system.name}: {row + 1} of {len(paths)} images", file=sys.stderr)
    return {"embeddings": embeddings, "found": found, "faces": faces, "seconds": seconds}


def time_frames(system, frames: list[str], repeats: int) -> dict[str, dict]:
    """Per frame: milliseconds of detection, of embedding every face found, and of the two
    together, one sample per run (the caller merges rounds and takes the median)."""
    results = {}
    for path in frames:
        image = system.load(path)
        boxes = system.detect(image)
        system.embed(image, boxes)  # warm-up: first runs allocate and pick kernels
        detect, embed, whole = [], [], []
        for _ in range(repeats):
            started = time.perf_counter()
            boxes = system.detect(image)
            detected = time.perf_counter()
            system.embed(image, boxes)
            done = time.perf_counter()
            detect.append((detected - started) * 1e3)
            embed.append((done - detected) * 1e3)
            whole.append((done - started) * 1e3)
        results[Path(path).name] = {
            "faces": len(boxes),
            "samples_ms": {"detection": detect, "embedding (all faces)": embed, "whole": whole}}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("system", choices=["face_recognition", "yunet_sface"])
    parser.add_argument("mode", choices=["embed", "time", "info"])
    parser.add_argument("--models", help="folder with the ONNX files (yunet_sface)")
    parser.add_argument("--list", type=Path, help="embed: a file of image paths, one a line")
    parser.add_argument("--frames", nargs="+", default=[], help="time: frame image files")
    parser.add_argument("--repeats", type=int, default=200, help="time: runs per frame")
    parser.add_argument("--out", type=Path, help="the .npz (embed) or .json (time, info)")
    args = parser.parse_args(argv)
    system = load_system(args.system, args.models)
    info = {"system": system.name, "metric": system.metric,
            "default_threshold": system.default_threshold, "python": platform.python_version(),
            "numpy": np.__version__, **system.settings()}
    if args.mode == "info":
        args.out.write_text(json.dumps(info, indent=2))
    elif args.mode == "embed":
        paths = args.list.read_text().splitlines()
        result = embed_images(system, paths)
        np.savez(args.out, paths=np.array(paths), info=json.dumps(info), **result)
    else:
        report = {"info": info, "frames": time_frames(system, args.frames, args.repeats)}
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
