"""``/api/events``: the access log, and the snapshots kept with its events."""

from __future__ import annotations

import reprlib
from typing import Any

from flask import jsonify, send_file, url_for
from flask.typing import ResponseReturnValue

from device.errors import PersonNotFound, RequestInvalid
from device.events import KINDS, Event
from device.web.api._common import _error, _int_arg, _time_arg, bp, query_args
from device.web.db import event_log, gallery

EVENTS_PAGE = 50
EVENTS_MAX = 500


@bp.get("/events")
def events_list() -> ResponseReturnValue:
    args = query_args(("since", "until", "kind", "person", "limit", "offset"))
    since, until = _time_arg(args, "since"), _time_arg(args, "until")
    kind = args.get("kind")
    if kind is not None and kind not in KINDS:
        raise RequestInvalid("kind", f"unknown kind {reprlib.repr(kind)}; kinds are "
                                     f"{', '.join(KINDS)}")
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
