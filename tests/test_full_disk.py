"""A door whose data disk is full: the door's actions and their records must agree.

The database lives on a 2 MB tmpfs, filled to the last byte, against the Flask app with a
door on gpiozero's mock pins. A manual unlock is on record before the relay opens, so when
the record cannot be written the answer is 503 and the relay never energised; signing in, and
browsing while signed in (the session's "last seen" write fails), is never a 500. Mounting
needs root (or CAP_SYS_ADMIN): elsewhere these tests are skipped.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from device.gallery.store import Gallery
from device.web.tokens import create_token
from tests.web_support import (
    PASSWORD,
    RELAY_PIN,
    fixture_admin,  # noqa: F401
    fixture_app,  # noqa: F401
    fixture_door,  # noqa: F401
    fixture_make_app,  # noqa: F401
    fixture_pin_factory,  # noqa: F401
    fixture_services,  # noqa: F401
    post,
    sign_in,
)


@pytest.fixture(name="small_disk")
def fixture_small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs mounted for the test (skipped where mounting is not permitted)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                       check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"cannot mount a small tmpfs here ({error}): needs root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False, timeout=30)


@pytest.fixture(name="db_path")
def fixture_db_path(small_disk: Path) -> Path:
    path = small_disk / "facegate.db"
    Gallery(path).close()
    return path


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; return the filler file (delete it to free space).

    The WAL is truncated first: SQLite reuses a WAL file's room, so writes would otherwise
    succeed for a while on a full disk.
    """
    for wal in disk.glob("*.db"):
        with sqlite3.connect(wal) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    filler = disk / f"filler-{uuid.uuid4().hex}"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        for size in (1 << 16, 1 << 10, 1):
            try:
                while True:
                    os.write(descriptor, b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC
    finally:
        os.close(descriptor)
    assert os.statvfs(disk).f_bavail == 0
    return filler


def relay_ever_energised(pin_factory) -> bool:
    return any(state.state for state in pin_factory.pin(RELAY_PIN).states)


def audit_rows(db_path: Path, action: str) -> int:
    with sqlite3.connect(db_path) as connection:
        return connection.execute(
            "SELECT COUNT(*) FROM audit_log WHERE action = ?", [action]).fetchone()[0]


def test_an_unlock_that_cannot_be_recorded_is_refused_and_the_door_stays_locked(
        app, admin, db_path, small_disk, pin_factory):
    token = create_token(db_path, "ann", "tests")
    bearer = {"Authorization": f"Bearer {token}"}
    client = app.test_client()
    assert client.get("/api/door", headers=bearer).status_code == 200  # token use recorded
    filler = fill(small_disk)
    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for path, body in (("/api/door/unlock", {}), ("/api/door/unlock", {"seconds": 2}),
                       ("/api/door/hold-open", {"until": in_an_hour})):
        response = client.post(path, json=body, headers=bearer)
        assert response.status_code == 503, response.get_data(as_text=True)
        message = response.json["error"]
        assert "not unlocked" in message and "disk" in message and message.count(". ") == 0
    page = post(admin, "/unlock")
    assert page.status_code == 503
    assert "not unlocked" in page.get_data(as_text=True)
    assert not relay_ever_energised(pin_factory)
    assert client.post("/api/door/lock", json={}, headers=bearer).status_code == 200

    filler.unlink()  # space returns: the same request opens the door, on record
    assert client.post("/api/door/unlock", json={}, headers=bearer).status_code == 200
    assert pin_factory.pin(RELAY_PIN).state
    assert audit_rows(db_path, "unlock") == 1


def test_signing_in_on_a_full_disk_is_never_a_500(app, db_path, small_disk):
    from device.web.users import add_user

    add_user(db_path, "ann", PASSWORD)
    client = app.test_client()
    filler = fill(small_disk)
    response = sign_in(client, "ann", PASSWORD)
    assert response.status_code in (302, 503), response.get_data(as_text=True)
    if response.status_code == 503:
        assert "disk" in response.get_data(as_text=True)
    assert sign_in(app.test_client(), "ann", "wrong password!").status_code == 401
    filler.unlink()
    assert sign_in(app.test_client(), "ann", PASSWORD).status_code == 302


def test_events_written_while_the_disk_was_full_are_stored_when_space_returns(
        db_path, small_disk):
    import io

    from device.events import EventLog

    with EventLog(db_path, small_disk / "snapshots", door_id="front",
                  stdout=io.StringIO()) as log:
        filler = fill(small_disk)
        recorded = [log.record("unknown", score=0.1, detail={"n": n}) for n in range(30)]
        assert log.count() == 0
        filler.unlink()
        log.enforce()  # the retention tick
        assert log.count() == 30
        assert {event.id for event in log.list(limit=50)} == {e.id for e in recorded}
        log.enforce()
        assert log.count() == 30
    assert not (small_disk / "events-unsaved.jsonl").exists()


def test_a_signed_in_admin_browses_a_full_disk_without_a_500(app, admin, db_path, small_disk,
                                                            caplog):
    import logging

    with Gallery(db_path) as gallery:
        person = gallery.add_person("Ada")
    pages = ["/", "/people", f"/people/{person.id}", "/log", "/settings", "/audit",
             "/people/new"]
    assert all(admin.get(page).status_code == 200 for page in pages)
    # The session was last seen long enough ago that every request is due its once-a-minute
    # "last seen" write; none succeeds on the full disk, so each one tries again.
    five_minutes_ago = datetime.now(UTC) - timedelta(minutes=5)
    with sqlite3.connect(db_path) as connection:
        connection.execute("UPDATE sessions SET last_seen_at = ?", [
            five_minutes_ago.isoformat(timespec="milliseconds").replace("+00:00", "Z")])
    connection.close()
    filler = fill(small_disk)
    with caplog.at_level(logging.WARNING, logger="device.web.sessions"):
        for page in pages:
            response = admin.get(page)
            assert response.status_code == 200, (page, response.get_data(as_text=True))
            assert 'action="/logout"' in response.get_data(as_text=True)  # still signed in
    unrecorded = [r for r in caplog.records if "not recorded" in r.getMessage()]
    assert len(unrecorded) == len(pages)
    filler.unlink()
    assert admin.get("/people").status_code == 200
    with sqlite3.connect(db_path) as connection:  # space returned: recorded again
        (seen,) = connection.execute("SELECT last_seen_at FROM sessions").fetchone()
    connection.close()
    assert datetime.fromisoformat(seen) > five_minutes_ago + timedelta(minutes=4)
