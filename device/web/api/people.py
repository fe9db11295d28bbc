"""``/api/people`` and ``/api/people/<id>``: list, add, read, edit and delete the people
enrolled."""

from __future__ import annotations

import json
import reprlib
from datetime import datetime
from typing import Any

from flask import jsonify, url_for
from flask.typing import ResponseReturnValue

from device.daemon.access import ScheduleInvalid, parse_schedule, schedule_from_text
from device.errors import PersonNotFound, RequestInvalid
from device.gallery.names import clean_name
from device.gallery.store import Person
from device.web.api._common import _NONE, _aware_time, _error, admin_only, bp, json_body, query_args
from device.web.audit import audit
from device.web.db import event_log, gallery
from device.web.people import schedule_text

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
    external_id = body.get("external_id")
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
        raise PersonNotFound(f"no person with id {reprlib.repr(person_id)}")
    return person


def _template_count(person_id: str) -> int:
    return gallery().db.execute(
        "SELECT COUNT(*) FROM templates WHERE person_id = ?", [person_id]).fetchone()[0]


def _person_name(value: str) -> str:
    return clean_name(value, what="a person's name")  # the store's rule, checked early


def _person_changes(body: dict[str, Any], person: Person) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for key, value in body.items():
        if key == "name":
            changes[key] = _person_name(value)
        elif key == "external_id":
            changes[key] = value  # the store's rule: blank is None
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
