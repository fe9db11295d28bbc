"""The JSON API under ``/api/``: the page's operations for scripts and other systems.

JSON in and out; every refusal is a 4xx with ``{"error": "one sentence"}`` (and ``"field"``
when one field of the request is to blame), and leaves the database as it was. docs/api.md
shows each call with curl; docs/openapi.yaml describes them all (a test keeps the two and
this file in step).

Who may call: a script sends ``Authorization: Bearer fg_...`` with an API token of an
account (:mod:`device.web.tokens`); a signed-in browser may call too, with its session
cookie, and then sends its CSRF token in the ``X-CSRF-Token`` header on every POST, PATCH
and DELETE (:mod:`device.web.security`). A request that carries a bearer token is judged by
that token alone, never by a cookie sent with it. Roles as on the pages: a viewer reads the
door's state and the access log, an admin does everything. Only ``GET /api/health`` is
public.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    jsonify,
    request,
    send_file,
    url_for,
)
from flask.typing import ResponseReturnValue
from gpiozero import GPIOZeroError
from werkzeug.exceptions import RequestEntityTooLarge

from device.daemon.access import ScheduleInvalid, parse_schedule, schedule_from_text
from device.enrolment import CROP_JPEG_QUALITY, the_one_face
from device.errors import (
    DuplicateTemplate,
    EventNotFound,
    FacegateError,
    ImageUnreadable,
    NoFaceFound,
    PersonNotFound,
    PoorQuality,
    RequestInvalid,
    RestoreRefused,
    SettingInvalid,
    SeveralFaces,
    TimeUnreadable,
    TokenNotFound,
)
from device.events import KINDS, Event, parse_since
from device.gallery.migrations import MIGRATIONS
from device.gallery.store import Person
from device.site_settings import (
    RESTART_NEEDED,
    SETTABLE,
    read_site_settings,
    write_site_settings,
)
from device.vision.image_io import decode_image
from device.vision.pipeline import Face
from device.vision.quality import QualityGate
from device.web.audit import audit
from device.web.backup import backup_database, restore_database
from device.web.dashboard import door_state
from device.web.db import database_path, event_log, gallery, services
from device.web.enrol import match_threshold
from device.web.people import schedule_text
from device.web.roles import current_user
from device.web.tokens import (
    ApiToken,
    authenticate,
    create_token,
    find_token,
    list_tokens,
    revoke_token,
)
from device.web.users import list_users

bp = Blueprint("api", __name__, url_prefix="/api")

UNLOCK_SECONDS = (0.5, 60.0)  # the range the configuration allows for door.unlock_seconds
MAX_HOLD_OPEN = timedelta(hours=24)  # an unattended door is not held open for days
EVENTS_PAGE = 50
EVENTS_MAX = 500
_RAW_IMAGE_TYPES = ("image/", "application/octet-stream")

View = TypeVar("View", bound=Callable[..., Any])


def init_app(app: Flask) -> None:
    """Register the API (``create_app`` calls this when the module is present)."""
    app.register_blueprint(bp)


# --- Who is calling --------------------------------------------------------------------------


@bp.before_request
def authenticate_request() -> ResponseReturnValue | None:
    """A bearer token, when one is sent, decides alone; otherwise the session's account."""
    if request.endpoint == "api.health":
        return None
    header = request.headers.get("Authorization")
    if header is None:
        if current_user() is None:
            return _unauthorised("sign in or send an API token")
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _unauthorised("send the API token as 'Authorization: Bearer <token>'")
    owner = authenticate(database_path(), token.strip())
    if owner is None:
        return _unauthorised("this API token is unknown or has been revoked")
    g.user = owner.user
    g.api_token_id = owner.token_id
    return None


def admin_only(view: View) -> View:
    """Refuse a viewer's request with 403."""
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        user = current_user()
        if user is None or not user.is_admin:
            return _error(403, "this needs an admin account; a viewer may read the door's "
                               "state and the access log only")
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def _unauthorised(message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="facegate"'
    return response


# --- Errors ----------------------------------------------------------------------------------


def _error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify(error=message, **extra), status


@bp.errorhandler(RequestInvalid)
def _request_invalid(error: RequestInvalid) -> ResponseReturnValue:
    return _error(400, str(error), **({"field": error.field} if error.field else {}))


@bp.errorhandler(SettingInvalid)
def _setting_invalid(error: SettingInvalid) -> ResponseReturnValue:
    return _error(400, str(error), field=error.key)


@bp.errorhandler(PersonNotFound)
@bp.errorhandler(EventNotFound)
@bp.errorhandler(TokenNotFound)
def _not_found(error: FacegateError) -> ResponseReturnValue:
    return _error(404, str(error))


@bp.errorhandler(RestoreRefused)
def _restore_refused(error: RestoreRefused) -> ResponseReturnValue:
    return _error(400, str(error), field="database")


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_exc: RequestEntityTooLarge) -> ResponseReturnValue:
    limit = request.max_content_length or 0
    what = "backup" if request.endpoint == "api.restore" else "upload"
    return _error(413, f"the {what} is larger than this door accepts in one request "
                       f"({limit / 1e6:.0f} MB)")


# --- Reading requests ------------------------------------------------------------------------

_NONE = type(None)
_NUMBER = (int, float)
_TYPE_NAMES = {str: "a string", int: "a number", float: "a number", bool: "true or false",
               _NONE: "null", list: "a list", dict: "an object"}


def json_body(fields: Mapping[str, tuple[type, ...]], required: tuple[str, ...] = ()
              ) -> dict[str, Any]:
    """The request's JSON object, checked against ``fields`` (name -> accepted types); an
    empty body is ``{}``. Raises :class:`RequestInvalid` naming the first bad field."""
    if not request.get_data(cache=True):
        data: Any = {}
    else:
        data = request.get_json(silent=True)
        if data is None:
            raise RequestInvalid(None, "the body must be JSON, sent with "
                                       "Content-Type: application/json")
    if not isinstance(data, dict):
        raise RequestInvalid(None, "the body must be a JSON object ({...})")
    for name in data:
        if name not in fields:
            allowed = ", ".join(fields) or "no fields"
            raise RequestInvalid(name, f"unknown field {name!r}; this request takes {allowed}")
    for name in required:
        if name not in data:
            raise RequestInvalid(name, f"the field {name!r} is missing")
    for name, value in data.items():
        kinds = fields[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            wanted = " or ".join(dict.fromkeys(_TYPE_NAMES[kind] for kind in kinds))
            raise RequestInvalid(name, f"{name!r} must be {wanted}, not "
                                       f"{_TYPE_NAMES.get(type(value), type(value).__name__)}")
    return data


def query_args(allowed: tuple[str, ...]) -> dict[str, str]:
    """The query string, refusing a parameter not in ``allowed`` (naming it)."""
    for name in request.args:
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise RequestInvalid(name, f"unknown query parameter {name!r}; known: {known}")
    return {name: request.args[name] for name in allowed if name in request.args}


def _int_arg(args: Mapping[str, str], name: str, default: int, high: int) -> int:
    text = args.get(name)
    if text is None:
        return default
    if not text.isdigit() or int(text) > high:
        raise RequestInvalid(name, f"{name} must be a whole number from 0 to {high}")
    return int(text)


def _time_arg(args: Mapping[str, str], name: str) -> datetime | None:
    if name not in args:
        return None
    try:
        return parse_since(args[name])
    except TimeUnreadable as error:
        raise RequestInvalid(name, f"{name}: {error}") from None


def _flag_arg(args: Mapping[str, str], name: str) -> bool:
    value = args.get(name, "0").lower()
    if value not in ("0", "1", "true", "false"):
        raise RequestInvalid(name, f"{name} must be 1 or 0")
    return value in ("1", "true")


def _aware_time(value: str | None, name: str) -> str | None:
    """An ISO date or time as UTC text; one without an offset is the door's local time (as
    for ``facegate people edit``); None or "" clears."""
    if value is None or not value.strip():
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise RequestInvalid(name, f"{name} must be an ISO date or time such as 2026-01-31 or "
                                   f"2026-01-31T18:00+01:00, not {value!r}") from None
    return _utc_text(when if when.tzinfo else when.astimezone())


def _utc_text(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- Health and the door ---------------------------------------------------------------------


@bp.get("/health")
def health() -> ResponseReturnValue:
    """Public: whether the web page is up and can read its database. Says nothing else."""
    try:
        gallery().change_seq()
    except Exception:  # any failure to read is "unhealthy", whatever its cause
        return _error(503, "the database cannot be read")
    return jsonify(status="ok")


@bp.get("/door")
def door() -> ResponseReturnValue:
    return jsonify(_door_json())


@bp.post("/door/unlock")
@admin_only
def door_unlock() -> ResponseReturnValue:
    body = json_body({"seconds": _NUMBER})
    seconds = body.get("seconds")
    low, high = UNLOCK_SECONDS
    if seconds is not None and not low <= seconds <= high:
        raise RequestInvalid("seconds", f"seconds must be from {low:g} to {high:g}")
    _door_action(lambda door: door.manual_unlock(seconds, by=current_user().name))
    audit("unlock", {"seconds": seconds, "via": "api"})
    return jsonify(_door_json())


@bp.post("/door/hold-open")
@admin_only
def door_hold_open() -> ResponseReturnValue:
    body = json_body({"until": (str,)}, required=("until",))
    text = _aware_time(body["until"], "until")
    until = datetime.fromisoformat(text) if text else None
    ahead = (until - datetime.now(UTC)).total_seconds() if until else 0.0
    if ahead <= 0:
        raise RequestInvalid("until", "until must be a time in the future")
    if ahead > MAX_HOLD_OPEN.total_seconds():
        raise RequestInvalid("until", f"until must be at most "
                                      f"{MAX_HOLD_OPEN.total_seconds() / 3600:g} hours ahead")
    # The door keeps time on the monotonic clock, which a change of wall time does not move.
    _door_action(lambda door: door.hold_open_until(time.monotonic() + ahead))
    audit("hold_open", {"until": text, "via": "api"})
    return jsonify(_door_json())


@bp.post("/door/lock")
@admin_only
def door_lock() -> ResponseReturnValue:
    json_body({})
    _door_action(lambda door: door.relock())
    audit("lock", {"via": "api"})
    return jsonify(_door_json())


def _door_action(action: Callable[[Any], object]) -> None:
    door = services().door
    if door is None:
        raise _NoDoor()
    try:
        action(door)
    except GPIOZeroError as error:
        raise _DoorFailed(str(error)) from None


class _NoDoor(Exception):
    pass


class _DoorFailed(Exception):
    pass


@bp.errorhandler(_NoDoor)
def _no_door(_exc: _NoDoor) -> ResponseReturnValue:
    return _error(503, "no door is connected to this web page")


@bp.errorhandler(_DoorFailed)
def _door_failed(error: _DoorFailed) -> ResponseReturnValue:
    current_app.logger.error("door action from the API failed: %s", error)
    return _error(503, "the door did not respond (the relay is not available)")


def _door_json() -> dict[str, Any]:
    door = services().door
    if door is None:
        raise _NoDoor()
    state = door_state(door, event_log().list(limit=10)).replace(" ", "_")
    until = getattr(door, "unlocked_until", None)
    if until is not None:
        until = _utc_text(datetime.now(UTC) + timedelta(seconds=until - time.monotonic()))
    return {"state": state, "unlocked_until": until, "open": getattr(door, "is_open", None)}


# --- People ----------------------------------------------------------------------------------

_PERSON_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "external_id": (str, _NONE),
    "active": (bool,),
    "valid_from": (str, _NONE),
    "valid_until": (str, _NONE),
    "schedule": (str, list, _NONE),
    "version": (int,),
}


@bp.get("/people")
@admin_only
def people_list() -> ResponseReturnValue:
    query = query_args(("q",)).get("q", "").strip().casefold()
    people = [person for person in gallery().list_people() if not query
              or query in person.name.casefold() or query in (person.external_id or "").casefold()]
    return jsonify(people=[_person_json(person, person.template_count) for person in people])


@bp.post("/people")
@admin_only
def people_add() -> ResponseReturnValue:
    body = json_body({key: _PERSON_FIELDS[key] for key in ("name", "external_id", "active")},
                     required=("name",))
    name = _person_name(body["name"])
    external_id = (body.get("external_id") or "").strip() or None
    if gallery().find_person(name) is not None:
        return _error(409, f"a person named {name!r} is already enrolled", field="name")
    person = gallery().add_person(name, external_id, body.get("active", True))
    audit("person_add", {"person_id": person.id, "name": person.name, "via": "api"})
    response = jsonify(_person_json(person, 0))
    response.headers["Location"] = url_for("api.person_get", person_id=person.id)
    return response, 201


@bp.get("/people/<person_id>")
@admin_only
def person_get(person_id: str) -> ResponseReturnValue:
    person = _find_person(person_id)
    return jsonify(_person_json(person, _template_count(person.id)))


@bp.patch("/people/<person_id>")
@admin_only
def person_edit(person_id: str) -> ResponseReturnValue:
    body = json_body(_PERSON_FIELDS)
    person = _find_person(person_id)
    if "version" in body and body.pop("version") != person.version:
        return _error(409, f"{person.name} was changed meanwhile (now version "
                           f"{person.version}); read them again", field="version")
    if not body:
        raise RequestInvalid(None, "nothing to change: give at least one of "
                                   + ", ".join(key for key in _PERSON_FIELDS if key != "version"))
    changes = _person_changes(body, person)
    if "name" in changes:
        other = gallery().find_person(changes["name"])
        if other is not None and other.id != person.id:
            return _error(409, f"a person named {changes['name']!r} is already enrolled",
                          field="name")
    updated = gallery().update_person(person.id, **changes)
    changed = {key: getattr(updated, key) for key in changes
               if getattr(updated, key) != getattr(person, key)}
    if changed:
        audit("person_edit", {"person_id": person.id, "name": updated.name,
                              "changed": changed, "via": "api"})
    return jsonify(_person_json(updated, _template_count(person.id)))


@bp.delete("/people/<person_id>")
@admin_only
def person_delete(person_id: str) -> ResponseReturnValue:
    """The person, their templates (and crops), and their snapshots in the access log."""
    json_body({})
    person = _find_person(person_id)
    events = event_log()
    # As the page does: the log first (a snapshot that cannot be deleted stops it with the
    # person still there), then again after the gallery, for an event recorded in between.
    erased = events.delete_person(person.id)
    removed = gallery().remove_person(person.id)
    erased += events.delete_person(person.id)
    audit("person_delete", {"person_id": person.id, "name": person.name,
                            "templates": removed, "events": erased, "via": "api"})
    return jsonify(deleted=person.id, templates_removed=removed, events_anonymised=erased)


def _find_person(person_id: str) -> Person:
    person = gallery().get_person(person_id)
    if person.id != person_id:  # get_person also takes a name; URLs carry ids only
        raise PersonNotFound(f"no person with id {person_id!r}")
    return person


def _template_count(person_id: str) -> int:
    return gallery().db.execute(
        "SELECT COUNT(*) FROM templates WHERE person_id = ?", [person_id]).fetchone()[0]


def _person_name(value: str) -> str:
    name = " ".join(value.split())
    if not name:
        raise RequestInvalid("name", "name cannot be empty")
    if len(name) > 200:
        raise RequestInvalid("name", "name is at most 200 characters")
    return name


def _person_changes(body: dict[str, Any], person: Person) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for key, value in body.items():
        if key == "name":
            changes[key] = _person_name(value)
        elif key == "external_id":
            changes[key] = (value or "").strip() or None
        elif key in ("valid_from", "valid_until"):
            changes[key] = _aware_time(value, key)
        elif key == "schedule":
            changes[key] = _schedule(value)
        else:
            changes[key] = value
    start = changes.get("valid_from", person.valid_from)
    end = changes.get("valid_until", person.valid_until)
    if start and end and datetime.fromisoformat(end) <= datetime.fromisoformat(start):
        raise RequestInvalid("valid_until", "valid_until must come after valid_from")
    return changes


def _schedule(value: str | list | None) -> str | None:
    """Schedule text (``"mon-fri 07:00-19:00; sat 08:00-12:00"``) or the stored list form
    as JSON text; None or "" for "any time"."""
    try:
        if isinstance(value, str):
            return json.dumps(schedule_from_text(value)) if value.strip() else None
        if value is None or not value:
            return None
        if not all(isinstance(window, dict) and all(isinstance(part, str)
                                                    for part in window.values())
                   for window in value):
            raise ScheduleInvalid("a schedule list holds {\"days\", \"from\", \"until\"} "
                                  "objects of strings")
        parse_schedule(value)
        return json.dumps(value)
    except ScheduleInvalid as error:
        raise RequestInvalid("schedule", str(error)) from None


def _person_json(person: Person, templates: int) -> dict[str, Any]:
    return {
        "id": person.id,
        "name": person.name,
        "external_id": person.external_id,
        "active": person.active,
        "valid_from": person.valid_from,
        "valid_until": person.valid_until,
        "schedule": schedule_text(person.schedule) or None,
        "templates": templates,
        "created_at": person.created_at,
        "updated_at": person.updated_at,
        "version": person.version,
    }


# --- Enrolment -------------------------------------------------------------------------------

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


# --- The access log --------------------------------------------------------------------------


@bp.get("/events")
def events_list() -> ResponseReturnValue:
    args = query_args(("since", "until", "kind", "person", "limit", "offset"))
    since, until = _time_arg(args, "since"), _time_arg(args, "until")
    kind = args.get("kind")
    if kind is not None and kind not in KINDS:
        raise RequestInvalid("kind", f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
    person_id = None
    if "person" in args:
        person_id = _person_filter(args["person"])
    limit = _int_arg(args, "limit", EVENTS_PAGE, EVENTS_MAX)
    offset = _int_arg(args, "offset", 0, 10**9)
    log = event_log()
    found = log.list(since, until, kind, person_id, limit=limit, offset=offset)
    total = log.count(since, until, kind, person_id)
    return jsonify(events=[_event_json(event) for event in found], total=total,
                   limit=limit, offset=offset)


@bp.get("/events/<event_id>")
def event_get(event_id: str) -> ResponseReturnValue:
    return jsonify(_event_json(event_log().get(event_id)))


@bp.get("/events/<event_id>/face.jpg")
def event_face(event_id: str) -> ResponseReturnValue:
    return _snapshot(event_id, "face_path")


@bp.get("/events/<event_id>/frame.jpg")
def event_frame(event_id: str) -> ResponseReturnValue:
    return _snapshot(event_id, "frame_path")


def _person_filter(key: str) -> str:
    """A person's id (also of someone since deleted: their events are anonymised anyway)
    or the name of someone enrolled."""
    try:
        return gallery().get_person(key).id
    except PersonNotFound:
        return key


def _snapshot(event_id: str, which: str) -> ResponseReturnValue:
    log = event_log()
    relative = getattr(log.get(event_id), which)
    if relative is None:
        return _error(404, "this event has no such snapshot (none was kept, or retention or "
                           "a deletion has removed it)")
    try:
        path = log.snapshot_file(relative)  # checked against the shape facegate makes
    except ValueError:
        return _error(404, "this event's snapshot path is not one facegate makes")
    if not path.is_file():
        return _error(404, "this event's snapshot file is gone")
    return send_file(path, mimetype="image/jpeg", max_age=0)


def _event_json(event: Event) -> dict[str, Any]:
    data = event.to_json()
    for key, endpoint in (("face_path", "api.event_face"), ("frame_path", "api.event_frame")):
        present = data.pop(key) is not None
        url_key = key.replace("_path", "_url")
        data[url_key] = url_for(endpoint, event_id=event.id) if present else None
    return data


# --- Settings --------------------------------------------------------------------------------


@bp.get("/settings")
@admin_only
def settings_get() -> ResponseReturnValue:
    return jsonify(settings=read_site_settings(database_path()), settable=sorted(SETTABLE),
                   restart_needed=sorted(RESTART_NEEDED))


@bp.patch("/settings")
@admin_only
def settings_edit() -> ResponseReturnValue:
    body = json_body({key: (int, float, str, bool, _NONE) for key in sorted(SETTABLE)})
    if not body:
        raise RequestInvalid(None, "nothing to change: send {\"dotted.key\": value}, null "
                                   "to clear one")
    config = services().config
    base = None
    if config is not None:
        base = {key: getattr(getattr(config, key.split(".")[0]), key.split(".")[1])
                for key in SETTABLE}
    changed = write_site_settings(database_path(), body, by=current_user().name, base=base)
    if changed:
        audit("settings_change", {"changed": {key: list(pair) for key, pair in changed.items()},
                                  "via": "api"})
    return jsonify(changed={key: {"old": old, "new": new} for key, (old, new) in changed.items()},
                   settings=read_site_settings(database_path()),
                   restart_needed=sorted(key for key in changed if key in RESTART_NEEDED))


# --- API tokens ------------------------------------------------------------------------------


@bp.post("/tokens")
@admin_only
def token_create() -> ResponseReturnValue:
    """A new token, shown once. Only from a signed-in session: a token cannot breed tokens."""
    if g.get("api_token_id"):
        return _error(403, "API tokens are made from a signed-in browser session, not with "
                           "another token")
    body = json_body({"name": (str,), "user": (str,)}, required=("name",))
    me = current_user()
    owner = next((user for user in list_users(database_path())
                  if user.name == body.get("user", me.name)), None)
    # Another admin's token would let this admin act in their name in the audit log.
    if owner is None or (owner.id != me.id and owner.is_admin):
        raise RequestInvalid("user", "user must be your own account or a viewer's")
    try:
        token = create_token(database_path(), owner.name, body["name"])
    except FacegateError as error:
        raise RequestInvalid("name", str(error)) from None
    made = find_token(database_path(), token)
    audit("token_create", {"token_id": made.id, "name": made.name, "for": made.user_name})
    return jsonify(token=token, **_token_json(made)), 201


@bp.get("/tokens")
@admin_only
def token_list() -> ResponseReturnValue:
    return jsonify(tokens=[_token_json(token) for token in list_tokens(database_path())])


@bp.delete("/tokens/<token_id>")
@admin_only
def token_revoke(token_id: str) -> ResponseReturnValue:
    json_body({})
    token = revoke_token(database_path(), token_id)
    audit("token_revoke", {"token_id": token.id, "name": token.name, "for": token.user_name})
    return jsonify(_token_json(token))


def _token_json(token: ApiToken) -> dict[str, Any]:
    return {"id": token.id, "name": token.name, "user": token.user_name,
            "created_at": token.created_at, "last_used_at": token.last_used_at,
            "revoked_at": token.revoked_at, "active": token.is_active}


# --- Backup and restore ----------------------------------------------------------------------


@bp.get("/backup")
@admin_only
def backup() -> ResponseReturnValue:
    """The whole database as one SQLite file, consistent while the door writes."""
    database = database_path()
    handle, name = tempfile.mkstemp(prefix=".backup-", suffix=".db", dir=database.parent)
    os.close(handle)
    try:
        backup_database(database, name)
        stream = open(name, "rb")  # send_file closes it once the download is sent
    finally:
        os.unlink(name)  # the open file lives on until the download is sent
    size = os.fstat(stream.fileno()).st_size
    audit("backup", {"bytes": size, "via": "api"})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return send_file(stream, mimetype="application/vnd.sqlite3", as_attachment=True,
                     download_name=f"facegate-{stamp}.db", max_age=0)


@bp.post("/restore")
@admin_only
def restore() -> ResponseReturnValue:
    """Replace the database with an uploaded backup (multipart field ``database``; its size
    limit, MAX_RESTORE_BYTES, is set by ``security.check_csrf`` before any form is read)."""
    query_args(())
    for name in [*request.form, *request.files]:
        if name != "database":
            raise RequestInvalid(name, f"unknown field {name!r}; send the backup as 'database'")
    upload = request.files.get("database")
    if upload is None:
        raise RequestInvalid("database", "send the backup file as the multipart field "
                                         "'database'")
    database = database_path()
    with tempfile.TemporaryDirectory(prefix=".upload-", dir=database.parent) as work:
        received = Path(work) / "upload.db"  # never the client's file name
        upload.save(received)
        result = restore_database(database, received)
    audit("restore", {**result, "kept_previous": Path(result["kept_previous"]).name,
                      "via": "api"})
    return jsonify(restored=True, schema_version=len(MIGRATIONS),
                   backup_schema_version=result["schema_version"], people=result["people"],
                   templates=result["templates"], events=result["events"],
                   kept_previous=Path(result["kept_previous"]).name)
