"""pad-dev for liveness: the photos, their face boxes, and a split by capture session.

``../shared/data/pad-dev`` holds bona fide faces (``bona/real_*``) and printed-photo attacks
(``attack/print_*``). Consecutive file names are mostly one capture session (the same person,
paper and light), so a random split would put near-copies on both sides and flatter every
figure. :func:`split` sorts each class by name (numbers compared as numbers), cuts it into
contiguous blocks and deals whole blocks out: a held-apart test part, never seen by training
or by the threshold choice, and cross-validation folds for the rest.

Face boxes come from the door's own detector (BlazeFace), the largest face of each photo, so
the network learns from the crops the door will cut. Photos where it finds no face are
listed and left out (6 of 2,080).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.vision.detector import FaceDetector
from device.vision.image_io import read_image
from device.vision.models import DETECTOR, load_card

PAD_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pad-dev"
BONA, ATTACK = 0, 1  # labels: what the metrics call bona fide and attack presentations
KINDS = {"bona": BONA, "attack": ATTACK}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # BONA or ATTACK
    box: tuple[float, float, float, float]  # the largest BlazeFace box, x1 y1 x2 y2

    @property
    def attack_type(self) -> str:
        """``bona`` or the print kind the file name says (ISO 30107-3 counts APCER per type)."""
        if self.label == BONA:
            return "bona"
        stem = self.path.stem.lower()
        for marker, kind in (("glossy", "print_glossy"), ("a4", "print_a4"),
                             ("paper_mix", "print_paper_mix"), ("rgb", "print_rgb")):
            if marker in stem:
                return kind
        return "print"


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_photos(root: Path = PAD_DEV) -> list[tuple[Path, int]]:
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found: pad-dev lives in ../shared/data")
    return [(path, label) for folder, label in KINDS.items()
            for path in sorted((root / folder).glob("*.jpg"), key=lambda p: natural_key(p.name))]


def locate(photos: list[tuple[Path, int]], cache: Path | None = None) -> tuple[
        list[Sample], list[str]]:
    """The largest face of each photo; photos without one come back as names, apart.

    With ``cache`` the boxes are kept in a JSON file and only new photos are looked at.
    """
    known: dict[str, list[float] | None] = {}
    if cache is not None and cache.is_file():
        known = json.loads(cache.read_text())
    detector = None
    samples, missing = [], []
    for path, label in photos:
        key = f"{path.parent.name}/{path.name}"
        if key not in known:
            detector = detector or FaceDetector(load_card(DETECTOR).path)
            faces = detector.detect(read_image(path)[0])
            known[key] = (None if not faces else
                          [float(v) for v in max(faces, key=lambda f: f.area).box])
        if known[key] is None:
            missing.append(key)
        else:
            samples.append(Sample(path, label, tuple(known[key])))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known, indent=0, sort_keys=True))
    return samples, missing


def session_blocks(samples: list[Sample], blocks_per_class: int = 40) -> list[int]:
    """Each sample's block: a run of consecutive names within its class, numbered over both
    classes (bona fide first). A block stands for a capture session when counting noise."""
    block_of = [0] * len(samples)
    for offset, label in ((0, BONA), (blocks_per_class, ATTACK)):
        members = sorted((i for i, s in enumerate(samples) if s.label == label),
                         key=lambda i: natural_key(samples[i].path.name))
        for number, block in enumerate(np.array_split(np.array(members), blocks_per_class)):
            for i in block:
                block_of[int(i)] = offset + number
    return block_of


def split(samples: list[Sample], *, folds: int = 5, test_share: float = 0.25,
          blocks_per_class: int = 40, seed: int = 0) -> tuple[list[int], list[int]]:
    """(fold of each sample, test indices): -1 marks the held-apart test part.

    Each class is cut into ``blocks_per_class`` runs of consecutive names
    (:func:`session_blocks`); a seeded shuffle of each class's blocks deals ``test_share`` of
    them to the test part and the rest round-robin to the folds. The split depends only on
    the file names and the seed.
    """
    rng = np.random.default_rng(seed)
    block_of = np.array(session_blocks(samples, blocks_per_class))
    fold_of = [0] * len(samples)
    for offset in (0, blocks_per_class):
        order = rng.permutation(blocks_per_class)
        n_test = int(round(test_share * blocks_per_class))
        for rank, block in enumerate(order):
            fold = -1 if rank < n_test else (rank - n_test) % folds
            for i in np.flatnonzero(block_of == offset + block):
                fold_of[int(i)] = fold
    return fold_of, [i for i, f in enumerate(fold_of) if f == -1]
