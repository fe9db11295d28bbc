"""``/api/people/<id>/photos``: enrol photos of a person, every one checked before any is
saved, by the same enrolment service as the CLI and the page (:mod:`device.enrolment`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from flask import current_app, jsonify, request
from flask.typing import ResponseReturnValue

from device.enrolment import Actor, EnrolmentService, Examined
from device.errors import (
    DuplicateTemplate,
    FacegateError,
    IdentityConflict,
    ImageUnreadable,
    ModelMismatch,
    NoFaceFound,
    PersonNotFound,
    PoorQuality,
    RequestInvalid,
    SeveralFaces,
)
from device.gallery.store import Person
from device.vision.image_io import decode_image
from device.web.api._common import _error, _flag_arg, admin_only, bp, query_args
from device.web.api.people import _find_person, _person_json, _template_count
from device.web.db import enrolment

_RAW_IMAGE_TYPES = ("image/", "application/octet-stream")

_REFUSAL_CODES: dict[type[FacegateError], str] = {
    ImageUnreadable: "unreadable",
    NoFaceFound: "no_face",
    SeveralFaces: "several_faces",
    PoorQuality: "poor_quality",
    DuplicateTemplate: "already_enrolled",
    ModelMismatch: "model_mismatch",
}


@dataclass
class _Photo:
    """One uploaded photo on its way through the checks."""

    index: int
    filename: str | None  # the client's, echoed back; never used on disk
    data: bytes
    digest: str = ""
    examined: Examined | None = None
    status: str = "enrolled"  # enrolled | refused | needs_confirmation | not_saved
    code: str | None = None
    reason: str | None = None
    matches: dict[str, Any] | None = None
    faces: list[dict[str, Any]] | None = None
    template_id: str | None = None

    @property
    def label(self) -> str:
        return f"photo {self.index}"

    def refuse(self, code: str, reason: str) -> None:
        self.status, self.code, self.reason = "refused", code, reason.removeprefix(
            f"{self.label}: ")

    def as_json(self) -> dict[str, Any]:
        data = {"index": self.index, "filename": self.filename, "status": self.status}
        for key in ("code", "reason", "matches", "faces", "template_id"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.examined is not None and self.status != "refused":
            data["quality"] = self.examined.face.quality.as_dict()
        return data


@bp.post("/people/<person_id>/photos")
@admin_only
def person_photos(person_id: str) -> ResponseReturnValue:
    """Enrol photos of a person: all are checked first. A face that looks like someone else
    (or not like the person's enrolled photos) stops the whole upload with 409, nothing
    saved, unless ``force=1`` with a ``reason`` (audited); ``face=N`` picks face N (the
    ``index`` the refusal listed) of a single photo with several faces."""
    args = query_args(("force", "reason", "face"))
    force = _flag_arg(args, "force")
    reason = args.get("reason", "").strip() or None
    if force and not reason:
        raise RequestInvalid("reason", "force=1 needs a reason (why this face is right for "
                                       "this person); it is kept in the audit log")
    face_index = _face_arg(args)
    person = _find_person(person_id)
    photos = _uploaded_photos()
    if face_index is not None and len(photos) != 1:
        raise RequestInvalid("face", "face=N picks a face of ONE photo: send a single photo")
    service, actor = enrolment("api")
    _examine(service, actor, photos, person, force, face_index)
    waiting = [photo for photo in photos if photo.status == "needs_confirmation"]
    if waiting:
        for photo in photos:
            if photo.status == "enrolled":
                photo.status = "not_saved"
        return _error(409, f"{len(waiting)} photo(s) do not look right for {person.name}: "
                           f"{waiting[0].reason}; check, then send them again with "
                           "?force=1&reason=...",
                      photos=[photo.as_json() for photo in photos])
    _save(service, actor, photos, person, reason)
    enrolled = [photo for photo in photos if photo.status == "enrolled"]
    results = [photo.as_json() for photo in photos]
    if not enrolled:
        message = photos[0].reason if len(photos) == 1 else (
            f"none of the {len(photos)} photos was enrolled; each one's reason is in photos")
        return _error(422, message, photos=results)
    return jsonify(person=_person_json(person, _template_count(person.id)),
                   photos=results), 201


def _face_arg(args: dict[str, str]) -> int | None:
    text = args.get("face")
    if text is None:
        return None
    if not text.isdigit():
        raise RequestInvalid("face", "face must be the index of a face the refusal listed")
    return int(text)


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
    return next((code for kind, code in _REFUSAL_CODES.items() if isinstance(error, kind)),
                "refused")


def _examine(service: EnrolmentService, actor: Actor, photos: list[_Photo], person: Person,
             force: bool, face_index: int | None) -> None:
    """Every check of the enrolment service on every photo; nothing is written."""
    seen: dict[str, int] = {}
    for photo in photos:
        photo.digest = hashlib.sha256(photo.data).hexdigest()
        if photo.digest in seen:
            photo.refuse("repeated", f"the same image as photo {seen[photo.digest]} of this "
                                     "upload")
            continue
        seen[photo.digest] = photo.index
        try:
            # The header is checked before decoding: a small file can decode to gigabytes.
            frame = decode_image(photo.data, photo.label,
                                 max_pixels=current_app.config["MAX_UPLOAD_PIXELS"])
            photo.examined = service.examine(frame, photo.digest, person=person,
                                             label=photo.label, face_index=face_index,
                                             force=force)
        except IdentityConflict as conflict:
            photo.status, photo.code = "needs_confirmation", conflict.code
            photo.reason = str(conflict).removeprefix(f"{photo.label}: ")
            photo.matches = _matches(conflict)
        except SeveralFaces as error:
            photo.refuse("several_faces", str(error))
            photo.faces = error.faces
        except tuple(_REFUSAL_CODES) as error:
            photo.refuse(_refusal_code(error), str(error))
        finally:
            photo.data = b""  # not needed any more: free the upload early
        if photo.examined is not None and photo.examined.conflict is not None:
            photo.matches = _matches(photo.examined.conflict)
        if photo.status != "enrolled":
            service.audit_refusal(person.name, person, FacegateError(photo.reason or ""),
                                  actor, photo.label, code=photo.code)


def _matches(conflict: IdentityConflict) -> dict[str, Any]:
    return {"person_id": conflict.other_id, "name": conflict.other,
            "score": round(conflict.similarity, 4)}


def _save(service: EnrolmentService, actor: Actor, photos: list[_Photo], person: Person,
          reason: str | None) -> None:
    for photo in photos:
        if photo.status != "enrolled":
            continue
        try:
            enrolled = service.save(person, photo.examined, photo.digest, actor,
                                    label=photo.label, reason=reason)
        except (DuplicateTemplate, PersonNotFound) as error:  # another admin, meanwhile
            photo.refuse("already_enrolled" if isinstance(error, DuplicateTemplate)
                         else "person_gone", str(error))
            continue
        photo.template_id = enrolled.template.id


def _client_name(filename: str | None) -> str | None:
    if not filename:
        return None
    name = "".join(ch for ch in filename.replace("\\", "/").split("/")[-1] if ch.isprintable())
    return name[:100] or None
