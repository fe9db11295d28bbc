"""``/api/health`` and ``/api/door``: whether the page is up, and the door's state and
manual control."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app, jsonify
from flask.typing import ResponseReturnValue
from gpiozero import GPIOZeroError

from device.errors import RecordUnwritable, RequestInvalid
from device.web.api._common import (
    _NUMBER,
    _aware_time,
    _error,
    _utc_text,
    admin_only,
    bp,
    json_body,
)
from device.web.audit import audit_after, permit
from device.web.dashboard import door_state
from device.web.db import event_log, gallery, services
from device.web.roles import current_user

UNLOCK_SECONDS = (0.5, 60.0)  # the range the configuration allows for door.unlock_seconds
MAX_HOLD_OPEN = timedelta(hours=24)  # an unattended door is not held open for days


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
    _connected_door()
    permit("unlock", {"seconds": seconds, "via": "api"})  # on record first, then it opens
    _door_action(lambda door: door.manual_unlock(seconds, by=current_user().name))
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
    _connected_door()
    permit("hold_open", {"until": text, "via": "api"})
    # The door keeps time on the monotonic clock, which a change of wall time does not move.
    _door_action(lambda door: door.hold_open_until(time.monotonic() + ahead))
    return jsonify(_door_json())


@bp.post("/door/lock")
@admin_only
def door_lock() -> ResponseReturnValue:
    json_body({})
    _door_action(lambda door: door.relock())
    audit_after("lock", {"via": "api"})  # locking is never refused for want of a record
    return jsonify(_door_json())


def _connected_door() -> Any:
    door = services().door
    if door is None:
        raise _NoDoor()
    return door


def _door_action(action: Callable[[Any], object]) -> None:
    door = _connected_door()
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


@bp.errorhandler(RecordUnwritable)
def _record_unwritable(error: RecordUnwritable) -> ResponseReturnValue:
    return _error(503, str(error))


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
