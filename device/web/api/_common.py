"""The API's one blueprint and what its endpoints share: who is calling, errors as JSON,
and reading a request's query string and body."""

from __future__ import annotations

import functools
import reprlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from flask import Blueprint, Response, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import RequestEntityTooLarge

from device.daemon.access import door_time
from device.errors import (
    EventNotFound,
    FacegateError,
    NameInvalid,
    PersonNotFound,
    RequestInvalid,
    RestoreRefused,
    SettingInvalid,
    TimeUnreadable,
    TokenNotFound,
)
from device.events import parse_since
from device.web.db import database_path
from device.web.roles import current_user
from device.web.tokens import authenticate

bp = Blueprint("api", __name__, url_prefix="/api")

View = TypeVar("View", bound=Callable[..., Any])


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


@bp.errorhandler(NameInvalid)
def _name_invalid(error: NameInvalid) -> ResponseReturnValue:
    return _error(400, str(error), field=error.field)


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
        try:
            data = request.get_json(silent=True)
        except RecursionError:  # json.loads recurses per level: "[[[[..." a thousand deep
            raise RequestInvalid(None, "the body nests JSON too deeply to read") from None
        if data is None:
            raise RequestInvalid(None, "the body must be JSON, sent with "
                                       "Content-Type: application/json")
    if not isinstance(data, dict):
        raise RequestInvalid(None, "the body must be a JSON object ({...})")
    for name in data:
        if name not in fields:
            allowed = ", ".join(fields) or "no fields"
            raise RequestInvalid(name, f"unknown field {reprlib.repr(name)}; this request takes "
                                       f"{allowed}")
    for name in required:
        if name not in data:
            raise RequestInvalid(name, f"the field {reprlib.repr(name)} is missing")
    for name, value in data.items():
        kinds = fields[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            wanted = " or ".join(dict.fromkeys(_TYPE_NAMES[kind] for kind in kinds))
            raise RequestInvalid(name, f"{reprlib.repr(name)} must be {wanted}, not "
                                       f"{_TYPE_NAMES.get(type(value), type(value).__name__)}")
    return data


def query_args(allowed: tuple[str, ...]) -> dict[str, str]:
    """The query string, refusing a parameter not in ``allowed`` (naming it)."""
    for name in request.args:
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise RequestInvalid(name, f"unknown query parameter {reprlib.repr(name)}; known: "
                                       f"{known}")
    return {name: request.args[name] for name in allowed if name in request.args}


def _int_arg(args: Mapping[str, str], name: str, default: int, high: int) -> int:
    text = args.get(name)
    if text is None:
        return default
    # isdigit() alone passes '²', and int() refuses 4,300 digits: both were a 500
    number = int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else -1
    if not 0 <= number <= high:
        raise RequestInvalid(name, f"{name} must be a whole number from 0 to {high}")
    return number


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
    try:
        when = door_time(value, end_of_day=name == "valid_until")
        return None if when is None else _utc_text(when)
    except (ValueError, OverflowError):  # not ISO, or beyond year 1..9999 once in UTC
        raise RequestInvalid(name, f"{name} must be an ISO date or time from the years 1 to "
                                   f"9999, such as 2026-01-31 or 2026-01-31T18:00+01:00, not "
                                   f"{reprlib.repr(value)}") from None


def _utc_text(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
