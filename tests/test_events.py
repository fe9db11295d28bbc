"""The access log: rows in the gallery's SQLite file, JPEG snapshots beside it, a JSON line
per event, retention, and erasing a person.

Every test opens a real file through ``Gallery`` first (so the migrations run, as on a door)
and then an ``EventLog`` on the same file; snapshots are real JPEGs of a real photo. Time and
free disk space are handed in, the way the daemon hands in its hardware.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.errors import EventNotFound, FacegateError, TimeUnreadable
from device.events import (
    KINDS,
    Event,
    EventLog,
    Retention,
    format_event_line,
    parse_since,
)
from device.gallery import Gallery
from device.gallery.migrations import MIGRATIONS, schema_version
from tests.conftest import DATA, load

START = datetime(2024, 6, 11, 8, 0, 0, tzinfo=UTC)


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Disk:
    """A disk of ``capacity`` bytes holding only the snapshots: free space is what the JPEG
    files under ``root`` leave, so deleting one really frees space."""

    def __init__(self, root: Path, capacity: int) -> None:
        self.root = root
        self.capacity = capacity

    def __call__(self, path: Path) -> SimpleNamespace:
        used = sum(file.stat().st_size for file in self.root.rglob("*.jpg"))
        return SimpleNamespace(free=self.capacity - used)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load(DATA / "people" / "Colin_Powell" / "Colin_Powell_0001.jpg")


@pytest.fixture(scope="module")
def face(photo) -> np.ndarray:
    return photo[60:190, 70:180].copy()


@pytest.fixture
def db_path(tmp_path) -> Path:
    path = tmp_path / "facegate.db"
    Gallery(path).close()  # the gallery's migrations create the events table
    return path


@pytest.fixture
def snapshots(tmp_path) -> Path:
    return tmp_path / "snapshots"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def out() -> io.StringIO:
    return io.StringIO()


def open_log(db_path, snapshots, clock, out=None, **kwargs) -> EventLog:
    return EventLog(db_path, snapshots, door_id="front", clock=clock,
                    stdout=out if out is not None else io.StringIO(), **kwargs)


@pytest.fixture(params=["sqlite", "postgresql"])
def log(request, db_path, snapshots, clock, out):
    """An access log on each engine: a door's file, and a site's PostgreSQL (tests about the
    file itself take ``db_path``)."""
    location = db_path if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")
    with open_log(location, snapshots, clock, out) as fresh:
        yield fresh


def jpegs(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*.jpg"))


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def granted(log, face, photo, clock, name="Colin Powell", person_id="p-colin", **kwargs):
    clock.advance(seconds=1)
    return log.record("granted", person_id=person_id, person_name=name, score=0.61,
                      face_crop=face, frame=photo, **kwargs)


# --- Recording -----------------------------------------------------------------------------


def test_recording_an_event_writes_a_row_two_jpegs_and_one_json_line(
    log, face, photo, snapshots, out, db_path
):
    event = log.record("granted", person_id="p-colin", person_name="Colin Powell",
                       score=np.float32(0.6125), reason=None, face_crop=face, frame=photo,
                       detail={"runner_up": np.float32(0.25), "votes": 2})

    assert event.at == "2024-06-11T08:00:00.000Z" and event.door == "front"
    assert event.face_path == f"2024/06/11/{event.id}-face.jpg"
    assert event.frame_path == f"2024/06/11/{event.id}-frame.jpg"
    assert jpegs(snapshots) == sorted([event.face_path, event.frame_path])
    assert event.snapshot_bytes == sum((snapshots / p).stat().st_size for p in jpegs(snapshots))
    assert not list(snapshots.rglob(".*.tmp"))
    assert event.detail == {"runner_up": pytest.approx(0.25), "votes": 2}
    with Gallery(log.location) as gallery:  # the row is in the gallery, seen by another reader
        row = gallery.db.execute("SELECT kind, person_name, score FROM events").fetchall()
    assert row == [("granted", "Colin Powell", pytest.approx(0.6125))]
    assert log.get(event.id) == event and log.count() == 1

    (line,) = lines(out)
    assert line == {
        "event": "access", "id": event.id, "at": event.at, "door": "front", "kind": "granted",
        "person": "Colin Powell", "person_id": "p-colin", "score": 0.6125, "reason": None,
        "face": event.face_path, "frame": event.frame_path,
    }


def test_snapshots_are_real_jpegs_the_face_at_its_size_the_frame_as_a_320_px_thumbnail(
    log, face, photo, snapshots
):
    big_frame = cv2.resize(photo, (640, 480))
    event = log.record("unknown", reason="stranger", face_crop=face, frame=big_frame)
    small = log.record("unknown", reason="stranger", frame=photo)

    assert cv2.imread(str(snapshots / event.face_path)).shape == face.shape
    assert cv2.imread(str(snapshots / event.frame_path)).shape == (240, 320, 3)
    assert cv2.imread(str(snapshots / small.frame_path)).shape == photo.shape  # never enlarged
    assert small.face_path is None


def test_an_event_without_images_has_no_snapshots(log, snapshots):
    event = log.record("door_closed")
    assert (event.face_path, event.frame_path, event.snapshot_bytes) == (None, None, 0)
    assert jpegs(snapshots) == []


def test_frames_are_not_kept_when_the_site_turns_them_off(db_path, snapshots, clock, face, photo):
    with open_log(db_path, snapshots, clock, frames=False) as log:
        event = log.record("denied", person_id="p", person_name="Colin Powell",
                           reason="inactive", face_crop=face, frame=photo)
    assert event.face_path and event.frame_path is None
    assert jpegs(snapshots) == [event.face_path]


def test_an_unknown_kind_is_a_programming_error_when_recording_and_a_user_error_when_listing(
    log,
):
    with pytest.raises(ValueError, match="unknown event kind 'opened'"):
        log.record("opened")
    with pytest.raises(FacegateError, match="kinds are granted, denied"):
        log.list(kind="grantd")
    assert log.count() == 0


def test_a_full_disk_still_records_the_event_without_snapshots(
    db_path, snapshots, clock, out, face, photo, caplog
):
    attempts = []

    def disk_full(path: Path, data: bytes) -> None:
        attempts.append(path.name)
        raise OSError(errno.ENOSPC, "No space left on device")

    with open_log(db_path, snapshots, clock, out, write_file=disk_full) as log:
        with caplog.at_level(logging.WARNING, logger="device.events"):
            event = log.record("granted", person_id="p", person_name="Colin Powell",
                               score=0.7, face_crop=face, frame=photo)
        assert log.get(event.id) == event

    assert (event.face_path, event.frame_path, event.snapshot_bytes) == (None, None, 0)
    assert len(attempts) == 1  # a full disk is not tried again for the frame
    assert "No space left on device" in caplog.text
    assert lines(out)[0]["face"] is None and lines(out)[0]["kind"] == "granted"


def test_a_snapshots_folder_that_cannot_be_written_still_records_the_event(
    log, snapshots, face, caplog
):
    (snapshots / "2024").write_text("a file where the year's folder should be")
    with caplog.at_level(logging.WARNING, logger="device.events"):
        event = log.record("unknown", reason="stranger", face_crop=face)
    assert log.get(event.id).face_path is None
    assert "face snapshot not saved" in caplog.text
    assert jpegs(snapshots) == []


def test_a_locked_database_still_prints_the_event_and_leaves_no_snapshot_behind(
    db_path, snapshots, clock, out, face, caplog
):
    other = sqlite3.connect(db_path)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with open_log(db_path, snapshots, clock, out, busy_timeout_s=0.05) as log:
            with caplog.at_level(logging.ERROR, logger="device.events"):
                event = log.record("granted", person_id="p", person_name="Colin Powell",
                                   face_crop=face)
    finally:
        other.rollback()
        other.close()
    assert "only its JSON line keeps it" in caplog.text
    assert event.face_path is None and jpegs(snapshots) == []
    assert lines(out)[0]["id"] == event.id


# --- Reading -------------------------------------------------------------------------------


def test_events_are_listed_newest_first_and_filtered_by_time_kind_and_person(log, clock, face):
    colin = log.record("granted", person_id="p-colin", person_name="Colin Powell")
    clock.advance(minutes=10)
    stranger = log.record("unknown", reason="stranger", face_crop=face)
    clock.advance(minutes=10)
    refused = log.record("denied", person_id="p-colin", person_name="Colin Powell",
                         reason="outside schedule")
    same_millisecond = log.record("door_closed")

    assert log.list() == [same_millisecond, refused, stranger, colin]
    assert log.list(person_id="p-colin") == [refused, colin]
    assert log.list(kind="unknown") == [stranger]
    assert log.list(since=START + timedelta(minutes=5)) == [same_millisecond, refused, stranger]
    assert log.list(until=START + timedelta(minutes=10)) == [colin]  # until is excluded
    assert log.list(limit=2, offset=1) == [refused, stranger]
    assert log.count(person_id="p-colin") == 2 and log.count() == 4


def test_getting_an_unknown_event_says_so(log):
    with pytest.raises(EventNotFound, match="no event with id 'nope'"):
        log.get("nope")


# --- Retention -----------------------------------------------------------------------------


def test_retention_deletes_events_older_than_max_age_with_their_files_and_empty_folders(
    db_path, snapshots, clock, face, photo
):
    with open_log(db_path, snapshots, clock) as log:
        old = [granted(log, face, photo, clock) for _ in range(2)]
        clock.advance(days=5)
        recent = granted(log, face, photo, clock)
    with open_log(db_path, snapshots, clock, retention=Retention(max_age_days=3)) as log:
        report = log.enforce()
        assert log.list() == [recent]
    assert report["expired"] == 2 and report["events"] == 1
    assert report["folders_removed"] == 1  # 2024/06/11; the month still holds 06/16
    assert not (snapshots / "2024/06/11").exists()
    assert jpegs(snapshots) == sorted([recent.face_path, recent.frame_path])
    assert all(not (snapshots / event.face_path).exists() for event in old)


def test_retention_keeps_only_the_newest_max_events(db_path, snapshots, clock, face, photo):
    with open_log(db_path, snapshots, clock) as log:
        events = [granted(log, face, photo, clock) for _ in range(5)]
    with open_log(db_path, snapshots, clock, retention=Retention(max_events=2)) as log:
        assert log.enforce()["trimmed"] == 3
        assert log.list() == events[:-3:-1]
    assert jpegs(snapshots) == sorted(p for e in events[3:] for p in (e.face_path, e.frame_path))


def test_retention_removes_the_oldest_snapshots_first_to_fit_the_byte_budget(
    db_path, snapshots, clock, face, photo
):
    with open_log(db_path, snapshots, clock) as log:
        events = [granted(log, face, photo, clock) for _ in range(4)]
    size = events[0].snapshot_bytes
    budget = Retention(max_snapshot_bytes=int(size * 2.5))
    with open_log(db_path, snapshots, clock, retention=budget) as log:
        report = log.enforce()
        kept = log.list()
    assert report["snapshots_cleared"] == 2 and report["bytes_freed"] == 2 * size
    assert report["snapshot_bytes"] == 2 * size <= budget.max_snapshot_bytes
    # Every event stays; only the two oldest lost their snapshots.
    assert [event.id for event in kept] == [event.id for event in reversed(events)]
    assert [event.face_path is None for event in kept] == [False, False, True, True]
    assert kept[-1].version == 2 and kept[0].version == 1
    assert jpegs(snapshots) == sorted(p for e in events[2:] for p in (e.face_path, e.frame_path))


def test_recording_over_the_byte_budget_clears_the_oldest_snapshots_at_once(
    db_path, snapshots, clock, face, photo
):
    with open_log(db_path, snapshots, clock) as log:
        size = granted(log, face, photo, clock).snapshot_bytes
    with open_log(db_path, snapshots, clock,
                  retention=Retention(max_snapshot_bytes=int(size * 1.5))) as log:
        newest = granted(log, face, photo, clock)
        assert [event.face_path for event in log.list()] == [newest.face_path, None]
    assert jpegs(snapshots) == sorted([newest.face_path, newest.frame_path])


def test_below_the_free_space_floor_no_snapshot_is_written_and_the_oldest_are_cleared(
    db_path, snapshots, clock, face, photo, caplog
):
    with open_log(db_path, snapshots, clock) as log:
        events = [granted(log, face, photo, clock) for _ in range(3)]
    size = events[0].snapshot_bytes
    # The disk has room for the floor plus a snapshot and a half: two must go.
    disk = Disk(snapshots, capacity=1_000_000 + int(size * 1.5))
    floor = Retention(min_free_bytes=1_000_000)
    with open_log(db_path, snapshots, clock, retention=floor, disk_usage=disk) as log:
        with caplog.at_level(logging.WARNING, logger="device.events"):
            starved = granted(log, face, photo, clock)
        assert "below the floor" in caplog.text
        assert starved.face_path is None and log.count() == 4
        kept = [event.face_path is not None for event in log.list()]
    assert kept == [False, True, False, False]
    assert disk(snapshots).free >= floor.min_free_bytes
    assert jpegs(snapshots) == sorted([events[2].face_path, events[2].frame_path])


def test_retention_with_nothing_to_do_changes_nothing(db_path, snapshots, clock, face, photo):
    with open_log(db_path, snapshots, clock) as log:
        events = [granted(log, face, photo, clock) for _ in range(2)]
        report = log.enforce()
        assert log.list() == events[::-1]
    assert report == {"expired": 0, "trimmed": 0, "snapshots_cleared": 0, "bytes_freed": 0,
                      "folders_removed": 0, "events": 2,
                      "snapshot_bytes": sum(e.snapshot_bytes for e in events)}


# --- Privacy -------------------------------------------------------------------------------


def test_deleting_a_person_removes_their_snapshots_and_nobody_elses(
    log, clock, face, photo, snapshots
):
    colin = [granted(log, face, photo, clock) for _ in range(2)]
    serena = granted(log, face, photo, clock, name="Serena Williams", person_id="p-serena")
    stranger = log.record("unknown", reason="stranger", face_crop=face)

    assert log.delete_person("p-colin") == 2
    assert log.delete_person("p-colin") == 0

    assert jpegs(snapshots) == sorted([serena.face_path, serena.frame_path, stranger.face_path])
    erased = [log.get(event.id) for event in colin]
    # The door's history stays, with nothing in it that leads back to the person.
    left = [(e.kind, e.score, e.person_id, e.person_name, e.face_path, e.frame_path,
             e.snapshot_bytes) for e in erased]
    assert left == [("granted", 0.61, None, None, None, None, 0)] * 2
    assert log.get(serena.id) == serena and log.get(stranger.id) == stranger
    assert log.list(person_id="p-colin") == []


def test_a_snapshot_path_not_made_by_facegate_is_never_followed(log, db_path, tmp_path):
    outside = tmp_path / "precious.jpg"
    outside.write_bytes(b"\xff\xd8\xff keep me")
    log.record("granted", person_id="p-colin", person_name="Colin Powell")
    with sqlite3.connect(db_path) as db:  # a hand-edited (or replicated) row
        db.execute("UPDATE events SET face_path = '../precious.jpg'")
    db.close()

    with pytest.raises(ValueError, match="not a snapshot path"):
        log.snapshot_file("../precious.jpg")
    assert log.delete_person("p-colin") == 1
    assert outside.exists()


# --- The schema ----------------------------------------------------------------------------


def test_the_access_log_is_added_to_an_existing_version_1_gallery_with_its_data_kept(
    tmp_path, snapshots, clock
):
    path = tmp_path / "old.db"
    with Gallery(path, migrations=MIGRATIONS[:1]) as old:
        colin = old.add_person("Colin Powell")
        assert "events" not in old.db.table_names()
    with Gallery(path) as upgraded:
        assert schema_version(upgraded.db) == len(MIGRATIONS)
        assert upgraded.get_person("Colin Powell") == colin
        assert {"events_at", "events_person_at", "events_kind_at"} <= {
            index.name for index in upgraded.db["events"].indexes
        }
    with open_log(path, snapshots, clock) as log:
        event = log.record("granted", person_id=colin.id, person_name=colin.name)
        assert log.list() == [event]


def test_an_event_log_opened_first_migrates_a_new_file_itself(tmp_path, snapshots, clock):
    with open_log(tmp_path / "new.db", snapshots, clock) as log:
        assert schema_version(log.db) == len(MIGRATIONS)
        log.record("exit_button")
    with Gallery(tmp_path / "new.db") as gallery:
        assert gallery.counts() == {"people": 0, "templates": {}}


# --- Text ----------------------------------------------------------------------------------


def test_an_event_reads_as_one_line_for_people():
    event = Event(id="6f1c", at="2024-06-11T08:02:03.456Z", door="front", kind="denied",
                  person_id="p-colin", person_name="Colin Powell", score=0.5981,
                  reason="outside schedule", face_path="2024/06/11/x-face.jpg")
    assert format_event_line(event, tz=UTC) == (
        "2024-06-11 08:02:03  front  denied         Colin Powell  0.598  outside schedule  [face]"
    )
    anonymous = Event(id="7a2d", at="2024-06-11T08:02:03.456Z", door="front", kind="held_open")
    assert format_event_line(anonymous, tz=timezone(timedelta(hours=2))) == (
        "2024-06-11 10:02:03  front  held_open      -"
    )
    assert set(KINDS) >= {"granted", "forced_open", "manual_unlock"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", START - timedelta(minutes=10)),
        ("2h", START - timedelta(hours=2)),
        ("3d", START - timedelta(days=3)),
        ("1h30m", START - timedelta(minutes=90)),
        (" 45s ", START - timedelta(seconds=45)),
        ("2024-06-01", datetime(2024, 6, 1, tzinfo=UTC)),
        ("2024-06-10T14:30", datetime(2024, 6, 10, 14, 30, tzinfo=UTC)),
        ("2024-06-10 14:30:15+02:00", datetime(2024, 6, 10, 12, 30, 15, tzinfo=UTC)),
        ("2024-06-10T14:30:00Z", datetime(2024, 6, 10, 14, 30, tzinfo=UTC)),
        ("07:15", datetime(2024, 6, 11, 7, 15, tzinfo=UTC)),  # today, earlier
        ("09:15", datetime(2024, 6, 10, 9, 15, tzinfo=UTC)),  # not yet today: yesterday's
    ],
)
def test_since_reads_ages_and_iso_dates_and_times(text, expected):
    assert parse_since(text, now=START) == expected


@pytest.mark.parametrize("text", ["yesterday-ish", "10x", "", "2024-13-01", "-5m"])
def test_since_refuses_what_it_cannot_read_in_one_clear_sentence(text):
    with pytest.raises(TimeUnreadable, match=r"cannot read .* as a time: .* 10m, 2h or 3d"):
        parse_since(text, now=START)


def test_since_without_an_offset_is_local_time():
    assert parse_since("2024-06-10T14:30").tzinfo is not None


@pytest.mark.parametrize("text", ["0001-01-01T00:00", "0001-01-01T00:00+14:00", "99999999d",
                                  "9999-12-31T23:59:59-14:00", "9" * 5000 + "s"])
def test_since_out_of_range_is_refused_in_one_sentence(text):
    east = START.astimezone(timezone(timedelta(hours=14)))  # local midnight of year 1 is year 0
    with pytest.raises(TimeUnreadable, match=r"too far in the past or the future") as caught:
        parse_since(text, now=east)
    assert len(str(caught.value)) < 200  # the text is quoted, never a page of it


_NOWS = st.datetimes(min_value=datetime(1, 1, 3), max_value=datetime(9999, 12, 29),
                     timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)),
                                                timezone(timedelta(hours=-14))]))


def _readable_or_refused(text: str, now: datetime) -> None:
    try:
        when = parse_since(text, now=now)
    except TimeUnreadable as error:
        assert str(error)
        return
    assert isinstance(when, datetime) and when.tzinfo is not None
    when.astimezone(UTC)  # the log filters by UTC text: that must exist


@settings(max_examples=300, deadline=None)
@given(text=st.text(), now=_NOWS)
def test_since_of_any_text_is_a_time_or_time_unreadable(text, now):
    _readable_or_refused(text, now)


@settings(max_examples=300, deadline=None)
@given(text=st.from_regex(r"\A(?:[0-9]{1,30}[smhdw]){1,4}\Z"), now=_NOWS)
def test_any_age_is_a_time_or_time_unreadable(text, now):
    _readable_or_refused(text, now)


@settings(max_examples=300, deadline=None)
@given(when=st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=14)),
                                                    timezone(timedelta(hours=-14))])),
       separator=st.sampled_from(["T", " "]), now=_NOWS)
def test_any_iso_time_is_a_time_or_time_unreadable(when, separator, now):
    _readable_or_refused(when.isoformat(separator), now)
    _readable_or_refused(when.time().isoformat(), now)


# --- Events the database refused -----------------------------------------------------------


def _record_while_locked(db_path, snapshots, clock, count: int) -> list[Event]:
    other = sqlite3.connect(db_path)
    other.execute("BEGIN IMMEDIATE")  # the database refuses every row meanwhile
    try:
        with open_log(db_path, snapshots, clock, busy_timeout_s=0.01) as log:
            recorded = []
            for number in range(count):
                clock.advance(seconds=1)
                recorded.append(log.record("unknown", score=0.1, detail={"n": number}))
    finally:
        other.rollback()
        other.close()
    return recorded


def test_events_the_database_refused_are_stored_at_the_next_start_once(
        db_path, snapshots, clock, caplog):
    refused = _record_while_locked(db_path, snapshots, clock, 30)
    unsaved = db_path.parent / "events-unsaved.jsonl"
    assert len(unsaved.read_text().splitlines()) == 30
    with open_log(db_path, snapshots, clock) as log:
        assert log.count() == 0
        with caplog.at_level(logging.WARNING, logger="device.events"):
            assert log.restore_unsaved() == 30
        assert "30 events that the database had refused are now stored" in caplog.text
        assert not unsaved.exists()
        assert log.restore_unsaved() == 0  # twice is once
        stored = list(reversed(log.list(limit=100)))
    assert [event.id for event in stored] == [event.id for event in refused]
    assert stored == refused  # every field, the detail included


def test_a_retention_pass_stores_what_the_database_refused_while_it_was_full(
        db_path, snapshots, clock):
    other = sqlite3.connect(db_path)
    other.execute("BEGIN IMMEDIATE")
    with open_log(db_path, snapshots, clock, busy_timeout_s=0.01) as log:
        event = log.record("manual_unlock", reason="ann")
        (db_path.parent / "events-unsaved.jsonl").unlink()  # even the file was lost: memory
        other.rollback()
        other.close()
        assert log.enforce()["events"] == 1
        assert log.get(event.id) == event


def test_an_unsaved_line_cut_short_is_dropped_and_the_others_are_stored(
        db_path, snapshots, clock):
    refused = _record_while_locked(db_path, snapshots, clock, 2)
    unsaved = db_path.parent / "events-unsaved.jsonl"
    with unsaved.open("a") as out:
        out.write('{"id": "cut-sh')
    with open_log(db_path, snapshots, clock) as log:
        assert log.restore_unsaved() == 2
        assert {event.id for event in log.list()} == {event.id for event in refused}
