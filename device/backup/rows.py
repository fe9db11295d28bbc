"""What a restore accepts, row by row: every row a backup brings in must be one the door can
read, because the door reads them while it runs and a row it cannot decode would stop it
(``cannot reshape array of size 257`` at the next face, and at every restart).

:func:`check_rows` runs on the private, already migrated copy of the upload, before anything
of the live database is replaced. The first bad row raises :class:`RestoreRefused` with one
sentence naming the table, the row's id and what is wrong. The rules are the ones the
gallery's own writers apply (``device.gallery.store``) and the door's reader of schedules
(``device.daemon.access``), so a row made through facegate always passes.

The accounts tables are not checked here: a restore never brings them in
(:mod:`device.backup.database`).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from device.daemon.access import ScheduleInvalid, parse_schedule
from device.errors import FacegateError, NameInvalid, RestoreRefused
from device.gallery.names import clean_name, clean_optional_name
from device.gallery.store import EMBEDDING_DTYPE, JPEG_MAGIC, SHA256_HEX, TEMPLATE_SOURCES
from device.vision.models import load_card

_NOTHING = "; nothing was restored"
# Python 3.11's sqlite3 reports text that is not UTF-8 as OperationalError, later ones as
# UnicodeDecodeError; the copy is private, so any error reading a row is that row's.
_UNDECODABLE = (UnicodeDecodeError, sqlite3.DatabaseError)
_SAFE_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_rows(connection: sqlite3.Connection, models_dir: Path | None = None, *,
               replaced: tuple[str, ...] = ()) -> None:
    """Raise :class:`RestoreRefused` at the first row of people, templates, gallery_meta,
    events or settings the door could not read; return quietly when all are sound.

    ``models_dir`` (None: the default) is where the models' cards are: templates of a model
    found there must have the length its card says the embedder makes. ``replaced`` are
    tables whose rows the restore throws away (the accounts): not read at all.
    """
    _check_text(connection, replaced)
    for table, key, check in (("people", "id", _person_problem),
                              ("templates", "id", _TemplateCheck()),
                              ("events", "id", _event_problem),
                              ("settings", "key", _setting_problem)):
        for row in _rows(connection, table):
            problem = check(row)
            if problem:
                _refuse(table, row[key], problem)
    _check_gallery_model(connection)
    _check_card_dims(connection, models_dir)


def _check_text(connection: sqlite3.Connection, replaced: tuple[str, ...]) -> None:
    """Every text value of every table must be UTF-8: Python's sqlite3 raises at a row that
    is not, wherever it is read (the door's loop, the access log page)."""
    tables = [row[0] for row in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'")]
    for table in tables:
        if table in replaced:
            continue
        try:  # one pass over the table; row by row only to name a bad one
            for _ in connection.execute(f'SELECT * FROM "{table}"'):
                pass
        except _UNDECODABLE:
            for (rowid,) in connection.execute(f'SELECT rowid FROM "{table}" ORDER BY rowid'):
                try:
                    connection.execute(f'SELECT * FROM "{table}" WHERE rowid = ?',
                                       [rowid]).fetchone()
                except _UNDECODABLE:
                    _refuse(table, rowid, "holds text that is not UTF-8")


def _rows(connection: sqlite3.Connection, table: str) -> Iterator[sqlite3.Row]:
    cursor = connection.cursor()
    cursor.row_factory = sqlite3.Row
    # By rowid, so "the first bad row" is the same one every time.
    yield from cursor.execute(f"SELECT * FROM {table} ORDER BY rowid")


def _refuse(table: str, row_id: object, problem: str) -> None:
    raise RestoreRefused(f"the backup's {table} row {_shown(row_id)} {problem}{_NOTHING}")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- People ----------------------------------------------------------------------------------


def _person_problem(row: sqlite3.Row) -> str | None:
    if not _is_text(row["id"]):
        return "has an id that is not text"
    if not _is_text(row["name"]) or not row["name"].strip():
        return "has an empty name"
    if row["external_id"] is not None and not isinstance(row["external_id"], str):
        return "has an external_id that is not text"
    for column, what, optional in (("name", "a person's name", False),
                                   ("external_id", "an external id", True)):
        problem = _name_problem(row[column], what, column, optional)
        if problem:
            return f"has a {column} that {problem}"
    if row["active"] not in (0, 1) or isinstance(row["active"], float):
        return f"has active = {_shown(row['active'])}, not 0 or 1"
    for column, optional in (("created_at", False), ("updated_at", False),
                             ("valid_from", True), ("valid_until", True)):
        problem = _time_problem(row[column], optional)
        if problem:
            return f"has a {column} that {problem}"
    if row["schedule"] is not None:
        problem = _schedule_problem(row["schedule"])
        if problem:
            return f"has a schedule that {problem}"
    return _version_problem(row)


def _schedule_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return "is not text"
    try:
        entries = json.loads(value)
        parse_schedule(entries if isinstance(entries, list) else value)
    except (ScheduleInvalid, ValueError, TypeError, AttributeError, RecursionError) as error:
        return f"the door cannot read ({error})"
    return None


# --- Templates -------------------------------------------------------------------------------


class _TemplateCheck:
    """Templates one by one, remembering each model's length: every template of one model
    must have the same, as the matcher holds them in one matrix."""

    def __init__(self) -> None:
        self.dims: dict[str, tuple[int, str]] = {}  # model -> (dim, the first template's id)

    def __call__(self, row: sqlite3.Row) -> str | None:
        if not _is_text(row["person_id"]):
            return "has no person"
        model = row["model"]
        if not isinstance(model, str) or not model.strip():
            return "has an empty model name"
        problem = self._embedding_problem(row, model)
        if problem:
            return problem
        if not isinstance(row["quality"], str) or not _is_json_object(row["quality"]):
            return "has a quality that is not a JSON object"
        crop = row["crop_jpeg"]
        if crop is not None and not (isinstance(crop, bytes) and crop.startswith(JPEG_MAGIC)):
            return "has a crop_jpeg that is not JPEG data (nor NULL)"
        if not isinstance(row["source_sha256"], str) or not SHA256_HEX.fullmatch(
                row["source_sha256"]):
            return "has a source_sha256 that is not 64 lowercase hex digits"
        if row["source"] is not None and row["source"] not in TEMPLATE_SOURCES:
            return (f"has source {_shown(row['source'])}, not one of "
                    f"{', '.join(TEMPLATE_SOURCES)} (nor NULL)")
        for column in ("created_at", "updated_at"):
            problem = _time_problem(row[column], optional=False)
            if problem:
                return f"has a {column} that {problem}"
        return _version_problem(row)

    def _embedding_problem(self, row: sqlite3.Row, model: str) -> str | None:
        dim, blob = row["dim"], row["embedding"]
        if not isinstance(dim, int) or dim <= 0:
            return f"has dim {_shown(dim)}, not a positive whole number"
        if not isinstance(blob, bytes):
            return "has an embedding that is not a blob"
        if len(blob) != dim * EMBEDDING_DTYPE.itemsize:
            return (f"has an embedding of {len(blob)} bytes, not {dim * EMBEDDING_DTYPE.itemsize}"
                    f" ({dim} float32 numbers)")
        first = self.dims.setdefault(model, (dim, row["id"]))
        if first[0] != dim:
            return (f"has {dim} numbers but template {_shown(first[1])} of the same model "
                    f"{model!r} has {first[0]}")
        vector = np.frombuffer(blob, EMBEDDING_DTYPE)
        if not np.all(np.isfinite(vector)):
            return "has an embedding holding NaN or infinity"
        if not np.any(vector):
            return "has an embedding of all zeros"
        return None


def _check_gallery_model(connection: sqlite3.Connection) -> None:
    """The gallery's model, when recorded, must be a model its templates are of (a gallery
    half-way through a re-embed has two; it must be one of them)."""
    row = connection.execute("SELECT value FROM gallery_meta WHERE key = 'model'").fetchone()
    if row is None:
        return
    model = row[0]
    if not isinstance(model, str) or not model.strip():
        _refuse("gallery_meta", "model", "names an empty model")
    models = {found for (found,) in connection.execute("SELECT DISTINCT model FROM templates")}
    if models and model not in models:
        _refuse("gallery_meta", "model", f"says {model!r} but the templates are of "
                                         f"{', '.join(sorted(map(str, models)))}")


def _check_card_dims(connection: sqlite3.Connection, models_dir: Path | None) -> None:
    """Templates of a consistent but wrong length (3 numbers where the embedder makes 128)
    would match nothing; a model whose card is not on this door is not judged here."""
    for model, dim, template_id in connection.execute(
            "SELECT model, dim, MIN(id) FROM templates GROUP BY model"):
        if not _SAFE_MODEL_NAME.fullmatch(model):
            continue  # never a file name taken from the upload
        try:
            card_dim = load_card(model, models_dir).card.get("output", {}).get("dim")
        except (FacegateError, OSError, ValueError, AttributeError):
            continue
        if isinstance(card_dim, int) and card_dim != dim:
            _refuse("templates", template_id, f"has {dim} numbers but the card of {model} "
                                              f"says its embeddings have {card_dim}")


# --- Events ----------------------------------------------------------------------------------


def _event_problem(row: sqlite3.Row) -> str | None:
    if not _is_text(row["id"]):
        return "has an id that is not text"
    for column in ("face_path", "frame_path"):
        problem = _snapshot_path_problem(row[column])
        if problem:
            return f"has a {column} that {problem}"
    if not isinstance(row["snapshot_bytes"], int) or row["snapshot_bytes"] < 0:
        return "has a snapshot_bytes that is not a whole number of bytes"
    problem = _name_problem(row["person_name"], "a person's name", "person_name", optional=True)
    if problem:
        return f"has a person_name that {problem}"
    return None


def _snapshot_path_problem(value: object) -> str | None:
    """A snapshot path is relative to the snapshots folder and stays inside it: the page
    serves and retention deletes the file it names."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        return "is not a path"
    if "\\" in value or "\x00" in value:
        return "holds a backslash or a NUL"
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or value.startswith("/"):
        return "is absolute, not inside the snapshots folder"
    if ".." in posix.parts:
        return "climbs out of the snapshots folder ('..')"
    return None


# --- Site settings -------------------------------------------------------------------------


def _setting_problem(row: sqlite3.Row) -> str | None:
    """The daemon reads every value as JSON. Whether a value fits is the daemon's to judge,
    against its own configuration file (it logs and ignores one that does not)."""
    if not _is_text(row["key"]):
        return "has a key that is not text"
    if not isinstance(row["value"], str):
        return "has a value that is not JSON text"
    try:
        json.loads(row["value"])
    except (ValueError, RecursionError):
        return "has a value that is not JSON"
    return None


# --- Shared ----------------------------------------------------------------------------------


def _name_problem(value: object, what: str, field: str, optional: bool) -> str | None:
    """None when ``value`` is a name as the store writes it (:mod:`device.gallery.names`):
    the access log and ``facegate people list`` print names raw, so a restored one must not
    hold what the rule keeps out of every other front (a bidi override, a terminal escape)."""
    if optional and value is None:
        return None
    try:
        cleaned = (clean_optional_name(value, what=what, field=field) if optional
                   else clean_name(value, what=what, field=field))
    except NameInvalid as error:
        return f"breaks the name rule ({error})"
    if cleaned != value:
        return f"is not stored as the name rule writes it ({_shown(value)} for {cleaned!r})"
    return None


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def _time_problem(value: object, optional: bool) -> str | None:
    """None when ``value`` is a UTC ISO 8601 time (or NULL where ``optional``)."""
    if value is None:
        return None if optional else "is missing"
    if not isinstance(value, str):
        return "is not text"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return f"is not an ISO 8601 time ({_shown(value)})"
    if when.utcoffset() != timedelta(0):
        return f"is not in UTC ({_shown(value)})"
    return None


def _version_problem(row: sqlite3.Row) -> str | None:
    version = row["version"]
    if not isinstance(version, int) or version < 1:
        return f"has version {_shown(version)}, not a whole number from 1"
    return None
