"""The gallery: the people a door knows, and the face templates it recognises them by.

One SQLite file is shared by several processes (the door daemon, the CLI, the web page), so
it is opened in WAL mode (readers never block the writer, nor the writer them), with a busy
timeout (a second writer waits rather than failing at once), and every write runs in one
``BEGIN IMMEDIATE`` transaction (:func:`~device.gallery.migrations.write_transaction`).

A template keeps, beside its embedding (little-endian float32), the aligned crop it was
computed from, so that a new model can re-embed the gallery without the original photos, and
the SHA-256 of the source image, so that the same photo is never enrolled twice for a model.
Triggers append every insert, update and delete to ``changes``; its highest ``seq`` tells a
running daemon, cheaply, that it should reload its matcher.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlite_utils import Database

from device.errors import (
    DuplicateTemplate,
    FacegateError,
    GalleryUnreadable,
    ModelMismatch,
    PersonNotFound,
    ReplicaReadOnly,
)
from device.gallery.engines import PostgresDatabase, is_postgres_location
from device.gallery.migrations import (
    MIGRATIONS,
    SITE_SCHEMA,
    Migration,
    migrate,
    write_transaction,
)
from device.gallery.names import clean_name, clean_optional_name

# Bytes on disk are little-endian whatever the machine, so a gallery file can be copied
# between a Pi and a PC (and, later, replicated between doors).
EMBEDDING_DTYPE = np.dtype("<f4")
# What a source hash and a stored crop look like (restores check them the same way).
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
JPEG_MAGIC = b"\xff\xd8\xff"
TEMPLATE_SOURCES = ("upload", "capture", "cli", "api")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Person:
    """A person the door knows. Times are UTC ISO 8601 strings ending in ``Z``.

    ``valid_from``/``valid_until`` bound when the door lets them in and ``schedule`` is JSON
    text; both are stored here and enforced by the door, not by the gallery. ``version``
    starts at 1 and grows by one with every update.
    """

    id: str
    name: str
    external_id: str | None
    active: bool
    valid_from: str | None
    valid_until: str | None
    schedule: str | None
    created_at: str
    updated_at: str
    version: int


@dataclass(frozen=True)
class PersonSummary(Person):
    """A person as :meth:`Gallery.list_people` shows them: with their number of templates
    (over all models)."""

    template_count: int


@dataclass(frozen=True, eq=False)
class Template:
    """One enrolled face: its embedding under ``model`` and where it came from.

    ``embedding`` is a read-only float32 vector. ``crop_jpeg`` is the aligned crop, or None
    when the site does not store crops (such a template cannot be re-embedded). Compared by
    identity: numpy arrays have no single truth value for ``==``.
    """

    id: str
    person_id: str
    model: str
    embedding: np.ndarray
    quality: dict[str, Any]
    crop_jpeg: bytes | None
    source_sha256: str
    created_at: str
    updated_at: str
    version: int
    source: str | None  # "upload", "capture", "cli" or "api"; None before migration 5
    damaged: str | None = None
    """Why the stored row does not decode (a file edited by hand), or None for a sound one.
    A damaged template's ``embedding`` is empty; the door leaves it out
    (:meth:`Gallery.embeddings`) and the fronts show it so that it can be removed."""

    @property
    def dim(self) -> int:
        return int(self.embedding.shape[0])


class Gallery:
    """The gallery file at ``path``, created and migrated to the latest schema if needed.

    ``busy_timeout_s`` is how long a write waits for another process's write to finish
    before giving up with ``sqlite3.OperationalError: database is locked``. ``migrations``
    is for tests; a migration that fails raises here and leaves the file as it was.

    ``path`` may also be a PostgreSQL connection string (``postgresql://...``): a site's
    store, the same schema and the same calls (``path`` is then None and ``location`` the
    connection string; see :mod:`device.gallery.engines`).

    One object per thread: the sqlite3 connection refuses to be shared between threads.
    ``db`` (the sqlite-utils database) is there for inspection; write through the methods,
    which keep ``version``, ``updated_at`` and the invariants.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = 5.0,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.db, self.path = open_database(path, busy_timeout_s=busy_timeout_s,
                                           migrations=migrations)
        self.location = str(path)
        self._site_tables = len(migrations) >= SITE_SCHEMA

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def refuse_if_replica(self) -> None:
        """Raise :class:`ReplicaReadOnly` when this gallery is a member door's replica of its
        site's: every front's change of people and templates comes through here, so a
        member door never enrols, edits or removes behind the site's back (one rule, one
        place; :mod:`device.site.replica` alone writes a replica)."""
        if not self._site_tables:  # a file of an older schema (tests open those)
            return
        if self.db.execute("SELECT 1 FROM site_replica WHERE key = 'site'").fetchone():
            raise ReplicaReadOnly(
                "this door's gallery is its site's (it is a member: [site] url): enrol, edit "
                "and remove people at the site server, and the door follows within a minute")

    # --- People ----------------------------------------------------------------------------

    def add_person(self, name: str, external_id: str | None = None, active: bool = True) -> Person:
        """Enrol a new person with a fresh uuid4 id. Names are unique (exact, case-sensitive)."""
        now = _utc_now()
        person = Person(
            id=str(uuid.uuid4()),
            name=_clean_name(name),
            external_id=_clean_external_id(external_id),
            active=bool(active),
            valid_from=None,
            valid_until=None,
            schedule=None,
            created_at=now,
            updated_at=now,
            version=1,
        )
        with write_transaction(self.db):
            self.refuse_if_replica()
            self._refuse_taken_name(person.name)
            self.db.execute(
                "INSERT INTO people (id, name, external_id, active, created_at, updated_at,"
                " version) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [person.id, person.name, person.external_id, int(person.active), now, now, 1],
            )
        return person

    def get_person(self, key: str) -> Person:
        """The person whose id, or else whose name, is ``key``; raises :class:`PersonNotFound`."""
        person = self._person_by_id(key) or self.find_person(key)
        if person is None:
            raise PersonNotFound(f"nobody named {key!r} (nor with that id) is in the gallery")
        return person

    def find_person(self, name: str) -> Person | None:
        """The person called ``name``, or None."""
        rows = list(self.db.query(f"SELECT {_PERSON_COLUMNS} FROM people WHERE name = ?", [name]))
        return _person(rows[0]) if rows else None

    def list_people(self) -> list[PersonSummary]:
        """Everyone, by name (ignoring case), each with their number of templates (all models)."""
        rows = self.db.query(
            f"SELECT {_PERSON_COLUMNS}, COUNT(templates.id) AS template_count FROM people"
            " LEFT JOIN templates ON templates.person_id = people.id"
            " GROUP BY people.id ORDER BY lower(people.name), people.name"
        )
        return [PersonSummary(**{**row, "active": bool(row["active"])}) for row in rows]

    def update_person(self, key: str, **fields: Any) -> Person:
        """Change some of ``name``, ``external_id``, ``active``, ``valid_from``,
        ``valid_until`` and ``schedule``; bumps ``version`` and ``updated_at``.

        ``valid_from``/``valid_until`` take a timezone-aware datetime or ISO 8601 string (a
        naive time is refused: the door and the enrolling PC may not share a time zone) and
        are stored in UTC. ``schedule`` takes JSON text or a JSON-serialisable object.
        Passing None clears a field. Unknown fields raise ``TypeError``.
        """
        unknown = set(fields) - set(_PERSON_FIELDS)
        if unknown:
            raise TypeError(f"update_person() got unknown fields: {', '.join(sorted(unknown))}")
        values = {name: _PERSON_FIELDS[name](value) for name, value in fields.items()}
        with write_transaction(self.db):
            self.refuse_if_replica()
            person = self.get_person(key)
            if not values:
                return person
            if "name" in values and values["name"] != person.name:
                self._refuse_taken_name(values["name"])
            assignments = ", ".join(f"{name} = ?" for name in values)
            self.db.execute(
                f"UPDATE people SET {assignments}, updated_at = ?, version = version + 1"
                " WHERE id = ?",
                [*values.values(), _utc_now(), person.id],
            )
            return self.get_person(person.id)

    def remove_person(self, key: str) -> int:
        """Remove a person and all their templates at once; return how many templates went.

        The templates are deleted explicitly rather than left to ON DELETE CASCADE, so the
        count is exact and a file edited by a connection without foreign keys stays clean.
        """
        with write_transaction(self.db):
            self.refuse_if_replica()
            person = self.get_person(key)
            removed = self.db.execute(
                "DELETE FROM templates WHERE person_id = ?", [person.id]
            ).rowcount
            self.db.execute("DELETE FROM people WHERE id = ?", [person.id])
        return removed

    # --- Templates -------------------------------------------------------------------------

    def add_template(
        self,
        person_id: str,
        embedding: np.ndarray,
        model: str,
        quality: dict[str, Any],
        crop_jpeg: bytes | None,
        source_sha256: str,
        *,
        source: str | None = None,
    ) -> Template:
        """Store one template for the person with id ``person_id``.

        ``source`` says which front enrolled it (one of ``TEMPLATE_SOURCES``). The first
        template of a gallery with no model yet makes ``model`` the gallery's model
        (:attr:`model`); the store accepts other models too (a re-embed in steps), but the
        enrolment service refuses them.

        ``embedding`` is a 1-D finite float vector, not all zeros; it is stored as float32
        (a float64 input is rounded) and every template of one ``model`` must have the same
        length (else :class:`ModelMismatch`). ``source_sha256`` is the hex SHA-256 of the
        source image's bytes: the same image enrolled twice under one model raises
        :class:`DuplicateTemplate`, naming the person who has it. ``quality`` is stored as
        JSON (numpy scalars are accepted).
        """
        vector = _as_embedding(embedding)
        model = _clean_model(model)
        source_sha256 = _as_sha256(source_sha256)
        if source is not None and source not in TEMPLATE_SOURCES:
            raise ValueError(f"a template's source is one of {', '.join(TEMPLATE_SOURCES)}")
        row = {
            "id": str(uuid.uuid4()),
            "person_id": person_id,
            "model": model,
            "embedding": _to_blob(vector),
            "dim": vector.size,
            "quality": _quality_json(quality),
            "crop_jpeg": _as_jpeg(crop_jpeg),
            "source_sha256": source_sha256,
            "source": source,
            "created_at": _utc_now(),
        }
        with write_transaction(self.db):
            self.refuse_if_replica()
            if self._person_by_id(person_id) is None:
                raise PersonNotFound(f"no person with id {person_id!r} is in the gallery")
            self._refuse_duplicate(model, source_sha256)
            self._check_dim(model, vector.size)
            if self.model is None:
                self._set_model(model)
            self.db.execute(
                f"INSERT INTO templates ({', '.join(row)}, updated_at, version)"
                f" VALUES ({', '.join('?' * len(row))}, ?, 1)",
                [*row.values(), row["created_at"]],
            )
            return self.get_template(row["id"])

    def get_template(self, template_id: str) -> Template:
        """The template with that id; raises ``LookupError`` when there is none."""
        rows = list(
            self.db.query(f"SELECT {_TEMPLATE_COLUMNS} FROM templates WHERE id = ?", [template_id])
        )
        if not rows:
            raise LookupError(f"no template with id {template_id!r} is in the gallery")
        return _template(rows[0])

    def list_templates(self, person_id: str, model: str | None = None) -> list[Template]:
        """The person's templates (of ``model``, or of every model), oldest first."""
        sql = f"SELECT {_TEMPLATE_COLUMNS} FROM templates WHERE person_id = ?"
        params = [person_id]
        if model is not None:
            sql += " AND model = ?"
            params.append(model)
        return [_template(row) for row in self.db.query(sql + " ORDER BY created_at, id", params)]

    def remove_template(self, template_id: str) -> Template:
        """Remove one template (and its crop); return it as it was. Raises ``LookupError``
        when there is no such template. The person stays, with their other templates."""
        with write_transaction(self.db):
            self.refuse_if_replica()
            template = self.get_template(template_id)
            self.db.execute("DELETE FROM templates WHERE id = ?", [template_id])
        return template

    @property
    def model(self) -> str | None:
        """The embedder this gallery's templates are for (None for a gallery never enrolled)."""
        row = self.db.execute("SELECT value FROM gallery_meta WHERE key = 'model'").fetchone()
        return row[0] if row else None

    def switch_model(self, model: str, embeddings: dict[str, np.ndarray],
                     drop: Sequence[str] = ()) -> None:
        """Make ``model`` the gallery's model in ONE transaction: every template id in
        ``embeddings`` gets its new vector under ``model``, those in ``drop`` are removed, and
        the gallery's model is set. A door reading the file sees the old set or the new one,
        never a mix. Any other template left under another model raises ``ModelMismatch``
        and nothing changes."""
        model = _clean_model(model)
        vectors = {template_id: _as_embedding(v) for template_id, v in embeddings.items()}
        dims = {v.size for v in vectors.values()}
        if len(dims) > 1:
            raise ModelMismatch(f"the new embeddings have mixed lengths {sorted(dims)}")
        now = _utc_now()
        with write_transaction(self.db):
            self.refuse_if_replica()
            for template_id in drop:
                self.db.execute("DELETE FROM templates WHERE id = ?", [template_id])
            for template_id, vector in vectors.items():
                self.db.execute(
                    "UPDATE templates SET model = ?, embedding = ?, dim = ?, updated_at = ?,"
                    " version = version + 1 WHERE id = ?",
                    [model, _to_blob(vector), vector.size, now, template_id],
                )
            left = self.db.execute(
                "SELECT COUNT(*) FROM templates WHERE model != ?", [model]).fetchone()[0]
            if left:
                raise ModelMismatch(f"{left} templates would be left under another model")
            self._set_model(model)

    def add_model_set(self, model: str, embeddings: dict[str, np.ndarray]) -> int:
        """Make ``model`` the gallery's model by a *second* set of templates, in ONE
        transaction: a new template (new id, same person, crop, photo and quality) of
        ``model`` for each id in ``embeddings``, and the gallery's model set. The old set
        stays (:meth:`retire_other_models` removes it), so doors that replicate this gallery
        go on matching with it until they have the whole new set: a site's model swap, where
        :meth:`switch_model`'s change in place would leave a door half of each model."""
        model = _clean_model(model)
        vectors = {template_id: _as_embedding(v) for template_id, v in embeddings.items()}
        if len({v.size for v in vectors.values()}) > 1:
            raise ModelMismatch("the new embeddings have mixed lengths")
        now = _utc_now()
        with write_transaction(self.db):
            self.refuse_if_replica()
            for template_id, vector in vectors.items():
                old = self.get_template(template_id)
                if self.has_source(model, old.source_sha256) is not None:
                    continue  # this photo already has its template of the new model
                self.db.execute(
                    "INSERT INTO templates (id, person_id, model, embedding, dim, quality,"
                    " crop_jpeg, source_sha256, source, created_at, updated_at, version)"
                    " SELECT ?, person_id, ?, ?, ?, quality, crop_jpeg, source_sha256, source,"
                    " created_at, ?, 1 FROM templates WHERE id = ?",
                    [str(uuid.uuid4()), model, _to_blob(vector), vector.size, now, template_id])
            self._set_model(model)
        return len(vectors)

    def retire_other_models(self) -> int:
        """Remove every template of a model other than the gallery's (after a model swap by
        :meth:`add_model_set`, once nobody matches with the old set); returns how many."""
        with write_transaction(self.db):
            self.refuse_if_replica()
            model = self.model
            if model is None:
                return 0
            return self.db.execute("DELETE FROM templates WHERE model != ?", [model]).rowcount

    def models(self) -> dict[str, int]:
        """``{model: number of templates}`` for every model with templates here."""
        return dict(self.db.execute(
            "SELECT model, COUNT(*) FROM templates GROUP BY model ORDER BY model").fetchall())

    def has_source(self, model: str, source_sha256: str) -> Person | None:
        """Who already has a template of ``model`` made from this image, if anyone."""
        rows = list(
            self.db.query(
                f"SELECT {_PERSON_COLUMNS} FROM templates"
                " JOIN people ON people.id = templates.person_id"
                " WHERE templates.model = ? AND templates.source_sha256 = ?",
                [model, source_sha256],
            )
        )
        return _person(rows[0]) if rows else None

    def embeddings(self, model: str) -> tuple[list[str], list[str], np.ndarray]:
        """All templates of ``model`` for the matcher: ``(person_ids, template_ids, matrix)``.

        ``matrix`` is a writable (n, dim) float32 array whose row i belongs to
        ``person_ids[i]``; rows come grouped by person. With no template of that model it is
        empty with shape (0, 0). Inactive people are included on purpose: the door should
        recognise a deactivated person and refuse them, not match their face to whoever is
        next closest. A template that does not decode (a blob of the wrong length, a length
        other than most of the model's, NaN, infinity or all zeros: a file edited by hand) is
        logged and left out rather than raised: the door goes on knowing everyone else.
        """
        rows = self.db.execute(
            "SELECT person_id, id, dim, embedding FROM templates WHERE model = ?"
            " ORDER BY person_id, created_at, id",
            [model],
        ).fetchall()
        if not rows:
            return [], [], np.empty((0, 0), np.float32)
        rows = _decodable(model, rows)
        if not rows:
            return [], [], np.empty((0, 0), np.float32)
        person_ids, template_ids, dims, blobs = (list(column) for column in zip(*rows, strict=True))
        # One join and one frombuffer instead of a row-by-row copy; a bytearray makes the
        # array writable without a second copy of what can be a few hundred megabytes.
        matrix = np.frombuffer(bytearray().join(blobs), EMBEDDING_DTYPE)
        matrix = matrix.reshape(len(rows), dims[0]).astype(np.float32, copy=False)
        usable = np.isfinite(matrix).all(axis=1) & matrix.any(axis=1)
        if not usable.all():
            for row in np.flatnonzero(~usable):
                log.error("skipping template %s of model %s: its embedding is all zeros or "
                          "holds NaN or infinity", template_ids[row], model)
            keep = usable.tolist()
            person_ids = [p for p, ok in zip(person_ids, keep, strict=True) if ok]
            template_ids = [t for t, ok in zip(template_ids, keep, strict=True) if ok]
            matrix = np.ascontiguousarray(matrix[usable])
            if not person_ids:
                return [], [], np.empty((0, 0), np.float32)
        return person_ids, template_ids, matrix

    def templates_with_crops(self, model: str | None = None) -> Iterator[Template]:
        """Every template that has a stored crop (of ``model``, or of any model), for
        re-embedding. Templates are fetched one at a time, so the crops of a large gallery
        are never all in memory, and the caller may write to the gallery while iterating."""
        sql = "SELECT id FROM templates WHERE crop_jpeg IS NOT NULL"
        params: list[str] = []
        if model is not None:
            sql += " AND model = ?"
            params.append(model)
        ids = [row[0] for row in self.db.execute(sql + " ORDER BY created_at, id", params)]
        for template_id in ids:
            try:
                yield self.get_template(template_id)
            except LookupError:  # removed since the list was taken
                continue

    def replace_embedding(self, template_id: str, embedding: np.ndarray, model: str) -> Template:
        """Give a template a new embedding, under ``model`` (the same or a new one).

        Checked as :meth:`add_template` checks. Hazard: changing the model in place takes the
        template out of the old model's matcher at once; to switch models without a gap, add
        templates for the new model first (:meth:`add_template` from the crop) and remove
        the old ones once the door runs the new model.
        """
        vector = _as_embedding(embedding)
        model = _clean_model(model)
        with write_transaction(self.db):
            self.refuse_if_replica()
            template = self.get_template(template_id)
            if model != template.model:
                self._refuse_duplicate(model, template.source_sha256)
            self._check_dim(model, vector.size, ignoring=template_id)
            self.db.execute(
                "UPDATE templates SET model = ?, embedding = ?, dim = ?, updated_at = ?,"
                " version = version + 1 WHERE id = ?",
                [model, _to_blob(vector), vector.size, _utc_now(), template_id],
            )
            return self.get_template(template_id)

    # --- State -----------------------------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        """``{"people": n, "templates": {model: n, ...}}``."""
        people = self.db.execute("SELECT COUNT(*) FROM people").fetchone()[0]
        return {"people": people, "templates": self.models()}

    def change_seq(self) -> int:
        """The number of the latest change to people or templates, 0 for a new gallery.

        It only grows, whichever process made the change, so a daemon that polls it knows
        when to reload. Cheap: MAX over the rowid is one B-tree descent (4 us measured).
        """
        return self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]

    # --- Private ---------------------------------------------------------------------------

    def _person_by_id(self, person_id: str) -> Person | None:
        rows = list(
            self.db.query(f"SELECT {_PERSON_COLUMNS} FROM people WHERE id = ?", [person_id])
        )
        return _person(rows[0]) if rows else None

    def _set_model(self, model: str) -> None:
        """Inside a write transaction: record ``model`` as the gallery's model."""
        self.db.execute(
            "INSERT INTO gallery_meta (key, value, updated_at) VALUES ('model', ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at, version = gallery_meta.version + 1"
            " WHERE gallery_meta.value != excluded.value",
            [model, _utc_now()],
        )

    def _refuse_taken_name(self, name: str) -> None:
        if self.find_person(name) is not None:
            raise FacegateError(f"a person named {name!r} is already in the gallery")

    def _refuse_duplicate(self, model: str, source_sha256: str) -> None:
        owner = self.has_source(model, source_sha256)
        if owner is not None:
            raise DuplicateTemplate(
                f"this image is already enrolled for {owner.name} (model {model})"
            )

    def _check_dim(self, model: str, dim: int, ignoring: str = "") -> None:
        row = self.db.execute(
            "SELECT dim FROM templates WHERE model = ? AND id != ? LIMIT 1", [model, ignoring]
        ).fetchone()
        if row is not None and row[0] != dim:
            raise ModelMismatch(
                f"model {model!r} makes {row[0]}-long embeddings in this gallery, not {dim}"
            )


def _decodable(model: str, rows: list[tuple]) -> list[tuple]:
    """The ``(person_id, id, dim, embedding)`` rows the matcher can use; every other one is
    logged and left out, so one row edited by hand (or restored from a damaged file) costs
    its own template, never the door. The length most templates of ``model`` have wins."""
    fitting = [row for row in rows if isinstance(row[2], int) and row[2] > 0
               and isinstance(row[3], bytes) and len(row[3]) == row[2] * EMBEDDING_DTYPE.itemsize]
    dims = Counter(row[2] for row in fitting)
    dim = max(dims, key=lambda d: (dims[d], -d)) if dims else None
    kept = [row for row in fitting if row[2] == dim]
    if len(kept) < len(rows):
        kept_ids = {row[1] for row in kept}
        for row in rows:
            if row[1] not in kept_ids:
                log.error("skipping template %s of model %s: its embedding does not decode "
                          "as %s float32 numbers (dim %r, %s bytes)", row[1], model, dim,
                          row[2], len(row[3]) if isinstance(row[3], bytes) else "not")
    return kept


# --- Opening: a door's file, or a site's PostgreSQL --------------------------------------------


def open_database(location: str | Path, *, busy_timeout_s: float = 5.0,
                  migrations: Sequence[Migration] = MIGRATIONS) -> tuple[Any, Path | None]:
    """``(db, path)`` for a gallery location, migrated to the latest schema.

    A path is a door's SQLite file: refused when it is an empty file (:func:`refuse_empty_file`),
    switched to WAL mode with foreign keys on, "not a database" turned into
    :class:`GalleryUnreadable`. A ``postgresql://`` connection string is a site's store
    (:class:`~device.gallery.engines.PostgresDatabase`; ``path`` is then None).
    """
    if is_postgres_location(location):
        db = PostgresDatabase(str(location), connect_timeout_s=busy_timeout_s)
        try:
            migrate(db, migrations)
        except BaseException:
            db.close()
            raise
        return db, None
    path = Path(location)
    refuse_empty_file(path)
    db = Database(sqlite3.connect(str(path), timeout=busy_timeout_s))
    try:
        with unreadable_as_error(path):
            # Per connection, and off by default in SQLite: without it ON DELETE CASCADE
            # and REFERENCES are silently ignored.
            db.execute("PRAGMA foreign_keys = ON")
            _enable_wal(db, busy_timeout_s)
            migrate(db, migrations)
    except BaseException:
        db.close()
        raise
    return db, path


# --- A file that is no database ---------------------------------------------------------------

_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_EMPTY_GRACE_S = 0.5  # how long a 0-byte file may be a gallery another process is creating


def refuse_empty_file(path: Path) -> None:
    """Refuse an existing 0-byte file with :class:`GalleryUnreadable`.

    SQLite would quietly make it a new, empty gallery: no people and, worse, no accounts, so
    a door whose file was emptied (a full disk, a bad copy) would start as a new one. Only a
    missing file becomes a new gallery. A process that is creating the file this moment
    leaves it at 0 bytes for a few milliseconds, so a 0-byte file is given a moment first.
    """
    deadline = time.monotonic() + _EMPTY_GRACE_S
    while _is_empty_file(path):
        if time.monotonic() > deadline:
            raise GalleryUnreadable(_unreadable_message(path, "it is empty (0 bytes)"))
        time.sleep(0.02)


def _is_empty_file(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size == 0
    except OSError:
        return False


@contextmanager
def unreadable_as_error(path: Path) -> Iterator[None]:
    """Turn SQLite's "file is not a database" and "database disk image is malformed" into
    :class:`GalleryUnreadable` naming ``path``; other errors (locked, I/O) pass unchanged."""
    try:
        yield
    except sqlite3.DatabaseError as error:
        if getattr(error, "sqlite_errorcode", None) not in _CORRUPT:
            raise
        raise GalleryUnreadable(_unreadable_message(path, f"SQLite says: {error}")) from None


def _unreadable_message(path: Path, why: str) -> str:
    return (f"the gallery file {path} cannot be used ({why}); nothing was changed: stop "
            f"facegate and copy a backup (one downloaded from the admin page) over it, or move "
            f"it aside to start a new, empty gallery")


def _enable_wal(db: Database, timeout_s: float) -> None:
    """Switch the file to WAL mode, waiting up to ``timeout_s`` for the lock it needs.

    The switch takes an exclusive lock and SQLite answers "database is locked" at once,
    without its busy timeout, when another connection holds any lock: processes that open a
    new file at the same moment (the daemon, the CLI and the page starting together) meet
    exactly that, so it is retried. A file already in WAL mode needs no switch.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if db.journal_mode == "wal":
                return
            db.enable_wal()
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


# --- Conversions between Python values and columns ---------------------------------------

# Columns are named, never "*": a later migration may add columns that this code (or an older
# copy of it on another door) does not know.
_PERSON_COLUMNS = ", ".join(f"people.{field.name}" for field in fields(Person))
_TEMPLATE_COLUMNS = ", ".join(
    f"templates.{name}" for name in [field.name for field in fields(Template)
                                     if field.name != "damaged"] + ["dim"]
)


def _utc_now() -> str:
    # The same format as the triggers' strftime('%Y-%m-%dT%H:%M:%fZ'), so times sort as text.
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _person(row: dict[str, Any]) -> Person:
    return Person(**{**row, "active": bool(row["active"])})


def _template(row: dict[str, Any]) -> Template:
    """The row as a :class:`Template`; one that does not decode is logged and returned
    ``damaged`` (with an empty embedding) rather than raised, so that a hand-edited file
    still lists the person's templates and the damaged one can be removed."""
    fields = dict(row)
    dim = fields.pop("dim")
    embedding, damaged = _decoded_embedding(fields["embedding"], dim)
    try:
        quality = json.loads(fields["quality"])
    except (TypeError, ValueError, RecursionError):
        quality = None
    if not isinstance(quality, dict):
        quality = {}
        damaged = damaged or "its quality is not a JSON object"
    if damaged:
        log.error("template %s of model %s is damaged: %s", fields["id"], fields["model"],
                  damaged)
    embedding.flags.writeable = False
    return Template(**{**fields, "embedding": embedding, "quality": quality,
                       "damaged": damaged})


def _decoded_embedding(blob: object, dim: object) -> tuple[np.ndarray, str | None]:
    """``(vector, None)``, or ``(empty vector, why)`` for a blob the matcher cannot use."""
    empty = np.empty(0, np.float32)
    if not isinstance(dim, int) or dim <= 0 or not isinstance(blob, bytes):
        return empty, f"its embedding is no blob of a positive length (dim {dim!r})"
    if len(blob) != dim * EMBEDDING_DTYPE.itemsize:
        return empty, (f"its embedding holds {len(blob)} bytes, not {dim} float32 numbers "
                       f"({dim * EMBEDDING_DTYPE.itemsize} bytes)")
    embedding = np.frombuffer(blob, EMBEDDING_DTYPE).astype(np.float32)
    if not np.all(np.isfinite(embedding)):
        return empty, "its embedding holds NaN or infinity"
    if not np.any(embedding):
        return empty, "its embedding is all zeros"
    return embedding, None


def _clean_name(name: str) -> str:
    return clean_name(name, what="a person's name")


def _clean_external_id(value: object) -> str | None:
    return clean_optional_name(value, what="an external id", field="external_id")


def _clean_model(model: str) -> str:
    if not isinstance(model, str) or not model.strip():
        raise ValueError("the model name cannot be empty")
    return model


def _as_embedding(embedding: np.ndarray) -> np.ndarray:
    array = np.asarray(embedding)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"an embedding is a 1-D float vector, got {array.dtype} {array.shape}")
    vector = array.astype(np.float32)
    if not np.all(np.isfinite(vector)):
        raise ValueError("the embedding contains NaN or infinity")
    if not np.any(vector):
        raise ValueError("the embedding is all zeros (the embedder found nothing to encode)")
    vector.flags.writeable = False
    return vector


def _to_blob(vector: np.ndarray) -> bytes:
    return vector.astype(EMBEDDING_DTYPE, copy=False).tobytes()


def _as_sha256(source_sha256: str) -> str:
    if not isinstance(source_sha256, str) or not SHA256_HEX.fullmatch(source_sha256):
        raise ValueError("source_sha256 must be 64 lowercase hex digits (hashlib's hexdigest())")
    return source_sha256


def _as_jpeg(crop_jpeg: bytes | None) -> bytes | None:
    if crop_jpeg is None:
        return None
    data = bytes(crop_jpeg)
    if not data.startswith(JPEG_MAGIC):
        raise ValueError("crop_jpeg is not JPEG data (encode the aligned crop with cv2.imencode)")
    return data


def _quality_json(quality: dict[str, Any]) -> str:
    def plain(value: object) -> object:
        if isinstance(value, np.generic):  # the vision code hands over numpy scalars
            return value.item()
        raise TypeError(f"quality values must be JSON numbers or strings, got {type(value)}")

    return json.dumps(dict(quality), sort_keys=True, default=plain)


def _as_utc_time(value: datetime | str | None) -> str | None:
    if value is None:
        return None
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone; give one (e.g. +01:00 or Z)")
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _as_schedule(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        json.loads(value)  # refuse text that is not JSON now, not when the door reads it
        return value
    return json.dumps(value, sort_keys=True)


def _as_flag(value: object) -> int:
    if not isinstance(value, bool | int | np.bool_) or value not in (0, 1):
        raise ValueError(f"active must be True or False, got {value!r}")
    return int(value)


_PERSON_FIELDS = {
    "name": _clean_name,
    "external_id": _clean_external_id,
    "active": _as_flag,
    "valid_from": _as_utc_time,
    "valid_until": _as_utc_time,
    "schedule": _as_schedule,
}
