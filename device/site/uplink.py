"""A member door's events on their way up to the site, exactly once in effect.

The access log writes an ``uplink`` row in the same transaction as each event (migration 9;
``EventLog(uplink=True)``). :func:`send_pending` reads the oldest, sends the events *as they
are now* (an erased person's event goes up without them), then each one's snapshots, and
forgets a row only once the site has said it holds the event: the site stores each id once
(``ON CONFLICT DO NOTHING``), so a door that crashes after sending and before forgetting
sends it again and nothing is doubled. A site away for hours finds everything waiting.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from device.errors import SiteUnreachable
from device.events.event import COLUMNS
from device.events.snapshots import Snapshots
from device.gallery.migrations import write_transaction
from device.gallery.store import Gallery

log = logging.getLogger(__name__)

BATCH = 200


def pending_count(gallery: Gallery) -> int:
    return gallery.db.execute("SELECT COUNT(*) FROM uplink").fetchone()[0]


def add_row(db: Any, event_id: str, created_at: str) -> None:
    """Inside the event's own transaction: queue it for the site."""
    db.execute("INSERT INTO uplink (event_id, created_at) VALUES (?, ?)", [event_id, created_at])


def send_pending(gallery: Gallery, snapshots: Snapshots, client: Any,
                 batch: int = BATCH) -> int:
    """Send everything waiting, oldest first, a batch at a time; return how many events the
    site acknowledged. Raises :class:`SiteUnreachable` when the site cannot take them (what
    was acknowledged before stays forgotten; the rest waits)."""
    sent = 0
    while True:
        rows = gallery.db.execute(
            f"SELECT uplink.seq, {', '.join('events.' + c for c in COLUMNS)} FROM uplink"
            " JOIN events ON events.id = uplink.event_id ORDER BY uplink.seq LIMIT ?",
            [batch]).fetchall()
        if not rows:
            if pending_count(gallery):  # rows whose event is gone: nothing to send
                _forget_orphans(gallery)
            return sent
        events = [dict(zip(COLUMNS, row[1:], strict=True)) for row in rows]
        for event in events:
            event["detail"] = json.loads(event["detail"]) if event["detail"] else None
        wire = [{k: v for k, v in event.items()
                 if k not in ("face_path", "frame_path", "snapshot_bytes")} for event in events]
        stored = set(client.post("/sync/events", {"events": wire}).get("stored", []))
        done = []
        for (seq, *_), event in zip(rows, events, strict=True):
            if event["id"] not in stored:
                continue
            _send_snapshots(snapshots, client, event)
            done.append((seq, event["id"]))
        with write_transaction(gallery.db):
            for seq, event_id in done:
                gallery.db.execute("DELETE FROM uplink WHERE seq = ? AND event_id = ?",
                                   [seq, event_id])
        sent += len(done)
        if len(done) < len(rows):
            raise SiteUnreachable(f"the site kept {len(done)} of {len(rows)} events sent")


def _send_snapshots(snapshots: Snapshots, client: Any, event: dict[str, Any]) -> None:
    for which, relative in (("face", event["face_path"]), ("frame", event["frame_path"])):
        if not relative:
            continue
        try:
            data = Path(snapshots.path(relative)).read_bytes()
        except (OSError, ValueError) as error:  # removed by retention meanwhile: no matter
            log.info("snapshot %s of event %s not sent: %s", which, event["id"], error)
            continue
        client.put(f"/sync/events/{event['id']}/snapshots/{which}", data, "image/jpeg")


def _forget_orphans(gallery: Gallery) -> None:
    """Rows whose event is gone (a file edited by hand; retention's trigger removes the
    others): nothing to send."""
    with write_transaction(gallery.db):
        gallery.db.execute("DELETE FROM uplink WHERE event_id NOT IN (SELECT id FROM events)")
