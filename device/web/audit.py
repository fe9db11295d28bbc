"""The audit log on the page (``/audit``) and the request's side of writing to it.

The log itself (table, actions, writing outside a request) is :mod:`device.audit`.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    has_request_context,
    render_template,
    request,
)

from device.audit import list_audit, record
from device.errors import RecordUnwritable
from device.gallery.engines import DATABASE_ERRORS
from device.web.log import page_number
from device.web.roles import admin_required, current_user

__all__ = ["audit", "audit_after", "bp", "list_audit", "permit", "record"]

bp = Blueprint("audit", __name__)

PAGE_SIZE = 100


def audit(action: str, detail: dict[str, Any] | None = None, user: str | None = None) -> str:
    """Write one audit row for the current request: ``user`` defaults to the signed-in
    account's name, the address is the client's."""
    address = None
    if has_request_context():
        address = request.remote_addr
        if user is None and (account := current_user()) is not None:
            user = account.name
    return record(current_app.config["DATABASE"], action, detail, user, address)


def permit(action: str, detail: dict[str, Any] | None = None) -> str:
    """Write the audit row that permits a door action, before the door acts: a door that
    opened must be on record. Raises :class:`RecordUnwritable` (the caller leaves the door
    locked) when the row cannot be written: a full disk, a locked or read-only file."""
    try:
        return audit(action, detail)
    except (*DATABASE_ERRORS, OSError) as error:
        current_app.logger.error("%s refused: its audit row could not be written (%s)",
                                 action, error)
        raise RecordUnwritable(
            "the door was not unlocked because the record of it could not be written (is "
            "the door's disk full?); free some space and try again") from None


def audit_after(action: str, detail: dict[str, Any] | None = None,
                user: str | None = None) -> str | None:
    """:func:`audit` for what has already happened (a lock, a sign-in, a refusal): a row
    that cannot be written is logged, and the answer stays the one the action deserves."""
    try:
        return audit(action, detail, user)
    except (*DATABASE_ERRORS, OSError) as error:
        current_app.logger.error("audit row %s not written: %s (detail %s, user %s)", action,
                                 error, detail, user)
        return None


@bp.route("/audit")
@admin_required
def audit_page() -> str:
    errors: dict[str, str] = {}
    number = page_number(request.args.get("page"), errors)
    if errors:
        abort(400, description=errors["page"])
    rows = list_audit(current_app.config["DATABASE"], PAGE_SIZE + 1, (number - 1) * PAGE_SIZE)
    return render_template("audit.html", rows=rows[:PAGE_SIZE], page=number,
                           more=len(rows) > PAGE_SIZE)
