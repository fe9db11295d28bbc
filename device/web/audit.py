"""The audit log: who did what on the admin page, when, and from which address.

Rows go to the ``audit_log`` table of the gallery's file and are never edited. ``detail`` is
JSON for the particulars (a person's name, the settings changed); never put a password or a
token in it. Actions written here: ``sign_in``, ``sign_in_failed``, ``sign_in_throttled``,
``sign_out``, ``first_admin``, ``person_add``, ``person_edit``, ``person_delete``, ``enrol``,
``enrol_duplicate_confirmed``, ``unlock``, ``settings_change``; the API and backup modules
add theirs (``backup``, ``restore``, ...).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, has_request_context, render_template, request

from device.gallery.migrations import write_transaction
from device.gallery.store import Gallery
from device.web.roles import admin_required, current_user

bp = Blueprint("audit", __name__)

PAGE_SIZE = 100


def record(db_path: str | Path, action: str, detail: dict[str, Any] | None = None,
           user: str | None = None, address: str | None = None) -> str:
    """Write one audit row outside a request (the CLI, the daemon); return its id."""
    row_id = str(uuid.uuid4())
    at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    with Gallery(db_path) as gallery, write_transaction(gallery.db):
        gallery.db.execute(
            "INSERT INTO audit_log (id, at, user, action, detail, address)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [row_id, at, user, action, json.dumps(detail or {}, default=str), address],
        )
    return row_id


def audit(action: str, detail: dict[str, Any] | None = None, user: str | None = None) -> str:
    """Write one audit row for the current request: ``user`` defaults to the signed-in
    account's name, the address is the client's."""
    address = None
    if has_request_context():
        address = request.remote_addr
        if user is None and (account := current_user()) is not None:
            user = account.name
    return record(current_app.config["DATABASE"], action, detail, user, address)


def list_audit(db_path: str | Path, limit: int = PAGE_SIZE, offset: int = 0
               ) -> list[dict[str, Any]]:
    """Audit rows newest first, each with ``detail`` parsed."""
    with Gallery(db_path) as gallery:
        rows = gallery.db.query(
            "SELECT id, at, user, action, detail, address FROM audit_log"
            " ORDER BY at DESC, rowid DESC LIMIT ? OFFSET ?", [limit, offset])
        return [{**row, "detail": json.loads(row["detail"] or "{}")} for row in rows]


@bp.route("/audit")
@admin_required
def audit_page() -> str:
    number = max(request.args.get("page", 1, type=int) or 1, 1)
    rows = list_audit(current_app.config["DATABASE"], PAGE_SIZE + 1, (number - 1) * PAGE_SIZE)
    return render_template("audit.html", rows=rows[:PAGE_SIZE], page=number,
                           more=len(rows) > PAGE_SIZE)
