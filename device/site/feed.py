"""What a site serves its doors, and how it takes their events in.

**Changes.** The gallery's change log (``changes``, filled by triggers on people and
templates) is the replication feed: :func:`changes_since` returns, for the entries after a
door's seq, each person or template *as it is now* (or a tombstone when it is gone), so a
door that applies the pages in order ends where the site is, whatever it missed between.
Writes at the site are serialised (:func:`~device.gallery.engines.postgres_write_transaction`),
so seqs commit in order and "after N" never skips one. Templates travel without their crops:
a door matches embeddings and never re-embeds (the site does, :mod:`device.site` docs).

**Full pages** (:func:`snapshot_page`), by id, for a door that starts empty or resyncs.

**Digest** (:func:`replica_digest`): SHA-256 over every person's and template's id and
version, computed the same way on both ends, so a door can tell that its replica is the
site's (or was tampered with).

**Events in** (:func:`ingest_events`): inserted once per id however often a door sends
them (``ON CONFLICT (id) DO NOTHING``), each only with its own door's name; snapshots follow
(:func:`store_snapshot`) under the same id, at a path the site makes itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import fields
from datetime import datetime
from typing import Any

from device.errors import FacegateError
from device.events.event import COLUMNS as EVENT_COLUMNS
from device.events.snapshots import Snapshots, snapshot_path
from device.gallery.migrations import write_transaction
from device.gallery.store import JPEG_MAGIC, Gallery, Person

MAX_PAGE = 1000
PERSON_COLUMNS = tuple(field.name for field in fields(Person))
TEMPLATE_COLUMNS = ("id", "person_id", "model", "embedding", "dim", "quality", "source_sha256",
                    "source", "created_at", "updated_at", "version")
ENTITIES = {"person": ("people", PERSON_COLUMNS), "template": ("templates", TEMPLATE_COLUMNS)}
MAX_SNAPSHOT_BYTES = 2 * 2**20  # a face crop or a 320 px thumbnail is tens of kilobytes
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class BadSyncRequest(FacegateError):
    """What a door sent cannot be taken (the sync API answers 400 with the message)."""


def head(gallery: Gallery) -> dict[str, Any]:
    """The site's latest change seq and the gallery's model."""
    return {"head": gallery.change_seq(), "model": gallery.model}


def changes_since(gallery: Gallery, since: int, limit: int = MAX_PAGE) -> dict[str, Any]:
    """The next page of changes after seq ``since``: ``{"changes": [...], "next": seq,
    "more": bool, "head": seq, "model": ...}``. Each change is ``{"seq", "entity", "id",
    "op": "upsert" | "delete", "row"}``, in seq order, one per entity (its newest entry in
    the page). A door applies the page in one transaction and then asks after ``next``."""
    limit = max(1, min(int(limit), MAX_PAGE))
    entries = gallery.db.execute(
        "SELECT seq, entity, entity_id FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
        [int(since), limit]).fetchall()
    newest: dict[tuple[str, str], int] = {}
    for seq, entity, entity_id in entries:
        newest[(entity, entity_id)] = seq
    rows = {entity: _rows(gallery, entity, [key[1] for key in newest if key[0] == entity])
            for entity in ENTITIES}
    changes = []
    for (entity, entity_id), seq in sorted(newest.items(), key=lambda item: item[1]):
        row = rows[entity].get(entity_id)
        changes.append({"seq": seq, "entity": entity, "id": entity_id,
                        "op": "delete" if row is None else "upsert", "row": row})
    next_seq = entries[-1][0] if entries else int(since)
    state = head(gallery)
    return {"changes": changes, "next": next_seq, "more": len(entries) == limit, **state}


def snapshot_page(gallery: Gallery, entity: str, after: str = "",
                  limit: int = MAX_PAGE) -> dict[str, Any]:
    """Every ``entity`` ("person" or "template") row with an id after ``after``, by id:
    ``{"rows": [...], "more": bool}``."""
    if entity not in ENTITIES:
        raise BadSyncRequest(f"entity is one of {', '.join(ENTITIES)}")
    table, columns = ENTITIES[entity]
    limit = max(1, min(int(limit), MAX_PAGE))
    found = list(gallery.db.query(
        f"SELECT {', '.join(columns)} FROM {table} WHERE id > ? ORDER BY id LIMIT ?",
        [after, limit]))
    return {"rows": [_wire(entity, row) for row in found], "more": len(found) == limit}


def replica_digest(db: Any) -> str:
    """SHA-256 (hex) over every person's and template's id and version, by id: the same on
    a door's replica and at the site when they hold the same gallery."""
    digest = hashlib.sha256()
    for entity, (table, _) in ENTITIES.items():
        for row_id, version in db.execute(f"SELECT id, version FROM {table} ORDER BY id"):
            digest.update(f"{entity} {row_id} {version}\n".encode())
    return digest.hexdigest()


def digest_at_head(gallery: Gallery) -> dict[str, Any]:
    """``{"head", "digest"}`` read in one transaction, so the digest is the gallery's at
    exactly that seq (a door compares only when its own replica is at that seq)."""
    with write_transaction(gallery.db):  # the write lock: no change lands in between
        return {"head": gallery.change_seq(), "digest": replica_digest(gallery.db)}


# --- A model swap, fleet-wide -------------------------------------------------------------------


def swap_model(gallery: Gallery, model: str, embeddings: dict[str, Any]) -> int:
    """The site's re-embed: a second set of templates under ``model`` beside the current one
    (:meth:`~device.gallery.store.Gallery.add_model_set`), then the old set retired as soon
    as no door matches with it (:func:`retire_old_sets`)."""
    added = gallery.add_model_set(model, embeddings)
    retire_old_sets(gallery)
    return added


def retire_old_sets(gallery: Gallery) -> int:
    """Remove the templates of models other than the gallery's once every registered door
    reports that its replica has moved to the gallery's model (a door still on the old set
    keeps it: it is never blind). Returns how many went."""
    model = gallery.model
    behind = gallery.db.execute(
        "SELECT COUNT(*) FROM site_doors WHERE removed_at IS NULL"
        " AND (replica_model IS NULL OR replica_model != ?)", [model]).fetchone()[0]
    others = gallery.db.execute("SELECT COUNT(*) FROM templates WHERE model != ?",
                                [model]).fetchone()[0]
    if behind or not others:
        return 0
    return gallery.retire_other_models()


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def model_card(models_dir: Any, name: str) -> Any:
    """The card of a model the site serves its doors (its own, the one it re-embedded
    with); the name is checked before it comes near a path."""
    from device.vision.models import load_card

    if not MODEL_NAME.fullmatch(name or ""):
        raise BadSyncRequest("not a model name")
    return load_card(name, models_dir)


# --- Events in ---------------------------------------------------------------------------------

_EVENT_TEXT = ("id", "at", "door", "kind", "person_id", "person_name", "reason")


def ingest_events(gallery: Gallery, door_id: str, events: list[Any]) -> list[str]:
    """Store the events a door sent (each once, however often it is sent); return the
    ids the site now holds, for the door to forget. Raises :class:`BadSyncRequest` for an
    event that is not one, or that names another door, and then stores none of the batch."""
    if not isinstance(events, list):
        raise BadSyncRequest("events must be a list")
    rows = [_event_row(event, door_id) for event in events]
    with write_transaction(gallery.db):
        for row in rows:
            gallery.db.execute(
                f"INSERT INTO events ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})"
                " ON CONFLICT (id) DO NOTHING", list(row.values()))
    return [row["id"] for row in rows]


def store_snapshot(gallery: Gallery, snapshots: Snapshots, door_id: str, event_id: str,
                   which: str, data: bytes) -> None:
    """Keep one of an event's snapshots (``which``: "face" or "frame") at the path the site
    makes from the event's id and time; the event must be this door's and already stored.
    Sending it again replaces it (the same bytes)."""
    if which not in ("face", "frame"):
        raise BadSyncRequest("a snapshot is 'face' or 'frame'")
    if not data.startswith(JPEG_MAGIC) or len(data) > MAX_SNAPSHOT_BYTES:
        raise BadSyncRequest(f"a snapshot is a JPEG of at most {MAX_SNAPSHOT_BYTES} bytes")
    row = gallery.db.execute("SELECT at, door, face_path, frame_path FROM events WHERE id = ?",
                             [event_id]).fetchone()
    if row is None or row[1] != door_id:
        raise BadSyncRequest(f"no event {event_id} of door {door_id} is stored here")
    relative = snapshot_path(event_id, datetime.fromisoformat(row[0]), which)
    snapshots.save(relative, data)
    face, frame = (relative if which == "face" else row[2],
                   relative if which == "frame" else row[3])
    size = sum(snapshots.path(path).stat().st_size for path in (face, frame)
               if path and snapshots.path(path).exists())
    with write_transaction(gallery.db):
        gallery.db.execute(
            "UPDATE events SET face_path = ?, frame_path = ?, snapshot_bytes = ?,"
            " version = version + 1 WHERE id = ?", [face, frame, size, event_id])


def _event_row(event: Any, door_id: str) -> dict[str, Any]:
    if not isinstance(event, dict) or set(event) - set(EVENT_COLUMNS):
        raise BadSyncRequest(f"an event is an object of {', '.join(EVENT_COLUMNS)}")
    for key in _EVENT_TEXT:
        value = event.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > 1000):
            raise BadSyncRequest(f"an event's {key} is text")
    if not isinstance(event.get("id"), str) or not UUID.fullmatch(event["id"]):
        raise BadSyncRequest("an event's id is a uuid")
    if event.get("door") != door_id:
        raise BadSyncRequest(f"door {door_id} may send its own events only, not "
                             f"{event.get('door')!r}'s")
    try:
        when = datetime.fromisoformat(event["at"])
    except (KeyError, TypeError, ValueError):
        raise BadSyncRequest("an event's at is an ISO 8601 time") from None
    if when.tzinfo is None or not isinstance(event.get("kind"), str):
        raise BadSyncRequest("an event has a kind and a time with its zone")
    score = event.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
        raise BadSyncRequest("an event's score is a number")
    detail = event.get("detail")
    if detail is not None and not isinstance(detail, dict):
        raise BadSyncRequest("an event's detail is an object")
    version = event.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BadSyncRequest("an event's version is a whole number")
    # Snapshot paths come from the site, once their files have arrived: never from a door.
    return {"id": event["id"], "at": event["at"], "door": door_id, "kind": event["kind"],
            "person_id": event.get("person_id"), "person_name": event.get("person_name"),
            "score": None if score is None else float(score), "reason": event.get("reason"),
            "face_path": None, "frame_path": None, "snapshot_bytes": 0,
            "detail": None if detail is None else json.dumps(detail), "version": version}


# --- Rows on the wire --------------------------------------------------------------------------


def _rows(gallery: Gallery, entity: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    table, columns = ENTITIES[entity]
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for row in gallery.db.query(
                f"SELECT {', '.join(columns)} FROM {table}"
                f" WHERE id IN ({', '.join('?' * len(chunk))})", chunk):
            found[row["id"]] = _wire(entity, row)
    return found


def _wire(entity: str, row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON: an embedding's bytes as base64, the flag as a boolean."""
    row = dict(row)
    if entity == "template":
        row["embedding"] = base64.b64encode(bytes(row["embedding"])).decode()
    else:
        row["active"] = bool(row["active"])
    return row
