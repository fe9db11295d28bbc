"""``/api/people/<id>/photos``: enrol photos of a person, every one checked before any is
saved."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from flask import current_app, jsonify, request
from flask.typing import ResponseReturnValue

from device.enrolment import CROP_JPEG_QUALITY, the_one_face
from device.errors import (
    DuplicateTemplate,
    FacegateError,
    ImageUnreadable,
    NoFaceFound,
    PersonNotFound,
    PoorQuality,
    RequestInvalid,
    SeveralFaces,
)
from device.gallery.store import Person
from device.vision.image_io import decode_image
from device.vision.pipeline import Face
from device.vision.quality import QualityGate
from device.web.api._common import _error, _flag_arg, admin_only, bp, query_args
from device.web.api.people import _find_person, _person_json, _template_count
from device.web.audit import audit
from device.web.db import gallery, services
from device.web.enrol import match_threshold

_RAW_IMAGE_TYPES = ("image/", "application/octet-stream")

_REFUSAL_CODES: dict[type[FacegateError], str] = {
    ImageUnreadable: "unreadable",
    NoFaceFound: "no_face",
    SeveralFaces: "several_faces",
    PoorQuality: "poor_quality",
    DuplicateTemplate: "already_enrolled",
}


@dataclass
class _Photo:
    """One uploaded photo on its way through the checks."""

    index: int
    filename: str | None  # the client's, echoed back; never used on disk
    data: bytes
    digest: str = ""
    face: Face | None = None
    status: str = "enrolled"  # enrolled | refused | needs_confirmation | not_saved
    code: str | None = None
    reason: str | None = None
    matches: dict[str, Any] | None = None
    template_id: str | None = None

    @property
    def label(self) -> str:
        return f"photo {self.index}"

    def refuse(self, code: str, reason: str) -> None:
        self.status, self.code, self.reason = "refused", code, reason.removeprefix(
            f"{self.label}: ")

    def as_json(self) -> dict[str, Any]:
        data = {"index": self.index, "filename": self.filename, "status": self.status}
        for key in ("code", "reason", "matches", "template_id"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.face is not None and self.status != "refused":
            data["quality"] = self.face.quality.as_dict()
        return data


@bp.post("/people/<person_id>/photos")
@admin_only
def person_photos(person_id: str) -> ResponseReturnValue:
    """Enrol photos of a person: all are checked first; a face that matches someone else
    stops the whole upload with 409 (nothing saved) unless ``confirm_duplicate=1``."""
    confirm = _flag_arg(query_args(("confirm_duplicate",)), "confirm_duplicate")
    person = _find_person(person_id)
    photos = _uploaded_photos()
    model = _examine(photos, person, confirm)
    waiting = [photo for photo in photos if photo.status == "needs_confirmation"]
    if waiting:
        for photo in photos:
            if photo.status == "enrolled":
                photo.status = "not_saved"
        names = sorted({photo.matches["name"] for photo in waiting})
        return _error(409, f"{len(waiting)} photo(s) match {', '.join(names)}, not "
                           f"{person.name}: check it is the right person, then send them "
                           "again with ?confirm_duplicate=1",
                      photos=[photo.as_json() for photo in photos])
    _save(photos, person, model)
    enrolled = [photo for photo in photos if photo.status == "enrolled"]
    _audit_enrolment(person, photos, confirm)
    results = [photo.as_json() for photo in photos]
    if not enrolled:
        message = photos[0].reason if len(photos) == 1 else (
            f"none of the {len(photos)} photos was enrolled; each one's reason is in photos")
        return _error(422, message, photos=results)
    return jsonify(person=_person_json(person, _template_count(person.id)),
                   photos=results), 201


def _uploaded_photos() -> list[_Photo]:
    """The photos of a multipart upload (field ``photos``) or of a raw image body."""
    limit = current_app.config["MAX_PHOTOS_PER_UPLOAD"]
    content_type = request.mimetype or ""
    if content_type.startswith(_RAW_IMAGE_TYPES):
        data = request.get_data(cache=False)
        if not data:
            raise RequestInvalid("photos", "the body is empty; send the image's bytes")
        return [_Photo(1, None, data)]
    if content_type != "multipart/form-data":
        raise RequestInvalid("photos", "send the photos as multipart/form-data (field "
                                       "'photos') or one image as the body (Content-Type "
                                       "image/jpeg or image/png)")
    for name in [*request.form, *request.files]:
        if name != "photos":
            raise RequestInvalid(name, f"unknown field {name!r}; send the images as 'photos'")
    files = request.files.getlist("photos")
    if not files:
        raise RequestInvalid("photos", "no photo was sent (multipart field 'photos')")
    if len(files) > limit:
        raise RequestInvalid("photos", f"at most {limit} photos in one request")
    return [_Photo(number, _client_name(file.filename), file.read())
            for number, file in enumerate(files, 1)]


def _refusal_code(error: FacegateError) -> str:
    return next(code for kind, code in _REFUSAL_CODES.items() if isinstance(error, kind))


def _examine(photos: list[_Photo], person: Person, confirm: bool) -> str:
    """Decode, find the one face, check quality and duplicates; nothing is written.
    Returns the model's name (the templates are for it)."""
    svc, store = services(), gallery()
    with svc.pipeline_lock:  # loaded on first use, once
        pipeline = svc.pipeline()
    seen: dict[str, int] = {}
    for photo in photos:
        photo.digest = hashlib.sha256(photo.data).hexdigest()
        if photo.digest in seen:
            photo.refuse("repeated", f"the same image as photo {seen[photo.digest]} of this "
                                     "upload")
            continue
        seen[photo.digest] = photo.index
        try:
            owner = store.has_source(pipeline.model_name, photo.digest)
            if owner is not None:
                raise DuplicateTemplate(f"this image is already enrolled for {owner.name}")
            frame = decode_image(photo.data, photo.label)
            _check_pixels(frame.shape, photo.label)
            with svc.pipeline_lock:
                photo.face = the_one_face(pipeline, frame, photo.label, QualityGate())
        except tuple(_REFUSAL_CODES) as error:
            photo.refuse(_refusal_code(error), str(error))
        finally:
            photo.data = b""  # not needed any more: free the upload early
    faces = [photo for photo in photos if photo.status == "enrolled"]
    threshold = match_threshold(pipeline.embedder_card.threshold)
    closest = _closest_others(pipeline.model_name, [p.face.embedding for p in faces], person.id)
    for photo, (other, score) in zip(faces, closest, strict=True):
        if other is None or score < threshold:
            continue
        photo.matches = {"person_id": other.id, "name": other.name, "score": round(score, 4)}
        if not confirm:
            photo.status = "needs_confirmation"
            photo.reason = (f"this face matches {other.name} (cosine {score:.2f}, threshold "
                            f"{threshold:.2f})")
    return pipeline.model_name


def _closest_others(model: str, embeddings: list[np.ndarray], person_id: str
                    ) -> list[tuple[Person | None, float]]:
    """For each embedding, the enrolled person other than ``person_id`` with the closest
    template, and the cosine; ``(None, -1.0)`` with nobody else enrolled. The gallery's
    templates are read once for the whole upload, not once a photo."""
    person_ids, _, matrix = gallery().embeddings(model)
    others = np.array([pid != person_id for pid in person_ids], dtype=bool)
    if not embeddings or not others.any():
        return [(None, -1.0)] * len(embeddings)
    rows = matrix[others]
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    scores = np.stack(embeddings).astype(np.float32) @ rows.T  # (photos, templates)
    owners = [pid for pid, other in zip(person_ids, others, strict=True) if other]
    results: list[tuple[Person | None, float]] = []
    for row in scores:
        best = int(np.argmax(row))
        try:
            results.append((gallery().get_person(owners[best]), float(row[best])))
        except PersonNotFound:  # removed in between
            results.append((None, -1.0))
    return results


def _save(photos: list[_Photo], person: Person, model: str) -> None:
    store = gallery()
    config = services().config
    keep_crops = config.recognition.store_crops if config is not None else True
    for photo in photos:
        if photo.status != "enrolled":
            continue
        face = photo.face
        crop = _jpeg(face.aligned) if keep_crops else None
        try:
            template = store.add_template(person.id, face.embedding, model,
                                          face.quality.as_dict(), crop, photo.digest)
        except (DuplicateTemplate, PersonNotFound) as error:  # another admin, meanwhile
            photo.refuse("already_enrolled" if isinstance(error, DuplicateTemplate)
                         else "person_gone", str(error))
            continue
        photo.template_id = template.id


def _audit_enrolment(person: Person, photos: list[_Photo], confirmed: bool) -> None:
    counts = {status: sum(photo.status == status for photo in photos)
              for status in ("enrolled", "refused")}
    audit("enrol", {"person_id": person.id, "name": person.name, "source": "api",
                    "accepted": counts["enrolled"], "refused": counts["refused"],
                    "refusals": [photo.reason for photo in photos
                                 if photo.status == "refused"][:20]})
    for photo in photos:
        if confirmed and photo.matches and photo.status == "enrolled":
            audit("enrol_duplicate_confirmed", {
                "person_id": person.id, "name": person.name,
                "also_matches": photo.matches["name"], "template_id": photo.template_id})


def _check_pixels(shape: tuple[int, ...], label: str) -> None:
    limit = current_app.config["MAX_UPLOAD_PIXELS"]
    height, width = shape[:2]
    if height * width > limit:
        raise ImageUnreadable(f"{label}: image too large ({width}x{height}, limit "
                              f"{limit / 1e6:g} megapixels)")


def _jpeg(crop: Any) -> bytes | None:
    ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, CROP_JPEG_QUALITY])
    return encoded.tobytes() if ok else None


def _client_name(filename: str | None) -> str | None:
    if not filename:
        return None
    name = "".join(ch for ch in filename.replace("\\", "/").split("/")[-1] if ch.isprintable())
    return name[:100] or None
