"""The prepared crops as training batches: split by person, augmented, decoded in parallel.

Batches come from a ``keras.utils.PyDataset``, which every Keras backend can consume: worker
threads decode JPEG crops and augment them with OpenCV (which releases the GIL) while the
accelerator runs the previous batch, and ``max_queue_size`` batches wait ready (prefetch).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import keras
import numpy as np

from device.errors import FacegateError

CROP_SIZE = 112


@dataclass(frozen=True)
class CropSet:
    """Aligned crops of a prepared folder: file paths, person index of each, person names."""

    root: Path
    paths: list[Path]
    labels: np.ndarray  # (n,) int32, index into ``names``
    names: list[str]

    @classmethod
    def load(cls, prepared: Path, people: set[str] | None = None) -> CropSet:
        """Every crop of ``prepared/manifest.csv`` (of ``people`` only, when given)."""
        prepared = Path(prepared)
        manifest = prepared / "manifest.csv"
        if not manifest.is_file():
            raise FacegateError(f"{manifest} not found: run `python -m training prepare` first")
        with manifest.open(newline="") as file:
            rows = [r for r in csv.DictReader(file) if people is None or r["person"] in people]
        rows.sort(key=lambda r: (r["person"], r["crop"]))
        names = sorted({r["person"] for r in rows})
        index = {name: i for i, name in enumerate(names)}
        return cls(prepared, [prepared / r["crop"] for r in rows],
                   np.array([index[r["person"]] for r in rows], np.int32), names)

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, row: int) -> np.ndarray:
        """The crop as RGB uint8 (the networks' colour order)."""
        crop = cv2.imread(str(self.paths[row]), cv2.IMREAD_COLOR)
        if crop is None:
            raise FacegateError(f"{self.paths[row]}: unreadable crop; run prepare again")
        return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)

    def images(self, rows: np.ndarray | list[int] | None = None) -> np.ndarray:
        rows = range(len(self)) if rows is None else rows
        return np.stack([self.image(r) for r in rows]).astype(np.float32)


def split_people(prepared: Path, holdout_share: float, seed: int = 0,
                 min_images: int = 2) -> tuple[list[str], list[str]]:
    """People for training and people held apart for evaluation (never trained on).

    Only people with ``min_images`` crops or more are dealt (one face of a person teaches a
    classifier nothing about that person's variation); the deal is seeded.
    """
    counts: dict[str, int] = {}
    with (Path(prepared) / "manifest.csv").open(newline="") as file:
        for row in csv.DictReader(file):
            counts[row["person"]] = counts.get(row["person"], 0) + 1
    people = sorted(p for p, n in counts.items() if n >= min_images)
    order = np.random.default_rng(seed).permutation(len(people))
    held = int(round(holdout_share * len(people)))
    held_out = sorted(people[i] for i in order[:held])
    return sorted(people[i] for i in order[held:]), held_out


def split_validation(train: list[str], share: float, seed: int = 0
                     ) -> tuple[list[str], list[str]]:
    """Some of the training people set aside to choose when to stop (early stopping).

    They are neither trained on nor part of the held-out people the model is finally judged
    on: a stopping point picked on the judging people would flatter the model.
    """
    order = np.random.default_rng([seed, 1]).permutation(len(train))
    count = int(round(share * len(train)))
    return (sorted(train[i] for i in order[count:]), sorted(train[i] for i in order[:count]))


def save_split(path: Path, train: list[str], held_out: list[str],
               validation: list[str] | None = None) -> None:
    split = {"train": train, "held_out": held_out}
    if validation:
        split["validation"] = validation
    path.write_text(json.dumps(split, indent=1))


def load_split(path: Path) -> tuple[list[str], list[str]]:
    split = json.loads(Path(path).read_text())
    return split["train"], split["held_out"]


# --- augmentation ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Augmentation:
    """The method's augmentations (rotation, crop, hue, saturation) plus a mirror flip."""

    max_rotation_deg: float = 10.0
    min_crop_share: float = 0.88  # side of the random crop, as a share of the 112 px crop
    max_hue_shift_deg: float = 10.0
    saturation_range: tuple[float, float] = (0.7, 1.3)
    flip: bool = True

    def apply(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        size = rgb.shape[0]
        # Rotation about the centre and a random crop, resized back to the network's input,
        # in one warp (one interpolation, not two).
        angle = rng.uniform(-self.max_rotation_deg, self.max_rotation_deg)
        share = rng.uniform(self.min_crop_share, 1.0)
        slack = (1.0 - share) * size
        shift = rng.uniform(-slack / 2, slack / 2, size=2)
        matrix = cv2.getRotationMatrix2D((size / 2 + shift[0], size / 2 + shift[1]), angle,
                                         1.0 / share)
        matrix[:, 2] += size / 2 - (size / 2 + shift)
        out = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)
        # Hue and saturation in HSV (OpenCV's 8-bit hue runs 0..179, i.e. degrees / 2).
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-1, 1) * self.max_hue_shift_deg / 2) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*self.saturation_range), 0, 255)
        out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
        if self.flip and rng.random() < 0.5:
            out = out[:, ::-1]
        return out


# --- batches --------------------------------------------------------------------------------

class FaceBatches(keras.utils.PyDataset):
    """Augmented batches ``(images float32 0..255 RGB, person labels int32)`` for one epoch.

    ``people_per_batch`` = 0 shuffles all crops (the COCO loss: every batch sees many people).
    Otherwise each batch is P people x K images (``batch_size / people_per_batch`` each),
    which the triplet loss needs to find positives. Randomness is seeded by (seed, epoch,
    batch), so a resumed run sees the batches it would have seen.
    """

    def __init__(self, crops: CropSet, *, batch_size: int = 100, people_per_batch: int = 0,
                 augmentation: Augmentation | None = Augmentation(), seed: int = 0,
                 steps_per_epoch: int | None = None, workers: int = 2,
                 max_queue_size: int = 8) -> None:
        super().__init__(workers=workers, use_multiprocessing=False,
                         max_queue_size=max_queue_size)
        if len(crops) < batch_size:
            raise FacegateError(f"{len(crops)} crops is fewer than one batch of {batch_size}")
        self.crops, self.batch_size = crops, batch_size
        self.people_per_batch = people_per_batch
        self.augmentation, self.seed = augmentation, seed
        self.steps = steps_per_epoch or len(crops) // batch_size
        self.epoch = 0
        self._by_person = [np.flatnonzero(crops.labels == p) for p in range(len(crops.names))]
        self._order = self._shuffle()

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        """Called as each epoch begins (also after a resume, with the restored epoch)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._order = self._shuffle()

    def _shuffle(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        repeats = math.ceil(self.steps * self.batch_size / len(self.crops))
        return np.concatenate([rng.permutation(len(self.crops)) for _ in range(repeats)])

    def rows(self, index: int) -> np.ndarray:
        if not self.people_per_batch:
            return self._order[index * self.batch_size:(index + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        per_person = self.batch_size // self.people_per_batch
        people = rng.choice(len(self._by_person), self.people_per_batch, replace=False)
        return np.concatenate([
            rng.choice(self._by_person[p], per_person, len(self._by_person[p]) < per_person)
            for p in people])

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.rows(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        images = np.empty((len(rows), CROP_SIZE, CROP_SIZE, 3), np.float32)
        for slot, row in enumerate(rows):
            image = self.crops.image(row)
            images[slot] = self.augmentation.apply(image, rng) if self.augmentation else image
        return images, self.crops.labels[rows]
