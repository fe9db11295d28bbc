"""The enrolment service: every rule about which face may be filed under which name.

The CLI, the admin page (upload and capture) and the JSON API all enrol through
:class:`EnrolmentService`, so they refuse the same photos for the same reasons, and every
enrolment, refusal and override is in the audit log whichever front made it:

- the same image bytes are never enrolled twice (``DuplicateTemplate``);
- the gallery's templates all belong to one embedder (``ModelMismatch``: re-embed first);
- the photo must show a face, and when it shows several, one clearly dominant face (by size
  and centrality, :mod:`device.enrolment.subject`) or the one the admin picked
  (``SeveralFaces`` lists the candidates), of good enough quality (``PoorQuality``);
- a face that already matches another enrolled person at the door's own threshold is
  refused: ``AlreadyEnrolledAs`` ("already enrolled as OTHER (similarity 0.77)");
- a new photo of an enrolled person must look like their enrolled photos, at the card's
  strict 1:1 threshold (``enrolment_threshold``, FAR 1e-4): ``NotSamePerson``;
- during a capture, every frame must look like the frames captured before it
  (``FaceChanged``), so a capture stops when someone else steps in front of the camera;
- a frame captured from the door camera must be a live face when the liveness check is on
  (``PresentationAttack``: "looks like a photo or a screen, not a live face (liveness
  0.03)"), never overridable. Photos given by an admin (upload, CLI, API) are not checked:
  admins enrol from photos of photos.

The identity refusals (``IdentityConflict``) may be overridden by an admin who has looked:
``force=True`` with a reason; the override is audited with who and why.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from device.audit import record_in
from device.enrolment.subject import choose_subject
from device.errors import (
    AlreadyEnrolledAs,
    DuplicateTemplate,
    FaceChanged,
    FacegateError,
    IdentityConflict,
    ModelMismatch,
    NoFaceFound,
    NotSamePerson,
    PoorQuality,
    PresentationAttack,
    SeveralFaces,
)
from device.gallery.store import Gallery, Person, Template
from device.identification import Decision
from device.liveness import LivenessCheck, attack_sentence
from device.vision.pipeline import Face, FacePipeline
from device.vision.quality import QualityGate

CROP_JPEG_QUALITY = 95


@dataclass(frozen=True)
class EnrolmentPolicy:
    """The thresholds the identity rules use (cosines of unit embeddings).

    ``same_person``: a new photo of an enrolled person, and each captured frame against the
    ones before it, must reach it (the card's 1:1 threshold at a strict false-accept rate).
    ``decision``: the door's own; a face it would let in as another person (at the threshold
    for the gallery's current size) is refused, since that is a duplicate person or a mix-up.
    """

    same_person: float
    decision: Decision
    gate: QualityGate = field(default_factory=QualityGate)

    @classmethod
    def from_card(cls, card: dict[str, Any], decision: Decision) -> EnrolmentPolicy:
        block = card.get("enrolment_threshold") or card["verification_threshold"]
        return cls(same_person=float(block["score"]), decision=decision)


@dataclass(frozen=True)
class Examined:
    """A photo that passed every check but the save: the face to enrol, and the faces found.

    ``conflict`` is the identity refusal an override (``force``) set aside, if any.
    """

    face: Face
    faces: list[Face]
    face_index: int
    conflict: IdentityConflict | None = None


@dataclass(frozen=True)
class Enrolled:
    person: Person
    template: Template
    face: Face
    forced: IdentityConflict | None = None


@dataclass
class Actor:
    """Who is enrolling, for the audit log: ``user`` as the log names them, ``source`` the
    front ("cli", "upload", "capture", "api"), the client's address on the web."""

    user: str | None
    source: str
    address: str | None = None


class EnrolmentService:
    """Enrol photos into ``gallery`` with ``pipeline``, under ``policy``.

    ``pipeline_lock``: held around every use of the pipeline and the liveness model (TFLite
    interpreters are not thread-safe; the web page serves from several threads); None for a
    single thread. ``liveness``: the check that frames captured from the door camera must
    pass; None when the liveness check is off.
    """

    def __init__(self, pipeline: FacePipeline, gallery: Gallery, policy: EnrolmentPolicy, *,
                 pipeline_lock: contextlib.AbstractContextManager | None = None,
                 store_crops: bool = True, liveness: LivenessCheck | None = None) -> None:
        self.pipeline = pipeline
        self.gallery = gallery
        self.policy = policy
        self.store_crops = store_crops
        self.liveness = liveness
        self._lock = pipeline_lock or contextlib.nullcontext()

    @classmethod
    def with_card_defaults(cls, pipeline: FacePipeline, gallery: Gallery, *,
                           liveness: LivenessCheck | None = None) -> EnrolmentService:
        """The service with the embedder card's thresholds and nothing configured (tools,
        benchmarks and tests; the fronts build theirs from the configuration)."""
        card = pipeline.embedder_card
        return cls(pipeline, gallery,
                   EnrolmentPolicy.from_card(card.card, Decision.from_card(card.threshold)),
                   liveness=liveness)

    # --- the checks -----------------------------------------------------------------------

    def examine(self, frame: np.ndarray, sha256: str, *, person: Person | None,
                label: str = "image", face_index: int | None = None, force: bool = False,
                captured_before: list[np.ndarray] | None = None,
                live: bool = False) -> Examined:
        """Every check, nothing written. ``person``: whom the photo is for (None: a person
        not created yet). ``face_index``: the face the admin picked among several (an index
        into the faces found, largest first). ``captured_before``: embeddings of the frames
        already taken in this capture. ``live``: the frame comes from the door camera, so
        the face must pass the liveness check (when it is on). ``force``: an identity
        conflict is returned in ``Examined.conflict`` instead of raised; an attack is not."""
        self._refuse_foreign_model()
        owner = self.gallery.has_source(self.pipeline.model_name, sha256)
        if owner is not None:
            raise DuplicateTemplate(f"{label}: this image is already enrolled for {owner.name}")
        with self._lock:
            faces = self.pipeline.process(frame, thorough=True)
        index = self._subject_index(faces, frame.shape, label, face_index)
        face = faces[index]
        problems = self.policy.gate.problems(face.quality)
        if problems:
            raise PoorQuality(f"{label}: " + "; ".join(problems))
        if live:
            self._refuse_attack(frame, face, label)
        conflict = self._identity_conflict(face.embedding, person, label, captured_before)
        if conflict is not None and not force:
            raise conflict
        return Examined(face, faces, index, conflict)

    # --- enrolling ------------------------------------------------------------------------

    def enrol(self, person: Person | str, frame: np.ndarray, sha256: str, actor: Actor, *,
              label: str = "image", face_index: int | None = None, force: bool = False,
              reason: str | None = None, create: bool = True) -> Enrolled:
        """Check the photo and add one template for ``person`` (a Person, or a name: created
        when new and ``create``). A refusal raises (one sentence) and is audited as
        ``enrol_refused``."""
        reason = _override_reason(force, reason)
        if isinstance(person, Person):
            person_name = person.name
        else:
            person_name, person = person, self.gallery.find_person(person)
        try:
            if person is None and not create:
                raise FacegateError(f"nobody named {person_name!r} is enrolled")
            examined = self.examine(frame, sha256, person=person, label=label,
                                    face_index=face_index, force=force)
        except FacegateError as refusal:
            self.audit_refusal(person_name, person, refusal, actor, label)
            raise
        if person is None:
            person = self.gallery.find_person(person_name) or self.gallery.add_person(
                person_name)
            record_in(self.gallery, "person_add", {"person_id": person.id, "name": person.name,
                                                   "via": actor.source}, actor.user,
                      actor.address)
        return self.save(person, examined, sha256, actor, label=label, reason=reason)

    def save(self, person: Person, examined: Examined, sha256: str, actor: Actor, *,
             label: str = "image", reason: str | None = None) -> Enrolled:
        """Store an examined photo's template and audit it (``enrol``, and ``enrol_forced``
        with who and why when an identity conflict was overridden)."""
        face = examined.face
        template = self.gallery.add_template(
            person.id, face.embedding, self.pipeline.model_name, face.quality.as_dict(),
            _jpeg(face.aligned) if self.store_crops else None, sha256, source=actor.source)
        detail = {"person_id": person.id, "name": person.name, "template_id": template.id,
                  "source": actor.source, "photo": label, "model": template.model}
        record_in(self.gallery, "enrol", detail, actor.user, actor.address)
        conflict = examined.conflict
        if conflict is not None:
            record_in(self.gallery, "enrol_forced", {
                **detail, "overridden": conflict.code, "refusal": str(conflict),
                "similarity": round(conflict.similarity, 4), "other": conflict.other,
                "why": reason}, actor.user, actor.address)
        return Enrolled(person, template, face, conflict)

    def capture(self, person: Person, actor: Actor) -> Capture:
        """A capture session for ``person``: frames are enrolled one by one while they stay
        the same person (see :class:`Capture`)."""
        return Capture(self, person, actor)

    # --- private --------------------------------------------------------------------------

    def _refuse_foreign_model(self) -> None:
        model = self.gallery.model
        if model is not None and model != self.pipeline.model_name:
            raise ModelMismatch(
                f"this gallery's templates are for {model}, not {self.pipeline.model_name}: "
                f"run `facegate reembed --model {self.pipeline.model_name}` first, or enrol "
                f"with {model}")

    def _refuse_attack(self, frame: np.ndarray, face: Face, label: str) -> None:
        if self.liveness is None or not self.liveness.enabled:
            return
        with self._lock:
            judged = self.liveness.judge(frame, face.box)
        if not judged.live:
            raise PresentationAttack(f"{label}: {attack_sentence(judged)}", score=judged.score)

    def _subject_index(self, faces: list[Face], shape: tuple[int, ...], label: str,
                       face_index: int | None) -> int:
        if not faces:
            raise NoFaceFound(f"{label}: no face found")
        if face_index is not None:
            if not 0 <= face_index < len(faces):
                raise SeveralFaces(f"{label}: there is no face {face_index + 1} in this photo "
                                   f"({len(faces)} found)")
            return face_index
        try:
            return choose_subject(faces, shape)
        except SeveralFaces as error:
            raise type(error)(f"{label}: {error}", **_several_faces_extras(error)) from None

    def _identity_conflict(self, embedding: np.ndarray, person: Person | None, label: str,
                           captured_before: list[np.ndarray] | None
                           ) -> IdentityConflict | None:
        person_ids, _, matrix = self.gallery.embeddings(self.pipeline.model_name)
        scores = (matrix @ embedding.astype(np.float32)) if person_ids else np.empty(0)
        owners = np.array(person_ids)
        own_id = person.id if person is not None else None
        others = owners != own_id if len(owners) else np.zeros(0, bool)
        if others.any():
            best = int(np.argmax(np.where(others, scores, -np.inf)))
            people = len(set(person_ids))
            threshold = self.policy.decision.threshold_for(people)
            if scores[best] >= threshold:
                other = self.gallery.get_person(person_ids[best])
                return AlreadyEnrolledAs(
                    f"{label}: already enrolled as {other.name} (similarity "
                    f"{scores[best]:.2f})", similarity=float(scores[best]), other=other.name,
                    other_id=other.id)
        if captured_before:
            similarity = float(np.min(np.stack(captured_before) @ embedding))
            if similarity < self.policy.same_person:
                return FaceChanged(
                    f"{label}: not the same face as the frames before it (similarity "
                    f"{similarity:.2f}): one person at a time in front of the camera",
                    similarity=similarity)
        own = scores[~others] if len(owners) else np.empty(0)
        if person is not None and own.size and own.max() < self.policy.same_person:
            return NotSamePerson(
                f"{label}: does not look like {person.name}'s enrolled photos (similarity "
                f"{own.max():.2f})", similarity=float(own.max()))
        return None

    def audit_refusal(self, name: str, person: Person | None, refusal: FacegateError,
                      actor: Actor, label: str, *, code: str | None = None) -> None:
        """Record a refused photo: what was tried, by whom, and why it was refused."""
        record_in(self.gallery, "enrol_refused", {
            "person_id": person.id if person else None, "name": name, "photo": label,
            "source": actor.source, "reason": str(refusal),
            "code": code or refusal.code}, actor.user,
            actor.address)


class Capture:
    """Enrolment from the door camera, one frame at a time.

    Each frame is checked like an uploaded photo (against the person's templates and
    everyone else's) and also against the frames already taken in this capture; the first
    frame that is not the same face raises ``FaceChanged`` and the capture should stop. A
    frame the liveness check judges not live raises ``PresentationAttack``.
    """

    def __init__(self, service: EnrolmentService, person: Person, actor: Actor) -> None:
        self.service = service
        self.person = person
        self.actor = actor
        self.taken: list[Enrolled] = []

    def take(self, frame: np.ndarray, sha256: str, label: str) -> Enrolled:
        before = [enrolled.face.embedding for enrolled in self.taken]
        try:
            examined = self.service.examine(frame, sha256, person=self.person, label=label,
                                            captured_before=before, live=True)
        except FacegateError as refusal:
            self.service.audit_refusal(self.person.name, self.person, refusal, self.actor,
                                        label)
            raise
        enrolled = self.service.save(self.person, examined, sha256, self.actor, label=label)
        self.taken.append(enrolled)
        return enrolled


def _override_reason(force: bool, reason: str | None) -> str | None:
    if not force:
        return None
    reason = " ".join((reason or "").split())
    if not reason:
        raise FacegateError("an override needs a reason (say why this face is right for "
                            "this person), for the audit log")
    return reason[:500]


def _several_faces_extras(error: SeveralFaces) -> dict[str, Any]:
    faces = getattr(error, "faces", None)
    return {"faces": faces} if faces is not None else {}


def _jpeg(crop: np.ndarray) -> bytes | None:
    ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, CROP_JPEG_QUALITY])
    return encoded.tobytes() if ok else None
