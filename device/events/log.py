"""The access log: every door decision as a row of the gallery's SQLite file, its snapshots as
JPEG files beside it, and one JSON line on stdout for journald.

Recording never raises because of the disk: when the snapshots cannot be written (disk
full, folder unwritable, free space below the floor) the row is written without them, and
when the row cannot be written (the file is locked or full) the event still reaches the
JSON line on stdout. A door must not stay shut, nor open, because its log failed.

An event whose row could not be written is also kept for later: in memory, and as one JSON
line in the *unsaved* file beside the database (``events-unsaved.jsonl``; on a disk so full
that even that append fails, memory alone keeps it until this process stops).
:meth:`EventLog.restore_unsaved` puts them into the database by event id, so twice is the
same as once; it runs at each retention pass and when the daemon starts.

With an :class:`~device.events.outbox.OutboxFeed` (the daemon gives one when ``[mqtt] url``
is set), each event's outgoing message is written to the outbox in the same transaction as
its row, and the retention pass bounds the outbox too (``device/events/outbox.py``).
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from device.errors import EventNotFound, FacegateError
from device.events import outbox
from device.events.event import (
    COLUMNS,
    KINDS,
    Event,
    event_from_row,
    plain_detail,
    utc_text,
)
from device.events.outbox import OutboxFeed
from device.events.retention import Retention
from device.events.snapshots import (
    Snapshots,
    Writer,
    encode_face,
    encode_frame,
    snapshot_path,
    write_atomic,
)
from device.events.text import journal_line
from device.gallery.engines import DATABASE_ERRORS, insertion_order, time_ordered_id
from device.gallery.migrations import write_transaction
from device.gallery.store import open_database
from device.site.uplink import add_row as uplink_row

logger = logging.getLogger(__name__)

_BATCH = 500  # rows per retention transaction: the write lock is never held for long
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM events"  # named columns: later ones may exist
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
UNSAVED_FILE = "events-unsaved.jsonl"
_MAX_UNSAVED = 10_000  # events kept in memory while the database refuses them


def _utc_now() -> datetime:
    return datetime.now(UTC)


class EventLog:
    """The access log in the SQLite file ``db_path`` (the gallery's, migrated here if need
    be) with snapshots under ``snapshots_dir``, for the door called ``door_id``, keeping
    what ``retention`` allows (the defaults of :class:`Retention` when None).

    ``stdout`` receives one JSON line per event (None: whatever ``sys.stdout`` is at the
    time). ``clock`` returns the timezone-aware now. ``frames`` keeps a thumbnail of the
    whole frame beside the face crop. ``disk_usage`` is called with the snapshots folder
    and returns an object with ``.free`` in bytes (``shutil.disk_usage``); ``write_file``
    stores one snapshot; both are there for tests.

    ``outbox``: write each event's outgoing message to the outbox with its row (None, the
    default: nothing is written there; MQTT is off). ``uplink``: queue each event for the
    site with its row (a member door, ``[site] url``; :mod:`device.site.uplink`).

    One object per thread, as with the gallery: the sqlite3 connection refuses to be
    shared. A daemon that enforces retention from a timer thread opens a second EventLog.
    """

    def __init__(
        self,
        db_path: str | Path,
        snapshots_dir: str | Path,
        *,
        door_id: str,
        retention: Retention | None = None,
        stdout: TextIO | None = None,
        clock: Callable[[], datetime] = _utc_now,
        frames: bool = True,
        disk_usage: Callable[[Path], Any] = shutil.disk_usage,
        write_file: Writer = write_atomic,
        busy_timeout_s: float = 5.0,
        unsaved_path: str | Path | None = None,
        outbox: OutboxFeed | None = None,
        uplink: bool = False,
    ) -> None:
        if not door_id or not isinstance(door_id, str):
            raise ValueError("door_id must be a non-empty string (the door's name in the log)")
        self.db, self.path = open_database(db_path, busy_timeout_s=busy_timeout_s)
        self.location = str(db_path)
        # Beside the gallery file; at a site (PostgreSQL), beside the snapshots folder.
        self.unsaved_path = (Path(unsaved_path) if unsaved_path is not None
                             else (self.path or Path(snapshots_dir)).parent / UNSAVED_FILE)
        self._unsaved: dict[str, Event] = {}  # id -> event, in the order they happened
        self.door_id = door_id
        self.outbox = outbox
        self.uplink = uplink
        self.retention = retention if retention is not None else Retention()
        self.frames = frames
        self.snapshots = Snapshots(Path(snapshots_dir), write_file)
        self._stdout = stdout
        self._clock = clock
        self._disk_usage = disk_usage
        self._low_disk = False
        # Running totals, so that record() notices cheaply when retention is due: loaded on
        # the first record, kept up to date by it, reloaded by enforce(). Other processes
        # only ever lower the truth (delete_person), so the estimate errs on the safe side.
        self._events: int | None = None
        self._snapshot_bytes = 0
        try:
            self.snapshots.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            logger.warning("snapshots folder %s unusable (%s): events are kept without",
                           self.snapshots.root, error)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- Recording -------------------------------------------------------------------------

    def record(
        self,
        kind: str,
        *,
        person_id: str | None = None,
        person_name: str | None = None,
        score: float | None = None,
        reason: str | None = None,
        face_crop: np.ndarray | None = None,
        frame: np.ndarray | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Event:
        """Log one event and return it as stored.

        ``face_crop`` and ``frame`` are BGR uint8 images: the crop is kept at its own size,
        the frame as a thumbnail (320 px at most). Call it after acting on the door: it
        encodes, writes and fsyncs up to two JPEGs and commits a row (a few milliseconds on
        a Pi, more when retention is due). Only a ``kind`` outside :data:`KINDS` raises.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; kinds are {', '.join(KINDS)}")
        when = self._now()
        event_id = time_ordered_id(when)
        paths, size = self._save_snapshots(event_id, when, face_crop, frame)
        event = Event(
            id=event_id,
            at=utc_text(when),
            door=self.door_id,
            kind=kind,
            person_id=person_id,
            person_name=person_name,
            score=None if score is None else float(score),
            reason=reason,
            face_path=paths.get("face"),
            frame_path=paths.get("frame"),
            snapshot_bytes=size,
            detail=plain_detail(detail),
        )
        try:
            self._insert(event)
        except DATABASE_ERRORS as error:
            logger.error("event %s not stored in %s (%s): only its JSON line keeps it",
                         event.id, self.location, error)
            self.snapshots.remove([event.face_path, event.frame_path])
            event = replace(event, face_path=None, frame_path=None, snapshot_bytes=0)
            self._print(event)
            self._keep_unsaved(event)
            return event
        self._print(event)
        self._enforce_when_due(event)
        return event

    def _save_snapshots(
        self, event_id: str, when: datetime, face_crop: np.ndarray | None,
        frame: np.ndarray | None,
    ) -> tuple[dict[str, str], int]:
        images = [("face", face_crop, encode_face)]
        if self.frames:
            images.append(("frame", frame, encode_frame))
        images = [image for image in images if image[1] is not None]
        if not images or self.retention.max_snapshot_bytes == 0 or not self._room_on_disk():
            return {}, 0
        paths, total = {}, 0
        for which, image, encode in images:
            relative = snapshot_path(event_id, when.astimezone(UTC), which)
            try:
                total += self.snapshots.save(relative, encode(image))
            except Exception as error:  # nothing about a snapshot may stop the door
                logger.warning("event %s: %s snapshot not saved: %s", event_id, which, error)
                if isinstance(error, OSError) and error.errno in _DISK_FULL:
                    break
                continue
            paths[which] = relative
        return paths, total

    def _room_on_disk(self) -> bool:
        """Whether free space is above the floor; says so in the log when that changes."""
        free = self._free_bytes()
        low = free is not None and free < self.retention.min_free_bytes
        if low and not self._low_disk:
            logger.warning("%d bytes free under %s, below the floor of %d: events are kept "
                           "without snapshots until retention frees space",
                           free, self.snapshots.root, self.retention.min_free_bytes)
        elif self._low_disk and not low:
            logger.warning("free space under %s is back above the floor: snapshots resume",
                           self.snapshots.root)
        self._low_disk = low
        return not low

    def _insert(self, event: Event) -> None:
        row = event.to_json()
        row["detail"] = None if event.detail is None else json.dumps(event.detail)
        with write_transaction(self.db):
            self.db.execute(
                f"INSERT INTO events ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )
            if self.outbox is not None:  # the same transaction: both rows, or neither
                outbox.add_row(self.db, event, self.outbox)
            if self.uplink:
                uplink_row(self.db, event.id, event.at)
        self._outbox_added()

    def _outbox_added(self) -> None:
        if self.outbox is not None and self.outbox.on_added is not None:
            try:
                self.outbox.on_added()
            except Exception:  # the sender polls as well: a lost wake-up only delays
                logger.exception("outbox wake-up failed")

    def _keep_unsaved(self, event: Event) -> None:
        if len(self._unsaved) < _MAX_UNSAVED:
            self._unsaved[event.id] = event
        try:
            with self.unsaved_path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(event.to_json()) + "\n")
        except OSError as error:
            logger.warning("event %s not kept in %s either (%s): only memory keeps it",
                           event.id, self.unsaved_path, error)

    def restore_unsaved(self) -> int:
        """Put the events the database refused (kept in memory and in the unsaved file) into
        it; return how many were new to it. Idempotent: an event already there (by id) is
        skipped. The file is removed once every line in it is in the database; a line that
        is not an event is logged and dropped. Raises nothing: a database still full keeps
        them for the next try."""
        pending = dict(self._unsaved)
        for event in self._read_unsaved_file():
            pending.setdefault(event.id, event)
        if not pending:
            return 0
        try:
            with write_transaction(self.db):
                added = sum(self._insert_new(event) for event in pending.values())
        except DATABASE_ERRORS as error:
            logger.warning("%d unsaved events still not stored in %s (%s): will try again",
                           len(pending), self.location, error)
            return 0
        self._unsaved.clear()
        if added:
            self._outbox_added()
        try:
            self.unsaved_path.unlink(missing_ok=True)
        except OSError as error:  # harmless: the next pass finds them stored already
            logger.warning("cannot remove %s: %s", self.unsaved_path, error)
        if added:
            logger.warning("%d events that the database had refused are now stored in it",
                           added)
            self._events = None  # the totals are reloaded at the next record
        return added

    def _read_unsaved_file(self) -> list[Event]:
        try:
            text = self.unsaved_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as error:
            logger.warning("cannot read %s: %s", self.unsaved_path, error)
            return []
        events = []
        for number, line in enumerate(text.splitlines(), 1):
            try:
                data = json.loads(line)
                events.append(Event(**{name: data[name] for name in COLUMNS}))
            except (ValueError, TypeError, KeyError):  # a line cut short by a full disk
                if line.strip():
                    logger.warning("%s line %d is not an event: dropped", self.unsaved_path,
                                   number)
        return events

    def _insert_new(self, event: Event) -> bool:
        row = event.to_json()
        row["detail"] = None if event.detail is None else json.dumps(event.detail)
        cursor = self.db.execute(
            f"INSERT INTO events ({', '.join(row)})"
            f" VALUES ({', '.join('?' * len(row))}) ON CONFLICT (id) DO NOTHING",
            list(row.values()))
        if cursor.rowcount == 1 and self.outbox is not None:
            outbox.add_row(self.db, event, self.outbox)
        if cursor.rowcount == 1 and self.uplink:
            uplink_row(self.db, event.id, event.at)
        return cursor.rowcount == 1

    def _print(self, event: Event) -> None:
        stream = self._stdout if self._stdout is not None else sys.stdout
        try:
            stream.write(journal_line(event) + "\n")
            stream.flush()
        except (OSError, ValueError) as error:  # a closed or broken stdout
            logger.warning("event %s not printed: %s", event.id, error)

    def _enforce_when_due(self, stored: Event) -> None:
        try:
            if self._events is None:
                self._load_totals()
            else:
                self._events += 1
                self._snapshot_bytes += stored.snapshot_bytes
            if (
                self._low_disk
                or self._events > self.retention.max_events
                or self._snapshot_bytes > self.retention.max_snapshot_bytes
            ):
                self.enforce()
        except Exception:  # the periodic call will try again
            logger.exception("retention after event %s failed", stored.id)

    # --- Reading ---------------------------------------------------------------------------

    def list(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: str | None = None,
        person_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Event]:
        """Events newest first, from ``since`` (included) to ``until`` (excluded), of one
        ``kind`` and/or one person; ``limit``/``offset`` page through them."""
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        where, params = _filters(since, until, kind, person_id)
        rows = self.db.query(
            f"{_SELECT}{where} ORDER BY at DESC, {insertion_order(self.db)} DESC"
            " LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [event_from_row(row) for row in rows]

    def get(self, event_id: str) -> Event:
        """The event with that id; raises :class:`EventNotFound`."""
        rows = list(self.db.query(f"{_SELECT} WHERE id = ?", [event_id]))
        if not rows:
            raise EventNotFound(f"no event with id {event_id!r} is in the access log")
        return event_from_row(rows[0])

    def count(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: str | None = None,
        person_id: str | None = None,
    ) -> int:
        """How many events there are (matching the same filters as :meth:`list`)."""
        where, params = _filters(since, until, kind, person_id)
        return self.db.execute(f"SELECT COUNT(*) FROM events{where}", params).fetchone()[0]

    def snapshot_file(self, relative: str) -> Path:
        """The file of an event's ``face_path``/``frame_path`` (which may since have gone);
        ``ValueError`` for a path facegate would not make (a web page serves only these)."""
        return self.snapshots.path(relative)

    # --- Privacy ---------------------------------------------------------------------------

    def delete_person(self, person_id: str) -> int:
        """Erase a person from the log; return how many events were theirs.

        Their snapshot files are deleted and their events anonymised: ``person_id``,
        ``person_name`` and the snapshot paths are cleared. The events themselves stay, so
        the door's history (when it opened, why it refused) is whole, but nothing in it
        leads back to the person. Their messages still waiting in the outbox are deleted
        with them (a trigger of migration 7), so their name never leaves the door after.
        Call it before or after ``Gallery.remove_person``; it works when the person is
        already gone. Raises :class:`FacegateError` when some
        files cannot be deleted: those events keep the person, so a second call finishes.
        """
        rows = self.db.execute(
            "SELECT id, face_path, frame_path FROM events WHERE person_id = ?", [person_id]
        ).fetchall()
        erased, errors = [], []
        for event_id, face_path, frame_path in rows:
            failed = self.snapshots.remove([face_path, frame_path])
            errors.extend(failed)
            if not failed:
                erased.append(event_id)
        for start in range(0, len(erased), _BATCH):
            ids = erased[start:start + _BATCH]
            with write_transaction(self.db):
                self.db.execute(
                    "UPDATE events SET person_id = NULL, person_name = NULL, face_path = NULL,"
                    " frame_path = NULL, snapshot_bytes = 0, version = version + 1"
                    f" WHERE id IN ({', '.join('?' * len(ids))})",
                    ids,
                )
        self.snapshots.prune()
        if errors:
            raise FacegateError(
                f"{len(errors)} snapshot file(s) of this person could not be deleted "
                f"({errors[0]}); fix that and remove them again"
            )
        return len(erased)

    # --- Retention -------------------------------------------------------------------------

    def enforce(self) -> dict[str, int]:
        """Apply the retention policy now; return what it did and what is left.

        Keys: ``expired`` (events older than ``max_age_days`` deleted), ``trimmed`` (oldest
        events beyond ``max_events`` deleted), ``snapshots_cleared`` (events whose snapshot
        files were deleted, oldest first, to fit the byte budget and the free-space floor),
        ``bytes_freed``, ``folders_removed``, then ``events`` and ``snapshot_bytes`` left;
        with an outbox, ``outbox_dropped``: waiting messages beyond its ``max_events``,
        oldest first (logged; their events stay in the log).
        Cheap when there is nothing to do (a few indexed queries and one ``statvfs``). A
        file that cannot be deleted is logged and its row kept, to be tried next time.
        """
        self.restore_unsaved()
        cutoff = utc_text(self._now() - timedelta(days=self.retention.max_age_days))
        report = {"expired": self._delete_oldest("at < ?", [cutoff])}
        excess = self.count() - self.retention.max_events
        report["trimmed"] = self._delete_oldest("1", [], limit=excess) if excess > 0 else 0
        report["snapshots_cleared"], report["bytes_freed"] = self._clear_oldest_snapshots()
        report["folders_removed"] = self.snapshots.prune()
        self._load_totals()
        report["events"], report["snapshot_bytes"] = self._events, self._snapshot_bytes
        if self.outbox is not None:
            report["outbox_dropped"] = self._trim_outbox(self.outbox.max_events)
        return report

    def _trim_outbox(self, max_events: int) -> int:
        with write_transaction(self.db):
            dropped = outbox.trim(self.db, max_events)
        if dropped:
            logger.warning("%d events waiting to be published were dropped, the oldest, to "
                           "keep the outbox within %d (the broker has been away long); they "
                           "stay in the access log", dropped, max_events)
        return dropped

    def _delete_oldest(self, where: str, params: Sequence[Any], limit: int | None = None) -> int:
        """Delete the oldest events matching ``where`` (at most ``limit``), files first: a
        crash in between leaves a row without its file, never a file nobody will delete."""
        deleted = 0
        while limit is None or deleted < limit:
            batch = _BATCH if limit is None else min(_BATCH, limit - deleted)
            rows = self.db.execute(
                f"SELECT id, face_path, frame_path FROM events WHERE {where}"
                f" ORDER BY at, {insertion_order(self.db)} LIMIT ?",
                [*params, batch],
            ).fetchall()
            gone = self._remove_files(rows)
            if gone:
                with write_transaction(self.db):
                    self.db.execute(
                        f"DELETE FROM events WHERE id IN ({', '.join('?' * len(gone))})", gone
                    )
                deleted += len(gone)
            if len(gone) < len(rows) or len(rows) < batch:
                break  # done, or stuck on a file that would not go
        return deleted

    def _clear_oldest_snapshots(self) -> tuple[int, int]:
        cleared = freed = 0
        total = self._sum_snapshot_bytes()
        while (needed := self._bytes_to_free(total)) > 0:
            rows = self.db.execute(
                "SELECT id, face_path, frame_path, snapshot_bytes FROM events"
                " WHERE snapshot_bytes > 0 ORDER BY at LIMIT ?",
                [_BATCH],
            ).fetchall()
            chosen, size = [], 0
            for row in rows:
                if size >= needed:
                    break
                chosen.append(row)
                size += row[3]
            gone = set(self._remove_files(chosen))
            if gone:
                with write_transaction(self.db):
                    self.db.execute(
                        "UPDATE events SET face_path = NULL, frame_path = NULL,"
                        " snapshot_bytes = 0, version = version + 1"
                        f" WHERE id IN ({', '.join('?' * len(gone))})",
                        list(gone),
                    )
            size = sum(row[3] for row in chosen if row[0] in gone)
            cleared, freed, total = cleared + len(gone), freed + size, total - size
            if not rows or len(gone) < len(chosen):
                break  # nothing left to clear, or stuck on a file that would not go
        return cleared, freed

    def _bytes_to_free(self, total: int) -> int:
        over_budget = total - self.retention.max_snapshot_bytes
        free = self._free_bytes()
        under_floor = 0 if free is None else self.retention.min_free_bytes - free
        return max(over_budget, under_floor)

    def _remove_files(self, rows: Sequence[Sequence[Any]]) -> list[str]:
        """Delete the snapshot files of ``(id, face_path, frame_path, ...)`` rows; return the
        ids whose files are all gone."""
        gone = []
        for event_id, face_path, frame_path, *_ in rows:
            errors = self.snapshots.remove([face_path, frame_path])
            for error in errors:
                logger.warning("retention: event %s: %s", event_id, error)
            if not errors:
                gone.append(event_id)
        return gone

    # --- Private ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the clock must return timezone-aware datetimes")
        return now

    def _free_bytes(self) -> int | None:
        folder = self.snapshots.root
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            return int(self._disk_usage(folder).free)
        except OSError as error:
            logger.warning("cannot read free space under %s: %s", folder, error)
            return None

    def _sum_snapshot_bytes(self) -> int:
        # Matches the partial index events_snapshots, which covers this sum.
        return self.db.execute(
            "SELECT COALESCE(SUM(snapshot_bytes), 0) FROM events WHERE snapshot_bytes > 0"
        ).fetchone()[0]

    def _load_totals(self) -> None:
        self._events = self.count()
        self._snapshot_bytes = self._sum_snapshot_bytes()


def _filters(
    since: datetime | None, until: datetime | None, kind: str | None, person_id: str | None
) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if since is not None:
        clauses.append("at >= ?")
        params.append(utc_text(since))
    if until is not None:
        clauses.append("at < ?")
        params.append(utc_text(until))
    if kind is not None:
        if kind not in KINDS:
            raise FacegateError(f"unknown event kind {kind!r}; kinds are {', '.join(KINDS)}")
        clauses.append("kind = ?")
        params.append(kind)
    if person_id is not None:
        clauses.append("person_id = ?")
        params.append(person_id)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
