"""The audit log: who did what to the gallery, the accounts and the door, when, and from where.

Rows go to the ``audit_log`` table of the gallery's file and are never edited. ``detail`` is
JSON for the particulars (a person's name, the settings changed); never put a password or a
token in it. Every front writes here through the services (the CLI as ``user`` "cli:<login>",
the page and the API as the signed-in account), so an enrolment is on record whichever front
made it. Actions: ``sign_in``, ``sign_in_failed``, ``sign_in_throttled``, ``sign_out``,
``first_admin``, ``person_add``, ``person_edit``, ``person_delete``, ``enrol``,
``enrol_refused``, ``enrol_forced``, ``template_remove``, ``reembed``, ``unlock`` (from the
page, the API, or an MQTT command: user ``mqtt``, ``"via": "mqtt"``), ``lock``,
``command_refused`` (an MQTT command the door refused, with the reason),
``settings_change``, ``backup``, ``restore``, ``user_add``, ``user_remove``,
``user_password`` (an admin or the CLI set a new password), ``user_disable``,
``user_enable``, ``user_role``, ``password_change`` (an account changed its own),
``password_change_refused`` and ``password_change_throttled``, ``token_*``.
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from device.gallery.engines import insertion_order, time_ordered_id
from device.gallery.migrations import write_transaction
from device.gallery.store import Gallery


def record(db_path: str | Path, action: str, detail: dict[str, Any] | None = None,
           user: str | None = None, address: str | None = None) -> str:
    """Write one audit row; return its id."""
    with Gallery(db_path) as gallery:
        return record_in(gallery, action, detail, user, address)


def record_in(gallery: Gallery, action: str, detail: dict[str, Any] | None = None,
              user: str | None = None, address: str | None = None) -> str:
    """:func:`record` through an open gallery (its own transaction)."""
    now = datetime.now(UTC)
    row_id = time_ordered_id(now)
    at = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    with write_transaction(gallery.db):
        gallery.db.execute(
            'INSERT INTO audit_log (id, at, "user", action, detail, address)'
            " VALUES (?, ?, ?, ?, ?, ?)",
            [row_id, at, user, action, json.dumps(detail or {}, default=str), address],
        )
    return row_id


def cli_user() -> str:
    """How the CLI appears in the audit log: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container, a stripped-down service)
        return "cli"


def list_audit(db_path: str | Path, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """Audit rows newest first, each with ``detail`` parsed."""
    with Gallery(db_path) as gallery:
        rows = gallery.db.query(
            'SELECT id, at, "user", action, detail, address FROM audit_log'
            f" ORDER BY at DESC, {insertion_order(gallery.db)} DESC LIMIT ? OFFSET ?",
            [limit, offset])
        return [{**row, "detail": json.loads(row["detail"] or "{}")} for row in rows]
