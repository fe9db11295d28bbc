"""People: search and list, add, edit (name, external id, active, validity, weekly schedule),
delete with everything that is theirs, their face thumbnails, and removing one face template
enrolled by mistake (:mod:`device.templates`). Admins only."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)

from device import templates
from device.daemon.access import ScheduleInvalid, door_time, schedule_from_text
from device.errors import FacegateError, PersonNotFound, TemplateNotFound
from device.gallery.store import Person
from device.web.audit import audit
from device.web.db import event_log, gallery
from device.web.error_pages import sentence
from device.web.pending import PendingPhotos
from device.web.roles import admin_required, current_user
from device.web.words import plural

bp = Blueprint("people", __name__)

_EDITABLE = ("name", "external_id", "active", "valid_from", "valid_until", "schedule")


@bp.route("/people")
@admin_required
def index() -> str:
    query = request.args.get("q", "").strip()
    people = gallery().list_people()
    if query:
        needle = query.casefold()
        people = [p for p in people
                  if needle in p.name.casefold() or needle in (p.external_id or "").casefold()]
    with_crops = _people_with_crops()
    return render_template("people.html", people=people, q=query, with_crops=with_crops)


@bp.route("/people/new", methods=["GET", "POST"])
@admin_required
def new() -> str | Response | tuple[str, int]:
    if request.method == "GET":
        return render_template("person_new.html", form={}, errors={})
    name = request.form.get("name", "")
    external_id = request.form.get("external_id", "").strip() or None
    try:
        person = gallery().add_person(name, external_id)
    except (FacegateError, ValueError) as error:
        return render_template("person_new.html", form=request.form,
                               errors={"name": sentence(str(error))}), 400
    audit("person_add", {"person_id": person.id, "name": person.name})
    flash(f"{person.name} added. Now enrol their face.", "info")
    return redirect(url_for("people.show", person_id=person.id))


@bp.route("/people/<person_id>")
@admin_required
def show(person_id: str) -> str:
    return render_person(find(person_id))


@bp.route("/people/<person_id>", methods=["POST"])
@admin_required
def edit(person_id: str) -> str | Response | tuple[str, int]:
    person = find(person_id)
    changes, errors = parse_person_form(request.form)
    if str(person.version) != request.form.get("version", str(person.version)):
        errors["form"] = ("Someone changed this person while you were editing; your changes "
                          "were not saved. Check the page and try again.")
    if errors:
        return render_person(person, form=request.form, errors=errors, status=400)
    try:
        updated = gallery().update_person(person.id, **changes)
    except (FacegateError, ValueError) as error:
        return render_person(person, form=request.form,
                             errors={"name": sentence(str(error))}, status=400)
    changed = {key: getattr(updated, key) for key in _EDITABLE
               if getattr(updated, key) != getattr(person, key)}
    if changed:
        audit("person_edit", {"person_id": person.id, "name": updated.name, "changed": changed})
        flash("Saved.", "info")
    return redirect(url_for("people.show", person_id=person.id))


@bp.route("/people/<person_id>/delete", methods=["GET", "POST"])
@admin_required
def delete(person_id: str) -> str | Response:
    person = find(person_id)
    if request.method == "GET":
        return render_template("person_delete.html", person=person,
                               templates=len(templates.templates_of(gallery(), person.id)),
                               events=event_log().count(person_id=person.id))
    events = event_log()
    # The access log first: if some snapshot cannot be deleted, the person is still here
    # and the admin can try again. Then once more after the gallery, for an event the door
    # recorded in between.
    erased = events.delete_person(person.id)
    removed = gallery().remove_person(person.id)
    erased += events.delete_person(person.id)
    PendingPhotos(current_app.config["PENDING_DIR"]).discard_person(person.id)
    audit("person_delete", {"person_id": person.id, "name": person.name,
                            "templates": removed, "events": erased})
    flash(f"{person.name} deleted, with {plural(removed, 'face template')} and the snapshots "
          f"of {plural(erased, 'event')}.", "info")
    return redirect(url_for("people.index"))


@bp.route("/people/<person_id>/face.jpg")
@admin_required
def face(person_id: str) -> Response:
    """The person's latest stored face crop (their thumbnail)."""
    row = gallery().db.execute(
        "SELECT crop_jpeg FROM templates WHERE person_id = ? AND crop_jpeg IS NOT NULL"
        " ORDER BY created_at DESC, id LIMIT 1", [person_id]).fetchone()
    if row is None:
        abort(404)
    return Response(row[0], mimetype="image/jpeg")


@bp.route("/templates/<template_id>/crop.jpg")
@admin_required
def crop(template_id: str) -> Response:
    try:
        return Response(templates.crop_of(gallery(), template_id), mimetype="image/jpeg")
    except TemplateNotFound:
        abort(404)


@bp.route("/templates/<template_id>/remove", methods=["GET", "POST"])
@admin_required
def remove_template(template_id: str) -> str | Response:
    """Remove one face template after a confirmation: the person page's Remove button posts
    here without ``confirm`` and gets the confirmation page; that page posts ``confirm``."""
    try:
        template = templates.get_template(gallery(), template_id)
    except TemplateNotFound:
        abort(404, description="No such face template (it may have been removed already).")
    person = find(template.person_id)
    if request.method == "GET" or request.form.get("confirm") != "1":
        return render_template("template_remove.html", person=person,
                               template=templates.template_json(template),
                               others=len(templates.templates_of(gallery(), person.id)) - 1)
    user = current_user()
    try:
        templates.remove_template(gallery(), template_id, user=user.name if user else None,
                                  address=request.remote_addr)
    except TemplateNotFound:
        flash("That face template was already removed.", "info")
    else:
        flash(f"Face template removed from {person.name}.", "info")
    return redirect(url_for("people.show", person_id=person.id))


# --- Shared with the enrolment pages --------------------------------------------------------


def find(person_id: str) -> Person:
    """The person with that id, or a 404 page."""
    try:
        person = gallery().get_person(person_id)
    except PersonNotFound:
        abort(404, description="No such person (they may have been deleted).")
    if person.id != person_id:  # get_person also takes a name; URLs carry ids only
        abort(404, description="No such person (they may have been deleted).")
    return person


def render_person(person: Person, *, form: Any = None, errors: dict[str, str] | None = None,
                  status: int = 200, **extra: Any) -> tuple[str, int]:
    """The person page; ``extra`` carries enrolment results and held-back duplicates."""
    values = form if form is not None else person_form_values(person)
    page = render_template("person.html", person=person, form=values, errors=errors or {},
                           templates=[templates.template_json(template) for template
                                      in templates.templates_of(gallery(), person.id)],
                           **extra)
    return page, status


def person_form_values(person: Person) -> dict[str, Any]:
    return {
        "name": person.name,
        "external_id": person.external_id or "",
        "active": "on" if person.active else "",
        "valid_from": _local_input(person.valid_from),
        "valid_until": _local_input(person.valid_until),
        "schedule": schedule_text(person.schedule),
        "version": person.version,
    }


def parse_person_form(form: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The edit form as ``update_person`` fields, and the errors by field name."""
    changes: dict[str, Any] = {}
    errors: dict[str, str] = {}
    if not " ".join(form.get("name", "").split()):
        errors["name"] = "A name is needed."
    else:
        changes["name"] = form["name"]
    changes["external_id"] = form.get("external_id", "").strip() or None
    changes["active"] = form.get("active") in ("on", "1", "true")
    for key in ("valid_from", "valid_until"):
        try:
            changes[key] = door_time(form.get(key, ""), end_of_day=key == "valid_until")
        except ValueError:
            errors[key] = "Give a date and time such as 2025-01-31 08:00, or leave it empty."
    start, end = changes.get("valid_from"), changes.get("valid_until")
    if start and end and end <= start:
        errors["valid_until"] = "The end of the validity must come after its start."
    text = form.get("schedule", "").strip()
    try:
        changes["schedule"] = json.dumps(schedule_from_text(text)) if text else None
    except ScheduleInvalid as error:
        errors["schedule"] = sentence(str(error))
    return changes, errors


def schedule_text(stored: str | None) -> str:
    """Stored schedule JSON in the form's words: ``mon-fri 07:00-19:00; sat 08:00-12:00``."""
    if not stored:
        return ""
    try:
        windows = json.loads(stored)
        return "; ".join(f"{w['days']} {w['from']}-{w['until']}" for w in windows)
    except (ValueError, TypeError, KeyError):
        return stored


def _local_input(stored: str | None) -> str:
    """UTC text from the gallery as the door's local time for ``datetime-local``."""
    if not stored:
        return ""
    return datetime.fromisoformat(stored).astimezone().strftime("%Y-%m-%dT%H:%M")


def _people_with_crops() -> set[str]:
    rows = gallery().db.execute(
        "SELECT DISTINCT person_id FROM templates WHERE crop_jpeg IS NOT NULL").fetchall()
    return {row[0] for row in rows}
