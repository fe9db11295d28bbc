"""The dashboard: the door's state, the live camera view, the latest events, "unlock now";
its state as JSON for the page's poll (``/dashboard/state``); and the public health check."""

from __future__ import annotations

import logging

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    url_for,
)
from gpiozero import GPIOZeroError

from device.errors import RecordUnwritable
from device.events import Event
from device.web.audit import permit
from device.web.db import event_log, gallery, services
from device.web.error_pages import sentence
from device.web.roles import admin_required, current_user
from device.web.services import DoorControl

log = logging.getLogger(__name__)

bp = Blueprint("dashboard", __name__)

RECENT_EVENTS = 10
# What the door itself did (as opposed to a face decision), newest first, tells an open,
# locked door that was forced from one held open after a grant.
_DOOR_KINDS = ("forced_open", "held_open", "door_closed", "granted", "exit_button",
               "manual_unlock")
# A camera whose newest frame is older than this is down (the loop publishes every frame it
# decides on, several a second).
CAMERA_DOWN_SECONDS = 3.0


@bp.route("/")
def index() -> str:
    events = event_log().list(limit=RECENT_EVENTS)
    door = services().door
    return render_template("dashboard.html", events=events, door=door,
                           door_state=door_state(door, events),
                           has_live=services().live is not None, camera=camera_state(),
                           site=site_membership())


def site_membership() -> dict | None:
    """For a member door: its site, and how old its copy of the site's gallery is (the
    door decides from that copy alone); None for a door on its own."""
    from device.site.replica import read_state

    config = services().config
    if config is None or not config.site.is_member:
        return None
    state = read_state(gallery())
    age = state.age_seconds()
    return {"url": config.site.url, "seq": state.seq,
            "age": None if age is None else _duration_words(age),
            "stale": age is None or (config.site.max_replica_age_seconds > 0
                                     and age > config.site.max_replica_age_seconds),
            "policy": config.site.when_stale}


def _duration_words(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} seconds"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.1f} days"


@bp.route("/dashboard/state")
def state() -> Response:
    """What the dashboard polls every 2 s: ``door`` (as :func:`door_state`), ``contact``
    ("open", "closed" or None without a contact), ``camera`` (:func:`camera_state`),
    ``latest`` (the newest event's id, None when there is none) and ``events_html`` (the
    latest events' list items, rendered as the page renders them)."""
    events = event_log().list(limit=RECENT_EVENTS)
    door = services().door
    is_open = getattr(door, "is_open", None) if door is not None else None
    return jsonify(door=door_state(door, events),
                   contact=None if is_open is None else ("open" if is_open else "closed"),
                   camera=camera_state(), latest=events[0].id if events else None,
                   events_html=render_template("_recent_events.html", events=events))


@bp.route("/live.jpg")
def live_jpeg() -> Response:
    """The newest camera frame with faces boxed; 503 while there is none (the page shows a
    placeholder), 404 when no camera is connected to the page."""
    live = services().live
    if live is None:
        return Response("no live view", 404, mimetype="text/plain")
    jpeg = live.latest_jpeg()
    if not jpeg:
        return Response("no frame yet", 503, mimetype="text/plain")
    return Response(jpeg, mimetype="image/jpeg")


@bp.route("/unlock", methods=["POST"])
@admin_required
def unlock() -> Response:
    door = services().door
    if door is None:
        flash("No door is connected to this page.", "error")
        return redirect(url_for("dashboard.index"))
    user = current_user()
    try:
        permit("unlock")  # on record first: only then may the relay open
    except RecordUnwritable as error:
        abort(503, description=sentence(str(error)))
    try:
        door.manual_unlock(by=user.name if user else None)
    except GPIOZeroError as error:
        log.error("manual unlock failed: %s", error)
        flash("The door could not be unlocked (the relay is not available).", "error")
        return redirect(url_for("dashboard.index"))
    flash("Door unlocked.", "info")
    return redirect(url_for("dashboard.index"))


@bp.route("/health")
def health() -> Response:
    return jsonify(status="ok")


def camera_state() -> str:
    """``up`` while the camera delivers frames, ``down`` when its newest frame is older than
    CAMERA_DOWN_SECONDS or none came yet, ``none`` when no camera is connected to the page."""
    live = services().live
    if live is None:
        return "none"
    age = getattr(live, "frame_age_seconds", 0.0)
    return "up" if age is not None and age <= CAMERA_DOWN_SECONDS else "down"


def door_state(door: DoorControl | None, events: list[Event]) -> str:
    """``locked``, ``unlocked``, ``held open`` or ``forced`` (``unknown`` with no door)."""
    if door is None:
        return "unknown"
    state = door.state
    if state == "held_open":
        return "held open"
    if state != "locked" or not getattr(door, "is_open", None):
        return state
    last = next((event.kind for event in events if event.kind in _DOOR_KINDS), None)
    return {"forced_open": "forced", "held_open": "held open"}.get(last, "locked")
