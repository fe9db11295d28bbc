"""Enrolment on the page: upload photos, or capture frames from the door camera.

Every photo goes through the enrolment service (:mod:`device.enrolment`), the same one the
CLI and the API use, so the page refuses what they refuse. Two refusals are not final here:
a photo whose face looks like someone else (an ``IdentityConflict``) is held back
(:mod:`device.web.pending`) until the admin enrols it anyway with a reason (audited), and a
photo with several faces of similar prominence is held back with the faces shown, for the
admin to pick one.

Concurrency: the shared pipeline is used under ``services.pipeline_lock`` (TFLite is not
thread-safe); every request writes through its own Gallery, whose writes are single
``BEGIN IMMEDIATE`` transactions, so two admins enrolling while the door recognises neither
lose nor mix templates.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from flask import Blueprint, Response, abort, current_app, render_template, request

from device.enrolment import Actor, Capture, EnrolmentService
from device.errors import (
    DuplicateTemplate,
    FaceChanged,
    FacegateError,
    IdentityConflict,
    PresentationAttack,
    SeveralFaces,
)
from device.gallery.store import Person
from device.vision.image_io import decode_image
from device.web.db import enrolment, services
from device.web.pending import PendingPhotos
from device.web.people import find, render_person
from device.web.roles import admin_required, current_user
from device.web.words import plural

bp = Blueprint("enrol", __name__)

MAX_CAPTURE_FRAMES = 10
THUMBNAIL_PX = 96


@dataclass(frozen=True)
class Outcome:
    """What became of one photo: ``accepted`` (``template_id``), ``refused`` (``reason``) or
    ``pending``: held back under ``token``, either because the face looks like someone else
    (``kind`` "identity": ``other``, ``score``) or because it has several faces (``kind``
    "faces": ``faces``, the boxes the admin picks from). A captured frame refused is of
    ``kind`` "changed" (someone else stepped in) or "attack" (not a live face)."""

    label: str
    status: str
    reason: str = ""
    template_id: str | None = None
    token: str | None = None
    kind: str | None = None
    other: str | None = None
    score: float | None = None
    faces: list[dict[str, Any]] = field(default_factory=list)
    forced: bool = False


@bp.route("/people/<person_id>/photos", methods=["POST"])
@admin_required
def upload(person_id: str) -> tuple[str, int]:
    person = find(person_id)
    files = [file for file in request.files.getlist("photos") if file and file.filename]
    limit = current_app.config["MAX_PHOTOS_PER_UPLOAD"]
    if not files:
        return render_person(person, errors={"photos": "Choose one or more photos to upload."},
                             status=400)
    if len(files) > limit:
        return render_person(person, errors={"photos": f"At most {limit} photos at once."},
                             status=400)
    service, actor = enrolment("upload")
    outcomes = [enrol_bytes(service, actor, file.read(), _label(number, file.filename), person)
                for number, file in enumerate(files, 1)]
    return render_person(person, results=outcomes, status=200)


@bp.route("/people/<person_id>/photos/confirm", methods=["POST"])
@admin_required
def confirm(person_id: str) -> tuple[str, int]:
    """Enrol a held-back photo: the face the admin picked, or a face that looks like someone
    else, anyway, with the admin's reason (audited as ``enrol_forced``)."""
    person = find(person_id)
    token = request.form.get("token", "")
    reason = request.form.get("reason", "").strip()
    face = request.form.get("face", type=int)
    held = _pending().peek(token)
    if held is None:
        return render_person(person, errors={"photos": "That held-back photo has expired or "
                                             "was already handled; upload it again."},
                             status=400)
    data, meta = held
    if meta.get("person_id") != person.id or meta.get("user") != current_user().name:
        return render_person(person, errors={"photos": "That photo was held back for another "
                                             "enrolment."}, status=400)
    force = meta.get("kind") == "identity"
    if force and not reason:
        return render_person(person, errors={"photos": "Say why this face is right for "
                                             f"{person.name}: the reason is kept in the "
                                             "audit log."}, status=400)
    if _pending().take(token) is None:  # claimed by a second click meanwhile
        return render_person(person, errors={"photos": "That held-back photo was already "
                                             "handled."}, status=400)
    service, actor = enrolment(meta.get("source", "upload"))
    outcome = enrol_bytes(service, actor, data, meta["label"], person, force=force,
                          reason=reason or None,
                          face_index=face if face is not None else meta.get("face"))
    return render_person(person, results=[outcome], status=200)


@bp.route("/people/<person_id>/held/<token>/face/<int:number>.jpg")
@admin_required
def held_face(person_id: str, token: str, number: int) -> Response:
    """A thumbnail of face ``number`` of a held-back photo, for the face picker."""
    held = _pending().peek(token)
    if held is None or held[1].get("person_id") != person_id:
        abort(404)
    data, meta = held
    faces = meta.get("faces") or []
    if not 0 <= number < len(faces):
        abort(404)
    frame = decode_image(data, "held-back photo")
    jpeg = _thumbnail(frame, faces[number]["box"])
    if jpeg is None:
        abort(404)
    return Response(jpeg, mimetype="image/jpeg", headers={"Cache-Control": "no-store"})


@bp.route("/people/<person_id>/capture", methods=["GET", "POST"])
@admin_required
def capture(person_id: str) -> str | tuple[str, int]:
    person = find(person_id)
    config = current_app.config
    live = services().live
    if request.method == "GET":
        return render_template("capture.html", person=person, has_live=live is not None,
                               frames=config["CAPTURE_FRAMES"])
    if live is None:
        return render_template("capture.html", person=person, has_live=False,
                               frames=config["CAPTURE_FRAMES"],
                               error="No camera is connected to this page."), 400
    wanted = request.form.get("frames", config["CAPTURE_FRAMES"], type=int)
    wanted = min(max(wanted or config["CAPTURE_FRAMES"], 1), MAX_CAPTURE_FRAMES)
    outcomes = capture_frames(person, wanted)
    taken = sum(outcome.status == "accepted" for outcome in outcomes)
    error = None
    stopped = next((o for o in outcomes if o.status == "pending" or o.kind == "changed"), None)
    if stopped is not None and stopped.kind == "changed":
        error = (f"Capture stopped after {plural(taken, 'frame')}: {stopped.reason}. Only "
                 f"{person.name} in front of the camera, and try again.")
    elif stopped is not None:
        error = f"Capture stopped: {stopped.reason}. Check the held-back frame below."
    elif taken < wanted and any(outcome.kind == "attack" for outcome in outcomes):
        error = (f"Only {taken} of {wanted} good frames: the liveness check took the face for "
                 f"a photo or a screen. Capture {person.name} in person, in good light; a "
                 "photo of them is enrolled by upload instead.")
    elif taken < wanted:
        error = (f"Only {taken} of {wanted} good frames in "
                 f"{config['CAPTURE_TIMEOUT_SECONDS']:.0f} s: stand in front of the camera, "
                 "face it, and try again.")
    return render_template("capture.html", person=person, has_live=True, frames=wanted,
                           results=outcomes, error=error)


def capture_frames(person: Person, wanted: int) -> list[Outcome]:
    """Take frames from the live view until ``wanted`` are enrolled, the time-out passes, or
    the face stops being the same person; every frame tried is in the list (refused ones
    with their reason). Each frame is checked like a photo and against the frames before it
    (the service's ``Capture``)."""
    config = current_app.config
    live = services().live
    service, actor = enrolment("capture")
    session = service.capture(person, actor)
    interval = float(config["CAPTURE_INTERVAL_SECONDS"])
    deadline = time.monotonic() + float(config["CAPTURE_TIMEOUT_SECONDS"])
    outcomes: list[Outcome] = []
    seen: set[str] = set()
    while time.monotonic() < deadline:
        frame = live.latest_frame()
        data = _png(frame) if frame is not None else None
        digest = hashlib.sha256(data).hexdigest() if data else None
        if digest is None or digest in seen:  # no frame yet, or the same frame again
            time.sleep(max(interval, 0.05))
            continue
        seen.add(digest)
        outcome = _capture_one(session, data, f"frame {len(seen)}")
        outcomes.append(outcome)
        if outcome.status == "pending" or outcome.kind == "changed":
            break  # someone else is in front of the camera: stop, do not guess
        if sum(o.status == "accepted" for o in outcomes) >= wanted:
            break
        time.sleep(interval)
    return outcomes


def _capture_one(session: Capture, data: bytes, label: str) -> Outcome:
    digest = hashlib.sha256(data).hexdigest()
    try:
        frame = decode_image(data, label)
        enrolled = session.take(frame, digest, label)
    except FaceChanged as error:
        return Outcome(label, "refused", _reason(error, label), kind="changed")
    except PresentationAttack as error:  # refused; the next frames may still be live
        return Outcome(label, "refused", _reason(error, label), kind="attack")
    except IdentityConflict as error:
        return _hold_identity(data, label, session.person, error, "capture")
    except FacegateError as error:
        return Outcome(label, "refused", _reason(error, label))
    return Outcome(label, "accepted", "enrolled", template_id=enrolled.template.id)


def enrol_bytes(service: EnrolmentService, actor: Actor, data: bytes, label: str,
                person: Person, *, force: bool = False, reason: str | None = None,
                face_index: int | None = None) -> Outcome:
    """Enrol one photo's bytes for ``person``; a refusal is an Outcome, never an exception.
    A face like someone else's, or several faces, are held back for the admin."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        # The header is checked before decoding: a small file can decode to gigabytes.
        frame = decode_image(data, label, max_pixels=current_app.config["MAX_UPLOAD_PIXELS"])
        enrolled = service.enrol(person, frame, digest, actor, label=label, force=force,
                                 reason=reason, face_index=face_index, create=False)
    except IdentityConflict as error:
        return _hold_identity(data, label, person, error, actor.source, face_index)
    except SeveralFaces as error:
        faces = getattr(error, "faces", None) or []
        if not faces:
            return Outcome(label, "refused", _reason(error, label))
        token = _pending().put(data, {"person_id": person.id, "label": label,
                                      "user": current_user().name, "kind": "faces",
                                      "faces": faces, "source": actor.source})
        return Outcome(label, "pending", _reason(error, label), token=token, kind="faces",
                       faces=faces)
    except (DuplicateTemplate, FacegateError) as error:
        return Outcome(label, "refused", _reason(error, label))
    return Outcome(label, "accepted", "enrolled", template_id=enrolled.template.id,
                   forced=enrolled.forced is not None)


def _hold_identity(data: bytes, label: str, person: Person, error: IdentityConflict,
                   source: str, face_index: int | None = None) -> Outcome:
    token = _pending().put(data, {"person_id": person.id, "label": label,
                                  "user": current_user().name, "kind": "identity",
                                  "other": error.other, "source": source,
                                  "face": face_index})
    return Outcome(label, "pending", _reason(error, label), token=token, kind="identity",
                   other=error.other, score=error.similarity)


def _thumbnail(frame: np.ndarray, box: list[float]) -> bytes | None:
    """The face's box, widened by half, cut from the frame and scaled for the picker."""
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = box
    pad_x, pad_y = (x2 - x1) / 4, (y2 - y1) / 4
    left, top = max(int(x1 - pad_x), 0), max(int(y1 - pad_y), 0)
    right, bottom = min(int(x2 + pad_x), width), min(int(y2 + pad_y), height)
    if right <= left or bottom <= top:
        return None
    crop = cv2.resize(frame[top:bottom, left:right], (THUMBNAIL_PX, THUMBNAIL_PX),
                      interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return encoded.tobytes() if ok else None


def _png(frame: np.ndarray) -> bytes | None:
    ok, encoded = cv2.imencode(".png", frame)
    return encoded.tobytes() if ok else None


def _pending() -> PendingPhotos:
    config = current_app.config
    return PendingPhotos(config["PENDING_DIR"], config["PENDING_MAX_AGE_SECONDS"])


def _label(number: int, filename: str | None) -> str:
    """"photo 2 (IMG_0012.jpg)": for the page only, never used on disk."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:60]
    return f"photo {number} ({name})" if name else f"photo {number}"


def _reason(error: FacegateError, label: str) -> str:
    message = str(error)
    return message.removeprefix(f"{label}: ")
