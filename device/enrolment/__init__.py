"""Enrolment: a photo of one person -> a template in the gallery, or a clear refusal.

Shared by the CLI and (later) the web page, so both refuse the same photos for the same
reasons: no face, several faces, poor quality, an image already enrolled.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.errors import DuplicateTemplate, NoFaceFound, PoorQuality, SeveralFaces
from device.gallery.store import Gallery, Person, Template
from device.vision.pipeline import Face, FacePipeline
from device.vision.quality import QualityGate

# A second face smaller than this share of the largest one is a passer-by in the background,
# not a second subject: the photo is still usable.
BACKGROUND_FACE_AREA_SHARE = 0.25
CROP_JPEG_QUALITY = 95


@dataclass(frozen=True)
class Enrolled:
    person: Person
    template: Template
    face: Face


def the_one_face(pipeline: FacePipeline, frame: np.ndarray, label: str,
                 gate: QualityGate) -> Face:
    """The single face of an enrolment photo.

    Raises ``NoFaceFound``, ``SeveralFaces`` or ``PoorQuality`` (with every reason) otherwise.
    """
    faces = pipeline.process(frame, thorough=True)
    if not faces:
        raise NoFaceFound(f"{label}: no face found")
    rivals = [f for f in faces[1:] if f.area >= BACKGROUND_FACE_AREA_SHARE * faces[0].area]
    if rivals:
        raise SeveralFaces(f"{label}: {len(rivals) + 1} faces found; use a photo of one person")
    problems = gate.problems(faces[0].quality)
    if problems:
        raise PoorQuality(f"{label}: " + "; ".join(problems))
    return faces[0]


def enrol_photo(pipeline: FacePipeline, gallery: Gallery, person_name: str,
                frame: np.ndarray, source_sha256: str, *, label: str = "image",
                gate: QualityGate | None = None, store_crop: bool = True) -> Enrolled:
    """Add one template for ``person_name`` (created if new) from a photo.

    Raises ``DuplicateTemplate`` when the same image bytes are already enrolled, so running
    the same enrolment twice adds nothing.
    """
    existing = gallery.has_source(pipeline.model_name, source_sha256)
    if existing is not None:
        raise DuplicateTemplate(f"{label}: this image is already enrolled for {existing.name}")
    face = the_one_face(pipeline, frame, label, gate or QualityGate())
    person = gallery.find_person(person_name) or gallery.add_person(person_name)
    crop_jpeg = None
    if store_crop:
        ok, encoded = cv2.imencode(".jpg", face.aligned, [cv2.IMWRITE_JPEG_QUALITY,
                                                          CROP_JPEG_QUALITY])
        crop_jpeg = encoded.tobytes() if ok else None
    template = gallery.add_template(person.id, face.embedding, pipeline.model_name,
                                    face.quality.as_dict(), crop_jpeg, source_sha256)
    return Enrolled(person, template, face)
