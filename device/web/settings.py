"""The settings page: the keys of ``device.site_settings.SETTABLE``, checked by the
configuration's own rules, stored in the gallery's file, audited. Admins only.

A blank field means "not set here": the configuration file's value (or the default) applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from device.config import Config
from device.errors import FacegateError, SettingInvalid
from device.identification import Decision, embedder_name
from device.liveness import LivenessCheck, LivenessSettings, liveness_loader
from device.site_settings import (
    RESTART_NEEDED,
    SETTABLE,
    read_site_settings,
    write_site_settings,
)
from device.vision.models import load_card
from device.web.audit import audit
from device.web.db import database_path, gallery, services
from device.web.error_pages import sentence
from device.web.roles import admin_required, current_user
from device.web.words import plural

bp = Blueprint("settings", __name__)


@dataclass(frozen=True)
class Field:
    """One setting as the page shows it: ``help`` says what it does for the door, in a
    site admin's words; ``measured`` (shown behind "How this was measured") the numbers."""

    key: str
    label: str
    help: str
    step: str = "any"  # for number inputs; "" for text
    # A select of (value, label) instead of an input; the first, "", is "not set here".
    choices: tuple[tuple[str, str], ...] = ()
    measured: str = ""


ON_OFF = (("", "not set here"), ("true", "on"), ("false", "off"))


FIELDS = (
    Field("recognition.threshold", "How strict the face match is",
          "How alike a face must be to someone enrolled before the door opens for them. "
          "Stricter: fewer strangers let in, staff turned away more often in poor light or "
          "at an angle. Looser: the reverse.", "0.001",
          measured="A similarity from -1 to 1 between the face seen and the enrolled "
                   "photos (the cosine of their face embeddings)."),
    Field("recognition.margin", "How clearly it must be one person",
          "How much more the face must look like one enrolled person than like the next "
          "most alike, so that two similar-looking people are not mixed up. Higher: fewer "
          "mix-ups, more people asked to look at the camera again.", "0.001",
          measured="The best person's similarity minus the next one's, from 0 to 2."),
    Field("recognition.votes_needed", "Frames that must agree",
          "How many camera frames must recognise the person before the door opens. More: "
          "fewer chance openings, a little slower (the camera takes about 15 a second).", "1"),
    Field("recognition.votes_window", "Out of the last frames",
          "... among this many frames in a row. A larger number forgives a frame lost to a "
          "blink or a quick movement.", "1"),
    Field("recognition.cooldown_seconds", "Quiet time after a grant (seconds)",
          "After someone is let in, the same person is not logged again for this long while "
          "they are still in front of the camera."),
    Field("door.unlock_seconds", "Unlock time (seconds)",
          "How long the door stays unlocked after a face is accepted, the exit button or "
          "'Unlock now' (0.5 to 60 seconds)."),
    Field("door.held_open_seconds", "Held-open alarm (seconds)",
          "How long the door may stand open before the page and the log say 'held open' "
          "(1 to 3600 seconds)."),
    Field("events.max_age_days", "Keep events for (days)",
          "Events older than this are deleted with their pictures.", "1"),
    Field("events.max_events", "Keep at most (events)",
          "Only this many of the newest events are kept.", "1"),
    Field("events.max_snapshot_mb", "Space for pictures (MB)",
          "Disk space for the log's pictures; the oldest go first beyond it (0: keep no "
          "pictures).", "1"),
    Field("events.min_free_mb", "Keep free on disk (MB)",
          "When the disk has less free space than this, no pictures are kept (the events "
          "still are).", "1"),
    Field("camera.source", "Camera",
          "Which camera watches the door: \"auto\" finds it; or a number (0: the first USB "
          "camera), a device such as /dev/video0, a video file or a stream URL.", ""),
    Field("liveness.enabled", "Photo and screen check",
          "Checks that the face is a real person, not a printed photo or a phone screen held "
          "up to the camera. Off: a photo of a member of staff can open the door.",
          choices=ON_OFF),
    Field("liveness.threshold", "How strict the photo check is",
          "How sure the check must be that a face is real. Stricter: more photos and screens "
          "stopped, real people refused more often in poor light.", "0.01",
          measured="A score from 0 to 1 that the liveness model gives each face; a face "
                   "counts as real when its score reaches this value."),
    Field("liveness.votes_needed", "Frames that must look real",
          "How many of the same last frames (above) must look like a real face, besides "
          "recognising the person, before the door opens.", "1"),
    Field("liveness.motion_cue", "Wait for a movement",
          "Also wait for a blink or a head turn before opening. It can only refuse, never "
          "let a photo in; someone who keeps still waits, so it is off unless you ask for it.",
          choices=(("", "not set here"), ("off", "off"), ("blink", "a blink"),
                   ("head_turn", "a head turn"), ("either", "a blink or a head turn"))),
)
assert {field.key for field in FIELDS} == SETTABLE


@bp.route("/settings", methods=["GET", "POST"])
@admin_required
def index() -> str | Response | tuple[str, int]:
    if request.method == "GET":
        return _page(read_site_settings(database_path()), {})
    changes = {key: request.form.get(key, "") for key in SETTABLE if key in request.form}
    try:
        changed = write_site_settings(database_path(), changes, current_user().name,
                                      base=base_values())
    except SettingInvalid as error:
        return _page(request.form, {error.key: sentence(str(error))}, status=400)
    except FacegateError as error:  # a ConfigError without a key
        return _page(request.form, {"form": sentence(str(error))}, status=400)
    if changed:
        audit("settings_change", {key: list(values) for key, values in changed.items()})
        flash("Settings saved.", "info")
        if RESTART_NEEDED & set(changed):
            flash("The camera change takes effect after a restart of the door daemon.", "info")
    else:
        flash("Nothing changed.", "info")
    return redirect(url_for("settings.index"))


def base_values() -> dict[str, Any]:
    """The values in force without the site settings: the daemon's config, or the defaults."""
    config = services().config or Config()
    values = {}
    for key in SETTABLE:
        section, name = key.split(".")
        values[key] = getattr(getattr(config, section), name)
    return values


def models_dir() -> Path | None:
    """Where the door's model cards are (None: the default folder)."""
    svc = services()
    return svc.models_dir or (svc.config.recognition.models_dir if svc.config else None)


def card_threshold() -> dict[str, Any]:
    """The embedder card's ``threshold`` and ``verification_threshold`` (empty when the
    card cannot be read)."""
    config = services().config
    try:
        name = embedder_name(gallery(), (config.recognition.model if config else "") or None)
        card = load_card(name, models_dir()).card
    except (FacegateError, OSError, ValueError):
        return {}
    people = gallery().counts()["people"]
    curve = Decision.from_card(card.get("threshold", {"score": 0.0}))
    return {"name": name, "open_set": card.get("threshold", {}),
            "verification": card.get("verification_threshold", {}),
            "people": people, "in_force": round(curve.threshold_for(people), 3)}


def liveness_card() -> dict[str, Any]:
    """The liveness model's name and its card's threshold and live frames (the values a blank
    field gives); empty when the model cannot be loaded."""
    svc = services()
    check = LivenessCheck(svc.liveness_factory or liveness_loader(models_dir()),
                          LivenessSettings.from_config((svc.config or Config()).liveness))
    try:
        model = check.require()
    except FacegateError:
        return {}
    return {"name": model.name, "liveness.threshold": model.threshold,
            "liveness.votes_needed": model.votes_needed}


def _shown(value: Any) -> str:
    """A value as its form field holds it (a boolean as the select's "true" or "false")."""
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _defaults(base: dict[str, Any], known: dict[str, Any]) -> dict[str, str]:
    """What applies with a field blank, as the page says it: the file's value or the
    default, else the model's own value from its card (with the number where the page
    knows it)."""
    texts = {}
    for field in FIELDS:
        value = base[field.key]
        if value is None:
            number = known.get(field.key)
            texts[field.key] = "the model's own value" + (f" ({number:g})" if number is not None
                                                          else "")
        elif field.choices:
            texts[field.key] = dict(field.choices).get(_shown(value), _shown(value))
        else:
            texts[field.key] = str(value)
    return texts


def _page(values: Any, errors: dict[str, str], status: int = 200) -> tuple[str, int]:
    shown = {key: _shown(values.get(key)) for key in SETTABLE}
    base, liveness, card = base_values(), liveness_card(), card_threshold()
    known = {**liveness, "recognition.threshold": card.get("in_force")}
    return render_template("settings.html", fields=FIELDS, values=shown, errors=errors,
                           defaults=_defaults(base, known), card=card,
                           liveness=liveness, restart=RESTART_NEEDED), status


# --- restore (the backup download is the API's GET /api/backup, which a session may call) ----

@bp.route("/restore", methods=["POST"])
@admin_required
def restore() -> Response | tuple[str, int]:
    """Replace the database with an uploaded backup, after checking it (nothing changes if
    the check fails). The upload's name is never used: it is saved under a name of ours."""
    import tempfile

    from device.backup import refuse_site_store, restore_database
    from device.errors import RestoreRefused

    upload = request.files.get("database")
    if upload is None or not upload.filename:
        flash("Choose a backup file (facegate-....db) to restore.", "error")
        return redirect(url_for("settings.index"))
    try:
        refuse_site_store(database_path())
    except RestoreRefused as exc:
        flash(f"Not restored: {exc}", "error")
        return redirect(url_for("settings.index"))
    with tempfile.TemporaryDirectory(dir=database_path().parent) as scratch:
        saved = Path(scratch) / "upload.db"
        upload.save(saved)
        try:
            result = restore_database(database_path(), saved, models_dir=models_dir())
        except RestoreRefused as exc:
            flash(f"Not restored: {exc}", "error")
            return redirect(url_for("settings.index"))
    audit("restore", {k: result[k] for k in ("people", "templates", "events") if k in result})
    flash(f"Restored: {plural(result.get('people', 0), 'person', 'people')}, "
          f"{plural(result.get('templates', 0), 'template')}, "
          f"{plural(result.get('events', 0), 'event')}. The previous database is kept as "
          f"{Path(result.get('kept_previous', '')).name}.", "info")
    return redirect(url_for("settings.index"))
