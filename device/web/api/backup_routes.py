"""``/api/backup`` and ``/api/restore``: the whole database out and back in (the copying
and checking itself is :mod:`device.backup`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from flask import g, jsonify, request, send_file
from flask.typing import ResponseReturnValue

from device.backup import (
    backup_database,
    backup_file_name,
    refuse_site_store,
    restore_database,
)
from device.errors import RequestInvalid
from device.gallery.migrations import MIGRATIONS
from device.web.api._common import _error, _flag_arg, admin_only, bp, query_args
from device.web.audit import audit
from device.web.db import database_path
from device.web.settings import models_dir


@bp.get("/backup")
@admin_only
def backup() -> ResponseReturnValue:
    """The whole database as one SQLite file, consistent while the door writes; without the
    accounts (password and token hashes) unless ``?accounts=1`` comes from a signed-in admin
    on the page: an API token may not take the hashes away."""
    with_accounts = _flag_arg(query_args(("accounts",)), "accounts")
    by_token = g.get("api_token_id") is not None
    if with_accounts and by_token:
        return _error(403, "a backup with the accounts (accounts=1) is for an admin signed "
                           "in on the page, not for an API token", field="accounts")
    database = database_path()
    refuse_site_store(database)
    handle, name = tempfile.mkstemp(prefix=".backup-", suffix=".db", dir=database.parent)
    os.close(handle)
    try:
        backup_database(database, name, accounts=with_accounts)
        stream = open(name, "rb")  # send_file closes it once the download is sent
    finally:
        os.unlink(name)  # the open file lives on until the download is sent
    size = os.fstat(stream.fileno()).st_size
    audit("backup", {"bytes": size, "accounts": with_accounts,
                     "via": "api" if by_token else "page"})
    return send_file(stream, mimetype="application/vnd.sqlite3", as_attachment=True,
                     download_name=backup_file_name(), max_age=0)


@bp.post("/restore")
@admin_only
def restore() -> ResponseReturnValue:
    """Replace the database with an uploaded backup (multipart field ``database``; its size
    limit, MAX_RESTORE_BYTES, is set by ``security.check_csrf`` before any form is read).
    The door's accounts, tokens and sessions stay as they are, whatever the file holds."""
    query_args(())
    for name in [*request.form, *request.files]:
        if name != "database":
            raise RequestInvalid(name, f"unknown field {name!r}; send the backup as 'database'")
    upload = request.files.get("database")
    if upload is None:
        raise RequestInvalid("database", "send the backup file as the multipart field "
                                         "'database'")
    database = database_path()
    refuse_site_store(database)
    with tempfile.TemporaryDirectory(prefix=".upload-", dir=database.parent) as work:
        received = Path(work) / "upload.db"  # never the client's file name
        upload.save(received)
        result = restore_database(database, received, models_dir=models_dir())
    audit("restore", {**result, "kept_previous": Path(result["kept_previous"]).name,
                      "via": "api"})
    return jsonify(restored=True, schema_version=len(MIGRATIONS),
                   backup_schema_version=result["schema_version"], people=result["people"],
                   templates=result["templates"], events=result["events"],
                   kept_previous=Path(result["kept_previous"]).name)
