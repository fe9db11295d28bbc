"""The outbox: access-log events waiting to leave the door, oldest first.

When a door publishes its events (``[mqtt]``, docs/mqtt.md), :class:`~device.events.EventLog`
writes each event's message here in the *same* SQLite transaction as the event's row
(``OutboxFeed``): there is never an event without its message, nor a message without its
event. A sender (``device/mqtt/publisher.py``) reads the oldest rows, publishes them and
removes each only once the receiver has acknowledged it; so a broker that is away, or a door
that restarts, delays messages but loses none, and at worst one is sent twice (the receiver
de-duplicates by the event's ``id``). The message is transport-neutral JSON
(:func:`event_message`): the flow that the site server will consume too.

Bounds: a row never outlives its event (triggers of migration 7 delete it with the event,
when retention removes the event and when the event's person is erased), and beyond
``OutboxFeed.max_events`` waiting rows the oldest are dropped at the retention pass, with a
logged count; their events stay in the access log.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.events.event import Event

log = logging.getLogger(__name__)

TABLE = "outbox"
DEFAULT_MAX_EVENTS = 50_000


@dataclass(frozen=True)
class OutboxFeed:
    """What :class:`~device.events.EventLog` needs to fill the outbox.

    ``snapshot_base_url``: where the door's web page is reached from outside (no trailing
    slash), for the snapshot links in each message; None: messages carry no links.
    ``max_events``: waiting rows kept at most (the oldest beyond are dropped).
    ``on_added``: called after each commit that added rows, from the recording thread (the
    sender's wake-up; it must be quick and must not raise).
    """

    snapshot_base_url: str | None = None
    max_events: int = DEFAULT_MAX_EVENTS
    on_added: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_events, bool) or not isinstance(self.max_events, int) \
                or self.max_events < 1:
            raise ValueError(f"OutboxFeed.max_events must be a whole number >= 1, got "
                             f"{self.max_events!r}")

    def message(self, event: Event) -> str:
        return json.dumps(event_message(event, self.snapshot_base_url), sort_keys=True)


def event_message(event: Event, snapshot_base_url: str | None = None) -> dict[str, Any]:
    """The message that tells the outside world about ``event``.

    The access log's own fields (``id`` is the event's UUID, by which receivers
    de-duplicate; ``at`` UTC ISO 8601; ``kind`` one of :data:`~device.events.KINDS`),
    ``event_type`` (the kind again: Home Assistant's event entity reads that key), the
    liveness score when the decision had one, and links to the snapshots on the door's
    web page (``/api/events/<id>/face.jpg``: an admin's session or API token opens them)
    rather than the pictures themselves. Never the embedding, never the picture.
    """
    detail = event.detail or {}
    snapshots = None
    if snapshot_base_url:
        base = f"{snapshot_base_url}/api/events/{event.id}"
        snapshots = {"face": f"{base}/face.jpg" if event.face_path else None,
                     "frame": f"{base}/frame.jpg" if event.frame_path else None}
    return {
        "id": event.id,
        "at": event.at,
        "door": event.door,
        "kind": event.kind,
        "event_type": event.kind,
        "person_id": event.person_id,
        "person_name": event.person_name,
        "score": event.score,
        "reason": event.reason,
        "liveness": detail.get("liveness"),
        "snapshots": snapshots,
        "version": event.version,
    }


def add_row(db: Any, event: Event, feed: OutboxFeed) -> None:
    """Insert ``event``'s message; the caller holds the transaction of the event's row."""
    db.execute(f"INSERT INTO {TABLE} (event_id, created_at, payload) VALUES (?, ?, ?)",
               [event.id, event.at, feed.message(event)])


def trim(db: Any, max_events: int) -> int:
    """Drop the oldest waiting rows beyond ``max_events``; return how many went. The caller
    holds a write transaction."""
    excess = db.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0] - max_events
    if excess <= 0:
        return 0
    db.execute(f"DELETE FROM {TABLE} WHERE seq IN "
               f"(SELECT seq FROM {TABLE} ORDER BY seq LIMIT ?)", [excess])
    return excess


@dataclass(frozen=True)
class Waiting:
    """One waiting message: its place in the queue, its event, the JSON text to send."""

    seq: int
    event_id: str
    payload: str


class Outbox:
    """The sender's side of the outbox, on its own connection to ``db_path`` (one per thread,
    like the gallery's). ``busy_timeout_s``: how long a removal waits for another writer."""

    def __init__(self, db_path: str | Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(db_path)
        self.db = sqlite3.connect(str(db_path), timeout=busy_timeout_s,
                                  isolation_level=None)  # autocommit: each statement alone

    def close(self) -> None:
        self.db.close()

    def oldest(self, limit: int, *, skip: Sequence[int] = ()) -> list[Waiting]:
        """Up to ``limit`` waiting messages, oldest first, leaving out the seqs in ``skip``
        (those in flight)."""
        skipped = set(skip)
        rows = self.db.execute(f"SELECT seq, event_id, payload FROM {TABLE} ORDER BY seq "
                               "LIMIT ?", [limit + len(skipped)]).fetchall()
        return [Waiting(*row) for row in rows if row[0] not in skipped][:limit]

    def remove(self, delivered: Sequence[tuple[int, str]]) -> None:
        """Remove delivered messages, each named by ``(seq, event_id)``: a seq alone could
        name a newer row after the file was restored from a backup."""
        if not delivered:
            return
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(f"DELETE FROM {TABLE} WHERE seq = ? AND event_id = ?",
                                list(delivered))

    def count(self) -> int:
        return self.db.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone()[0]
