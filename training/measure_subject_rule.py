"""Measure which face of a photo to enrol: the old rule, the training rule and ours, on lfw-a.

    python -m training.measure_subject_rule --cache var/subject-cache \
        --json bench/results/enrolment-subject.json

The door's own pipeline (``FacePipeline.process(frame, thorough=True)``, as enrolment runs it)
sees every image once; every face it returns is cached (box, area, score, embedding), so the
rules are then scored in a second, without the networks. For each rule and setting:

- **refused**: the share of photos the rule refuses as ambiguous (``SeveralFaces``);
- **wrong person**: among the photos it accepts, the share where the chosen face is not the
  person of the folder while another face of the photo is. Judged by identity, not geometry:
  a face's *identity score* is the median, over the person's other photos, of its best cosine
  to any face of that photo (no rule picks those faces, so no rule is judged by its own
  choices); it "is the person" at the embedder card's 1:1 verification threshold (0.394 for
  SFace int8, where 0.1% of different-person pairs pass);
- **not centre**: the share of accepted photos where the chosen face is not the face nearest
  the image centre (the training rule's choice: LFW centres the labelled person).

The ``multi-face/`` and ``wild/`` folders of ``../shared/data`` are run as a sanity check:
the couple should be refused, and the wild photos (large, not centred) scored like lfw-a.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.enrolment.subject import (
    CENTRE_WEIGHT,
    SIMILAR_PROMINENCE,
    choose_subject,
    offset_from_centre,
)
from device.errors import FacegateError, SeveralFaces
from device.vision.image_io import read_image
from device.vision.models import default_models_dir
from device.vision.pipeline import FacePipeline
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp"}
# The rule enrolment used before choose_subject (device/enrolment/__init__.py, the_one_face):
# the largest face, refused when another face has at least this share of its area.
OLD_AREA_SHARE = 0.25
# Our rule's settings tried beside the default: (centre weight, similar prominence).
SETTINGS = ((0.0, 0.25), (0.5, 0.25), (1.0, 0.25), (1.0, 0.4), (1.0, 0.5), (1.5, 0.4),
            (1.5, 0.5), (2.0, 0.5))
# The shifted views' side, as a share of the photo's shorter side (see shifted_views).
SHIFT_FRACTIONS = (0.7, 0.85)


# --- every face of every image, once ----------------------------------------------------------

@dataclass(frozen=True)
class CachedFace:
    """What a rule may look at: the pipeline's box and area (and, for judging, the embedding)."""

    box: np.ndarray  # (4,) x1, y1, x2, y2 in frame pixels, clipped to the frame
    score: float
    embedding: np.ndarray

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


@dataclass(frozen=True)
class Photo:
    path: str  # the image, or for a shifted view "IMAGE@x,y,size" (the square cut out)
    person: str  # the folder's name ("" for a folder of loose photos)
    shape: tuple[int, int]  # height, width
    faces: list[CachedFace]  # largest first, as the pipeline returns them


def list_images(folder: Path) -> list[tuple[str, Path]]:
    """(person, path) for ``folder/PERSON/*`` images and for loose images in ``folder``."""
    found = [("", p) for p in sorted(folder.iterdir())
             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    for person in sorted(p for p in folder.iterdir() if p.is_dir()):
        found += [(person.name, p) for p in sorted(person.iterdir())
                  if p.suffix.lower() in IMAGE_SUFFIXES]
    return found


def detect_folder(folder: Path, pipeline: FacePipeline, cache: Path | None = None,
                  progress: bool = True) -> list[Photo]:
    """Every face of every image under ``folder`` (cached in ``cache``, an .npz, if given)."""
    if cache is not None and cache.is_file():
        return _load(cache)
    photos = []
    images = list_images(folder)
    for number, (person, path) in enumerate(images, 1):
        try:
            frame, _ = read_image(path)
        except FacegateError:
            continue
        faces = [CachedFace(face.box.astype(np.float32), float(face.score), face.embedding)
                 for face in pipeline.process(frame, thorough=True)]
        photos.append(Photo(str(path), person, frame.shape[:2], faces))
        if progress and number % 250 == 0:
            print(f"{folder.name}: {number}/{len(images)} images", file=sys.stderr)
    if cache is not None:
        _save(cache, photos)
    return photos


def _save(cache: Path, photos: list[Photo]) -> None:
    faces = [(row, face) for row, photo in enumerate(photos) for face in photo.faces]
    dim = faces[0][1].embedding.shape[0] if faces else 0
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=np.array([p.path for p in photos]),
             people=np.array([p.person for p in photos]),
             shapes=np.array([p.shape for p in photos], np.int32).reshape(-1, 2),
             face_photo=np.array([row for row, _ in faces], np.int32),
             boxes=np.array([f.box for _, f in faces], np.float32).reshape(-1, 4),
             scores=np.array([f.score for _, f in faces], np.float32),
             embeddings=np.array([f.embedding for _, f in faces], np.float32).reshape(-1, dim))


def _load(cache: Path) -> list[Photo]:
    data = np.load(cache, allow_pickle=False)
    photos = [Photo(str(path), str(person), (int(shape[0]), int(shape[1])), [])
              for path, person, shape in zip(data["paths"], data["people"], data["shapes"],
                                             strict=True)]
    for row, box, score, embedding in zip(data["face_photo"], data["boxes"], data["scores"],
                                          data["embeddings"], strict=True):
        photos[row].faces.append(CachedFace(box, float(score), embedding))
    return photos


def shifted_views(photos: list[Photo], pipeline: FacePipeline, fractions=SHIFT_FRACTIONS,
                  cache: Path | None = None) -> list[Photo]:
    """Each photo with two or more faces, cut to a square of ``fractions`` of its shorter side
    at each of its four corners, and run through the pipeline again.

    LFW centres the labelled person, so on lfw-a a rule may lean on centrality and never be
    caught. Cut to a corner, the subject lies between a third and a half of the way to the
    corner of the view, and faces at the edge move inward: enrolment photos are not always
    centred, and a rule must still choose the person of the folder.
    """
    if cache is not None and cache.is_file():
        return _load(cache)
    views = []
    for photo in photos:
        if len(photo.faces) < 2:
            continue
        frame, _ = read_image(photo.path)
        height, width = frame.shape[:2]
        for fraction in fractions:
            size = int(round(min(height, width) * fraction))
            for x, y in ((0, 0), (width - size, 0), (0, height - size),
                         (width - size, height - size)):
                view = np.ascontiguousarray(frame[y:y + size, x:x + size])
                faces = [CachedFace(f.box.astype(np.float32), float(f.score), f.embedding)
                         for f in pipeline.process(view, thorough=True)]
                views.append(Photo(f"{photo.path}@{x},{y},{size}", photo.person, (size, size),
                                   faces))
    if cache is not None:
        _save(cache, views)
    return views
