"""``/api/settings``: the site settings an admin may change while the door runs."""

from __future__ import annotations

from flask import jsonify
from flask.typing import ResponseReturnValue

from device.errors import RequestInvalid
from device.site_settings import (
    RESTART_NEEDED,
    SETTABLE,
    read_site_settings,
    write_site_settings,
)
from device.web.api._common import _NONE, admin_only, bp, json_body
from device.web.audit import audit
from device.web.db import database_path, services
from device.web.roles import current_user


@bp.get("/settings")
@admin_only
def settings_get() -> ResponseReturnValue:
    return jsonify(settings=read_site_settings(database_path()), settable=sorted(SETTABLE),
                   restart_needed=sorted(RESTART_NEEDED))


@bp.patch("/settings")
@admin_only
def settings_edit() -> ResponseReturnValue:
    body = json_body({key: (int, float, str, bool, _NONE) for key in sorted(SETTABLE)})
    if not body:
        raise RequestInvalid(None, "nothing to change: send {\"dotted.key\": value}, null "
                                   "to clear one")
    config = services().config
    base = None
    if config is not None:
        base = {key: getattr(getattr(config, key.split(".")[0]), key.split(".")[1])
                for key in SETTABLE}
    changed = write_site_settings(database_path(), body, by=current_user().name, base=base)
    if changed:
        audit("settings_change", {"changed": {key: list(pair) for key, pair in changed.items()},
                                  "via": "api"})
    return jsonify(changed={key: {"old": old, "new": new} for key, (old, new) in changed.items()},
                   settings=read_site_settings(database_path()),
                   restart_needed=sorted(key for key in changed if key in RESTART_NEEDED))
