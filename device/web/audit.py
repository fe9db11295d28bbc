"""The audit log on the page (``/audit``) and the request's side of writing to it.

The log itself (table, actions, writing outside a request) is :mod:`device.audit`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, has_request_context, render_template, request

from device.audit import list_audit, record
from device.web.roles import admin_required, current_user

__all__ = ["audit", "bp", "list_audit", "record"]

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


@bp.route("/audit")
@admin_required
def audit_page() -> str:
    number = max(request.args.get("page", 1, type=int) or 1, 1)
    rows = list_audit(current_app.config["DATABASE"], PAGE_SIZE + 1, (number - 1) * PAGE_SIZE)
    return render_template("audit.html", rows=rows[:PAGE_SIZE], page=number,
                           more=len(rows) > PAGE_SIZE)
