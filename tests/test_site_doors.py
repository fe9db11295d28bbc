"""A site with two door daemons, each a real process on loopback: people enrolled at the
site are let in at both doors, a person removed there is refused at both, and every door
event reaches the site once, through a site server killed and restarted, PostgreSQL
restarted, a door restarted with events pending, and a door cut off for a while."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from device.gallery.store import Gallery
from tests.door_support import enrol_photo
from tests.site_support import CuttableLink, MemberDoor, SiteServer, wait_for

DATA = Path(__file__).parent / "data"
COLIN = sorted((DATA / "people" / "Colin_Powell").glob("*.jpg"))
# How long a member door may take to follow the site: a 1 s poll here (60 s by default).
FOLLOW_S = 30


def read(door: MemberDoor, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of the door's own file, read while its daemon writes ([] before it is made)."""
    try:
        with sqlite3.connect(f"file:{door.database}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # not there yet, or not migrated yet
        return []


def door_events(door: MemberDoor, kind: str | None = None) -> list[tuple[str, str | None]]:
    """``(id, person_name)`` of the door's own events."""
    if kind is None:
        return read(door, "SELECT id, person_name FROM events")
    return read(door, "SELECT id, person_name FROM events WHERE kind = ?", (kind,))


def replica_people(door: MemberDoor) -> list[str]:
    return [row[0] for row in read(door, "SELECT name FROM people")]


def uplink_empty(door: MemberDoor) -> bool:
    return read(door, "SELECT COUNT(*) FROM uplink") == [(0,)]


def site_event_ids(dsn: str, door_id: str) -> list[str]:
    with Gallery(dsn) as gallery:
        return [row[0] for row in gallery.db.execute("SELECT id FROM events WHERE door = ?",
                                                     [door_id])]


def site_kinds(dsn: str, door_id: str, kind: str) -> int:
    with Gallery(dsn) as gallery:
        return gallery.db.execute("SELECT COUNT(*) FROM events WHERE door = ? AND kind = ?",
                                  [door_id, kind]).fetchone()[0]


@pytest.fixture
def site(postgres_server, postgres_dsn, tmp_path):
    server = SiteServer(tmp_path / "site", postgres_dsn)
    server.start()
    yield server
    server.stop()


def test_two_doors_follow_the_site_and_hand_over_every_event_once(site, postgres_server,
                                                                  postgres_dsn, pipeline,
                                                                  tmp_path):
    with Gallery(postgres_dsn) as gallery:
        enrol_photo(pipeline, gallery, "Colin Powell", COLIN[0])
    tokens = {}
    for door_id in ("front", "back"):
        added = site.command("site", "door", "add", door_id)
        assert added.returncode == 0, added.stderr
        tokens[door_id] = added.stdout.strip()
    link = CuttableLink(site.port)  # the front door reaches the site through a cuttable link
    doors = {"front": MemberDoor(tmp_path / "front", "front", link.url, tokens["front"]),
             "back": MemberDoor(tmp_path / "back", "back", site.url, tokens["back"])}
    try:
        for door in doors.values():
            door.start()
        for door in doors.values():
            wait_for(lambda d=door: replica_people(d) == ["Colin Powell"], FOLLOW_S,
                     f"{door.door_id}'s replica\n{door.output()}")
            door.show(COLIN[1])

        # Enrolled at the site: let in at both doors, and both grants reach the site.
        for door_id in doors:
            wait_for(lambda d=door_id: site_kinds(postgres_dsn, d, "granted"), FOLLOW_S,
                     f"a grant at {door_id} on the site\n{doors[door_id].output()}")

        # Removed at the site: gone from both replicas, then refused at both.
        removed = site.command("people", "remove", "Colin Powell")
        assert removed.returncode == 0, removed.stderr
        started = time.monotonic()
        for door in doors.values():
            wait_for(lambda d=door: replica_people(d) == [], FOLLOW_S,
                     f"the removal at {door.door_id}")
        followed = time.monotonic() - started
        assert followed < FOLLOW_S
        after = {door_id: len(door_events(door)) for door_id, door in doors.items()}
        for door_id, door in doors.items():
            wait_for(lambda d=door, n=after[door_id]: len(door_events(d, "unknown")) > 0
                     and len(door_events(d)) > n, FOLLOW_S, f"a refusal at {door_id}")
            # Every grant is from before the removal, and the person is erased from them.
            assert all(name is None for _, name in door_events(door, "granted"))

        # The site server killed outright while events keep coming, then back.
        site.kill()
        for door in doors.values():
            wait_for(lambda d=door: not uplink_empty(d), FOLLOW_S,
                     f"events waiting at {door.door_id}")
        site.start()
        # PostgreSQL restarted under the site server (each request opens its connection).
        postgres_server.restart()
        # The back door stopped while it has events waiting, the site away; both come back.
        site.kill()
        wait_for(lambda: not uplink_empty(doors["back"]), FOLLOW_S, "events waiting at back")
        assert doors["back"].stop() == 0
        site.start()
        doors["back"].start()
        # The front door cut off from the site for a while, refusals going on.
        link.cut()
        wait_for(lambda: not uplink_empty(doors["front"]), FOLLOW_S, "events waiting at front")
        link.mend()

        # Nobody at the doors any more; then every event of each door is on the site, once.
        for door in doors.values():
            door.hide()
        for door_id, door in doors.items():
            wait_for(lambda d=door, i=door_id: door_events(d) and uplink_empty(d) and sorted(
                site_event_ids(postgres_dsn, i)) == sorted(e for e, _ in door_events(d)),
                FOLLOW_S, f"every event of {door_id} on the site once\n{door.output()}")
        assert site.command("site", "door", "list").stdout.count("0 events pending") == 2
        for door in doors.values():
            assert door.stop() == 0, door.output()
    finally:
        for door in doors.values():
            door.stop()


def test_a_door_that_has_not_heard_from_its_site_for_too_long_applies_its_policy(
        site, postgres_dsn, pipeline, tmp_path):
    with Gallery(postgres_dsn) as gallery:
        enrol_photo(pipeline, gallery, "Colin Powell", COLIN[0])
    token = site.command("site", "door", "add", "front").stdout.strip()
    door = MemberDoor(tmp_path / "front", "front", site.url, token)
    with door.config.open("a") as config:
        config.write('max_replica_age = "3s"\nwhen_stale = "deny"\n')
    door.start()
    try:
        wait_for(lambda: replica_people(door) == ["Colin Powell"], FOLLOW_S,
                 f"the replica\n{door.output()}")
        site.kill()
        time.sleep(4)  # past max_replica_age with no word from the site
        door.show(COLIN[1])
        denied = wait_for(lambda: read(door, "SELECT reason FROM events WHERE kind = 'denied'"),
                          FOLLOW_S, f"a refusal\n{door.output()}")
        assert "copy of the site's gallery is too old" in denied[0][0]
        assert door_events(door, "granted") == []
    finally:
        door.stop()
