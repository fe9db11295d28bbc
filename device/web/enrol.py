"""Enrolment on the page: upload photos, or capture frames from the door camera.

Every photo goes through the same steps as ``facegate enroll`` (``device.enrolment``): it
must decode, be small enough, not be enrolled already (the same bytes), and show one face
that passes the quality gate. One more step here: a face that already matches *another*
person at the door's threshold is held back (:mod:`device.web.pending`) until the admin
confirms it, since it is a duplicate person or a mix-up.

Concurrency: the shared pipeline is used under ``services.pipeline_lock`` (TFLite is not
thread-safe); every request writes through its own Gallery, whose writes are single
``BEGIN IMMEDIATE`` transactions, so two admins enrolling while the door recognises neither
lose nor mix templates.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass

import cv2
import numpy as np
from flask import Blueprint, current_app, render_template, request

from device.enrolment import CROP_JPEG_QUALITY, the_one_face
from device.errors import (
    DuplicateTemplate,
    FacegateError,
    ImageUnreadable,
    NoFaceFound,
    PersonNotFound,
    PoorQuality,
    SeveralFaces,
)
from device.gallery.store import Gallery, Person
from device.site_settings import read_site_settings
from device.vision.image_io import decode_image
from device.vision.quality import QualityGate
from device.web.audit import audit
from device.web.db import database_path, gallery, services
from device.web.pending import PendingPhotos
from device.web.people import find, render_person
from device.web.roles import admin_required, current_user

bp = Blueprint("enrol", __name__)

REFUSALS = (ImageUnreadable, NoFaceFound, SeveralFaces, PoorQuality, DuplicateTemplate,
            PersonNotFound)
MAX_CAPTURE_FRAMES = 10


@dataclass(frozen=True)
class Outcome:
    """What became of one photo: ``accepted`` (``template_id``), ``refused`` (``reason``) or
    ``pending`` (held back under ``token``: it matches ``other``, with cosine ``score``)."""

    label: str
    status: str
    reason: str = ""
    template_id: str | None = None
    token: str | None = None
    other: str | None = None
    score: float | None = None


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
    outcomes = [enrol_bytes(file.read(), _label(number, file.filename), person)
                for number, file in enumerate(files, 1)]
    _audit_outcomes(person, outcomes, source="upload")
    return render_person(person, results=outcomes, status=200)


@bp.route("/people/<person_id>/photos/confirm", methods=["POST"])
@admin_required
def confirm(person_id: str) -> tuple[str, int]:
    """Save held-back photos anyway (the admin checked the other person's match)."""
    person = find(person_id)
    tokens = request.form.getlist("token")
    if not tokens:
        return render_person(person, errors={"photos": "No held-back photo was named."},
                             status=400)
    outcomes = []
    user = current_user()
    for token in tokens:
        held = _pending().take(token)
        if held is None:
            outcomes.append(Outcome("held-back photo", "refused",
                                    "it has expired or was already handled; upload it again"))
            continue
        data, meta = held
        if meta.get("person_id") != person.id or meta.get("user") != user.name:
            outcomes.append(Outcome(meta.get("label", "photo"), "refused",
                                    "it was held back for another enrolment"))
            continue
        outcome = enrol_bytes(data, meta["label"], person, confirmed=True)
        outcomes.append(outcome)
        if outcome.status == "accepted":
            audit("enrol_duplicate_confirmed", {"person_id": person.id, "name": person.name,
                                                "also_matches": meta.get("other"),
                                                "template_id": outcome.template_id})
    return render_person(person, results=outcomes, status=200)


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
    taken = sum(outcome.status != "refused" for outcome in outcomes)
    error = None
    if taken < wanted:
        error = (f"Only {taken} of {wanted} good frames in "
                 f"{config['CAPTURE_TIMEOUT_SECONDS']:.0f} s: stand in front of the camera, "
                 "face it, and try again.")
    _audit_outcomes(person, outcomes, source="camera")
    return render_template("capture.html", person=person, has_live=True, frames=wanted,
                           results=outcomes, error=error)


def capture_frames(person: Person, wanted: int) -> list[Outcome]:
    """Take frames from the live view until ``wanted`` are accepted or held back, or the
    time-out passes; every frame tried is in the list (refused ones with their reason)."""
    config = current_app.config
    live = services().live
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
        outcomes.append(enrol_bytes(data, f"frame {len(seen)}", person))
        if sum(outcome.status != "refused" for outcome in outcomes) >= wanted:
            break
        time.sleep(interval)
    return outcomes


def enrol_bytes(data: bytes, label: str, person: Person, *, confirmed: bool = False) -> Outcome:
    """Enrol one photo's bytes for ``person``; a refusal is an Outcome, never an exception.

    ``confirmed``: the admin has seen that the face matches someone else; save it anyway.
    """
    svc = services()
    store = gallery()
    digest = hashlib.sha256(data).hexdigest()
    try:
        with svc.pipeline_lock:  # loaded on first use, once
            pipeline = svc.pipeline()
        owner = store.has_source(pipeline.model_name, digest)
        if owner is not None:
            raise DuplicateTemplate(f"{label}: this photo is already enrolled for {owner.name}")
        frame = decode_image(data, label)
        _check_pixels(frame, label)
        with svc.pipeline_lock:
            face = the_one_face(pipeline, frame, label, QualityGate())
        if not confirmed:
            other, score = closest_other(store, pipeline.model_name, face.embedding, person.id)
            if other is not None and score >= match_threshold(pipeline.embedder_card.threshold):
                token = _pending().put(data, {"person_id": person.id, "label": label,
                                              "user": current_user().name, "other": other.name})
                return Outcome(label, "pending", f"this face matches {other.name}",
                               token=token, other=other.name, score=score)
        template = store.add_template(person.id, face.embedding, pipeline.model_name,
                                      face.quality.as_dict(), _jpeg(face.aligned), digest)
    except REFUSALS as error:
        return Outcome(label, "refused", _reason(error, label))
    return Outcome(label, "accepted", "enrolled", template_id=template.id)


def closest_other(store: Gallery, model: str, embedding: np.ndarray,
                  person_id: str) -> tuple[Person | None, float]:
    """The enrolled person other than ``person_id`` whose template is closest to
    ``embedding`` (unit length), with the cosine; ``(None, -1.0)`` when there is nobody."""
    person_ids, _, matrix = store.embeddings(model)
    if not person_ids:
        return None, -1.0
    scores = matrix @ embedding.astype(np.float32)
    others = np.array([pid != person_id for pid in person_ids])
    if not others.any():
        return None, -1.0
    best = int(np.argmax(np.where(others, scores, -np.inf)))
    try:
        return store.get_person(person_ids[best]), float(scores[best])
    except PersonNotFound:  # removed in between
        return None, -1.0


def match_threshold(card_threshold: dict) -> float:
    """The door's threshold: the site setting, else the daemon's config, else the card's."""
    site = read_site_settings(database_path()).get("recognition.threshold")
    if site is not None:
        return float(site)
    config = services().config
    if config is not None and config.recognition.threshold is not None:
        return float(config.recognition.threshold)
    return float(card_threshold["score"])


def _check_pixels(frame: np.ndarray, label: str) -> None:
    limit = current_app.config["MAX_UPLOAD_PIXELS"]
    height, width = frame.shape[:2]
    if height * width > limit:
        raise ImageUnreadable(f"{label}: image too large ({width}x{height}, limit "
                              f"{limit / 1e6:g} megapixels)")


def _jpeg(crop: np.ndarray) -> bytes | None:
    ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, CROP_JPEG_QUALITY])
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


def _audit_outcomes(person: Person, outcomes: list[Outcome], *, source: str) -> None:
    counts = {status: sum(o.status == status for o in outcomes)
              for status in ("accepted", "refused", "pending")}
    if outcomes:
        audit("enrol", {"person_id": person.id, "name": person.name, "source": source,
                        **counts,
                        "refusals": [o.reason for o in outcomes if o.status == "refused"][:20]})
