"""The doors registered with a site, each with its own credential.

A door's credential is ``fgd_`` and 32 random bytes (URL-safe base64), printed once by
``facegate site door add ID``; only its SHA-256 is stored, as API tokens are (32 random bytes
leave nothing to guess). A credential lets its door read the gallery and write its own events,
nothing else: no account of the admin page, no other door's events. Removing a door keeps its
row (its events still name it) and refuses its credential; adding the same id again gives it
a new one.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from device.config import _door_id, _Invalid
from device.errors import FacegateError
from device.gallery.migrations import write_transaction
from device.gallery.store import Gallery

PREFIX = "fgd_"
TOKEN_BYTES = 32
_MAX_TOKEN_LENGTH = 200
# last_contact_at is written at most this often per door: a door polling every few seconds
# must not turn each read into a write.
CONTACT_RESOLUTION_S = 10.0


@dataclass(frozen=True)
class SiteDoor:
    """A door as the site knows it (never its credential)."""

    id: str
    created_at: str
    removed_at: str | None
    last_contact_at: str | None
    replica_seq: int
    replica_model: str | None
    pending_events: int

    @property
    def is_active(self) -> bool:
        return self.removed_at is None


def add_door(location: str | Path, door_id: str) -> str:
    """Register ``door_id`` (a new credential for a removed or existing one); return the
    credential, the only time it is seen."""
    door_id = clean_door_id(door_id)
    token = PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    now = _now()
    with Gallery(location) as gallery, write_transaction(gallery.db):
        gallery.db.execute(
            "INSERT INTO site_doors (id, token_hash, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET token_hash = excluded.token_hash,"
            " removed_at = NULL, version = site_doors.version + 1",
            [door_id, token_hash(token), now])
    return token


def list_doors(location: str | Path) -> list[SiteDoor]:
    with Gallery(location) as gallery:
        return [SiteDoor(**row) for row in gallery.db.query(f"SELECT {_COLUMNS} FROM site_doors"
                                                            " ORDER BY id")]


def get_door(gallery: Gallery, door_id: str) -> SiteDoor | None:
    rows = list(gallery.db.query(f"SELECT {_COLUMNS} FROM site_doors WHERE id = ?", [door_id]))
    return SiteDoor(**rows[0]) if rows else None


def remove_door(location: str | Path, door_id: str) -> SiteDoor:
    """Refuse the door's credential from now on; its row and events stay."""
    with Gallery(location) as gallery, write_transaction(gallery.db):
        door = get_door(gallery, door_id)
        if door is None or not door.is_active:
            raise FacegateError(f"no door {door_id!r} is registered with this site "
                                "(see `facegate site door list`)")
        gallery.db.execute("UPDATE site_doors SET removed_at = ?, version = version + 1"
                           " WHERE id = ?", [_now(), door_id])
        return get_door(gallery, door_id)


def authenticate_door(gallery: Gallery, token: str) -> str | None:
    """The id of the active door whose credential ``token`` is, else None."""
    if not isinstance(token, str) or not token.startswith(PREFIX) \
            or len(token) > _MAX_TOKEN_LENGTH:
        return None
    row = gallery.db.execute("SELECT id FROM site_doors WHERE token_hash = ? AND removed_at"
                             " IS NULL", [token_hash(token)]).fetchone()
    return row[0] if row else None


def record_contact(gallery: Gallery, door_id: str, *, replica_seq: int | None = None,
                   replica_model: str | None = None,
                   pending_events: int | None = None) -> None:
    """Note that the door was heard from now, with what it reported (if anything)."""
    now = _now()
    reported = {"replica_seq": replica_seq, "replica_model": replica_model,
                "pending_events": pending_events}
    reported = {key: value for key, value in reported.items() if value is not None}
    door = get_door(gallery, door_id)
    if door is None:
        return
    recent = door.last_contact_at is not None and (
        _parse(now) - _parse(door.last_contact_at)).total_seconds() < CONTACT_RESOLUTION_S
    if recent and all(getattr(door, key) == value for key, value in reported.items()):
        return
    assignments = ", ".join(["last_contact_at = ?", *(f"{key} = ?" for key in reported)])
    with write_transaction(gallery.db):
        gallery.db.execute(f"UPDATE site_doors SET {assignments} WHERE id = ?",
                           [now, *reported.values(), door_id])


def clean_door_id(door_id: str) -> str:
    try:
        return _door_id(door_id)
    except _Invalid as error:
        raise FacegateError(f"a door id {error}") from None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_COLUMNS = ("id, created_at, removed_at, last_contact_at, replica_seq, replica_model,"
            " pending_events")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
