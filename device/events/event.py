"""One door decision as a value: what happened, when, at which door, to whom.

Times are UTC ISO 8601 text with milliseconds and a trailing ``Z`` (the gallery's format), so
they sort as text in SQLite and read the same on every door of a site.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np

KINDS = (
    "granted",
    "denied",
    "unknown",
    "attack",
    "forced_open",
    "held_open",
    "exit_button",
    "manual_unlock",
    "door_closed",
    "unclean_shutdown",
)
"""What an event can record: a face decision (the first four: ``attack`` is a face judged a
presentation attack, a photo or a screen held up, with the person it resembles, if anyone,
and its liveness score in ``detail["liveness"]``), something the door did, or
``unclean_shutdown``: the daemon found, at start, that its last run never stopped cleanly
(killed, crashed, power lost), so a hold-open or an unlock then may have left no record."""


@dataclass(frozen=True)
class Event:
    """A row of the access log.

    ``face_path`` and ``frame_path`` are relative to the snapshots folder (``YYYY/MM/DD/
    <id>-face.jpg``), or None when no snapshot was kept or retention has removed it;
    ``snapshot_bytes`` is their size together. ``score`` is the best cosine of a face
    decision (for an ``attack``, to the person it resembles). ``detail`` is free JSON for the
    decision's particulars (a face decision's ``liveness`` score and ``liveness_threshold``
    when the liveness check is on; an attack's ``liveness_votes`` too); hazard: it is not
    erased by :meth:`~device.events.EventLog.delete_person`, so never put names or person
    ids in it. ``version`` grows by one whenever the row changes (snapshots removed, person
    erased). Not hashable when ``detail`` is set (a dict).
    """

    id: str
    at: str
    door: str
    kind: str
    person_id: str | None = None
    person_name: str | None = None
    score: float | None = None
    reason: str | None = None
    face_path: str | None = None
    frame_path: str | None = None
    snapshot_bytes: int = 0
    detail: dict[str, Any] | None = None
    version: int = 1

    @property
    def when(self) -> datetime:
        """``at`` as a timezone-aware UTC datetime."""
        return datetime.fromisoformat(self.at)

    def to_json(self) -> dict[str, Any]:
        """Every field, as JSON-ready values (a copy: changing it leaves the event alone)."""
        return asdict(self)


COLUMNS = tuple(field.name for field in fields(Event))


def utc_text(when: datetime) -> str:
    """``when`` (timezone-aware) as the log's UTC text, e.g. ``2024-06-11T08:02:03.123Z``."""
    if when.tzinfo is None:
        raise ValueError(f"{when!r} has no time zone; the access log needs aware datetimes")
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_from_row(row: dict[str, Any]) -> Event:
    detail = row["detail"]
    return Event(**{**row, "detail": None if detail is None else json.loads(detail)})


def plain_detail(detail: dict[str, Any] | None) -> dict[str, Any] | None:
    """``detail`` as plain JSON values, so the event returned by ``record`` equals the one
    read back. Numpy values become numbers and lists; anything else unknown becomes its
    ``str``: a detail that does not serialise must not cost the event."""
    if detail is None:
        return None
    return json.loads(json.dumps(dict(detail), default=_plain, sort_keys=True))


def _plain(value: object) -> object:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return str(value)
