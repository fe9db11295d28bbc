"""Site settings: the few configuration keys an admin may change on the web page at run time.

They live in the ``settings`` table of the gallery's SQLite file (migration 3), one row per
dotted config key with its value as JSON, and they beat the configuration file: the daemon
reads the file at start, then applies these on top (:func:`apply_site_settings`) and again
whenever :func:`site_settings_seq` moves, which it may poll every second (one indexed
aggregate over a dozen rows). ``camera.source`` is stored at once but only used at the next
start, since the camera is opened once.

Every value is checked by the configuration's own rules (:func:`device.config.load_config`),
so a value the page accepts is one the config file would accept, with the same message when
it is not. A cleared setting keeps its row with the JSON value ``null`` (and a bumped
version), so that the change counter moves on a clear too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from device.config import Config, Places, load_config
from device.errors import ConfigError, SettingInvalid
from device.gallery.engines import is_postgres
from device.gallery.migrations import write_transaction
from device.gallery.store import Gallery

log = logging.getLogger(__name__)

SETTABLE: frozenset[str] = frozenset({
    "recognition.threshold",
    "recognition.margin",
    "recognition.votes_needed",
    "recognition.votes_window",
    "recognition.cooldown_seconds",
    "door.unlock_seconds",
    "door.held_open_seconds",
    "events.max_age_days",
    "events.max_events",
    "events.max_snapshot_mb",
    "events.min_free_mb",
    "camera.source",
    "liveness.enabled",
    "liveness.threshold",
    "liveness.votes_needed",
    "liveness.motion_cue",
})
"""The dotted config keys the settings page may change."""

RESTART_NEEDED: frozenset[str] = frozenset({"camera.source"})
"""Settings that are stored at once but take effect at the daemon's next start."""

# Validation must not depend on whatever config file or environment the web process happens
# to see: only the values handed in count.
_NOWHERE = Places(system_config=Path("/nonexistent/facegate.toml"),
                  system_data_dir=Path("/nonexistent"), project_dir=None)


def read_site_settings(db_path: str | Path) -> dict[str, Any]:
    """The settings set on the page, ``{dotted key: value}``; cleared and unknown keys are
    left out (a newer facegate's keys are kept in the file, not shown to this one).

    A row that is not JSON text (the file edited by hand) is logged and left out, so the
    door and the page go on with the configuration file's value for that key; a value of
    the wrong type is returned, and :func:`apply_site_settings` refuses it by name."""
    with Gallery(db_path) as gallery:
        return dict(sorted(_stored(gallery.db).items()))


def site_settings_seq(db_path: str | Path) -> int:
    """A number that changes whenever a site setting is written or cleared (0 while none
    ever was). Compare it with ``!=``, not ``<``: restoring an older backup may lower it."""
    with Gallery(db_path) as gallery:
        return gallery.db.execute("SELECT COALESCE(SUM(version), 0) FROM settings").fetchone()[0]


def write_site_settings(db_path: str | Path, changes: Mapping[str, Any], by: str,
                        *, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check and store ``changes`` (dotted key -> value); return what changed as
    ``{key: (old, new)}`` (None for "not set here").

    A value may be typed (``0.45``) or text from a form (``"0.45"``, read as TOML like a
    command-line override); None or ``""`` clears the setting, so that the file's value (or
    the default) applies again. ``base`` holds the values in force without the site settings
    (the daemon's file), for the rules that involve two keys (``votes_needed`` at most
    ``votes_window``). Raises :class:`SettingInvalid` naming the first bad key, and then
    stores nothing.
    """
    unknown = sorted(set(changes) - SETTABLE)
    if unknown:
        raise SettingInvalid(unknown[0], f"{unknown[0]} cannot be changed on the settings page")
    wanted = {key: _blank_to_none(value) for key, value in changes.items()}
    with Gallery(db_path) as gallery:
        db = gallery.db
        with write_transaction(db):
            current = _stored(db)
            merged = {**current, **wanted}
            checked = validate_site_settings(merged, base=base)
            changed = {key: (current.get(key), checked.get(key)) for key in wanted
                       if current.get(key) != checked.get(key)}
            now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            for key, (_, new) in changed.items():
                db.execute(
                    "INSERT INTO settings (key, value, updated_at, updated_by, version)"
                    " VALUES (?, ?, ?, ?, 1) ON CONFLICT (key) DO UPDATE SET"
                    " value = excluded.value, updated_at = excluded.updated_at,"
                    " updated_by = excluded.updated_by, version = settings.version + 1",
                    [key, json.dumps(new), now, by],
                )
    return changed


def validate_site_settings(values: Mapping[str, Any], *,
                           base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``values`` checked and converted (``"3"`` -> 3.0 for a float key); None values are
    left out. Raises :class:`SettingInvalid` with the configuration's own message."""
    given = {key: value for key, value in values.items() if value is not None}
    overrides = {key: value for key, value in (base or {}).items()
                 if key in SETTABLE and value is not None}
    overrides.update(given)
    try:
        config = load_config(None, overrides, environ={}, places=_NOWHERE)
    except ConfigError as error:
        raise _named(error, given) from None
    return {key: _value_of(config, key) for key in given}


def apply_site_settings(config: Config, settings: Mapping[str, Any]) -> Config:
    """``config`` with the site ``settings`` (from :func:`read_site_settings`) on top.

    Checked again, since the file under them may have changed since they were stored:
    raises :class:`SettingInvalid` when the two no longer agree (keep the old config then).
    """
    base = {key: _value_of(config, key) for key in SETTABLE}
    checked = validate_site_settings(settings, base=base)
    sections: dict[str, dict[str, Any]] = {}
    for key, value in checked.items():
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = value
    return replace(config, **{section: replace(getattr(config, section), **values)
                              for section, values in sections.items()})


def _stored(db: Any) -> dict[str, Any]:
    """The set values of the keys this facegate knows; undecodable rows logged and left out
    (a write then replaces such a row: the JSON ``null`` of a cleared one counts as unset)."""
    values = {}
    # As bytes, so that text that is not UTF-8 fails this row's json.loads, not the query
    # (PostgreSQL's text is always UTF-8: as it is).
    value_sql = "value" if is_postgres(db) else "CAST(value AS BLOB)"
    for key, text in db.execute(f"SELECT key, {value_sql} FROM settings").fetchall():
        if key not in SETTABLE:
            continue
        try:
            value = json.loads(text)
        except (TypeError, ValueError, RecursionError) as error:
            log.error("site setting %s ignored: its stored value %.60r is not JSON (%s); "
                      "the configuration file's value applies", key, text, error)
            continue
        if value is not None:
            values[key] = value
    return values


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _value_of(config: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def _named(error: ConfigError, given: Mapping[str, Any]) -> SettingInvalid:
    """The config module's message, without "on the command line", tied to the key it names
    first (one of those being changed, when it names several)."""
    message = str(error).replace(" on the command line", "")
    mentioned = sorted((message.find(key), key) for key in SETTABLE if key in message)
    keys = [key for _, key in mentioned]
    key = next((key for key in keys if key in given), keys[0] if keys else "")
    return SettingInvalid(key, message)
