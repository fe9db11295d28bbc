"""A site of many doors, in one process: the site server's sync API on a real PostgreSQL,
served by waitress on loopback, and doors' replicas in real SQLite files talking to it over
HTTP with their own credentials (tests/test_site_doors.py runs whole door daemons)."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from device.config import Places, load_config
from device.errors import FacegateError, ReplicaReadOnly, SiteUnreachable
from device.events import EventLog
from device.events.snapshots import Snapshots
from device.gallery.store import Gallery
from device.site import feed
from device.site.client import SiteClient
from device.site.doors import add_door, list_doors, remove_door
from device.site.member import stale_refusal, sync_once
from device.site.replica import Replica, ReplicaState, read_state
from device.site.server import site_app
from device.vision.models import DEFAULT_EMBEDDER
from device.web.server import WebServer
from device.web.tokens import create_token
from device.web.users import add_user

NOWHERE = Places(system_config=Path("/nonexistent/facegate.toml"),
                 system_data_dir=Path("/nonexistent"), project_dir=None)
MODEL = DEFAULT_EMBEDDER


def site_config(dsn: str, data: Path, **more):
    return load_config(None, {"site.database": dsn, "paths.data_dir": str(data), **more},
                       environ={}, places=NOWHERE)


@pytest.fixture
def site(postgres_dsn, tmp_path):
    """The site server on a free port: ``(url, dsn)``."""
    server = WebServer(site_app(site_config(postgres_dsn, tmp_path / "site")), "127.0.0.1", 0)
    yield server.url, postgres_dsn
    server.close()


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def enrol(dsn: str, name: str, rng, photos: int = 2) -> str:
    with Gallery(dsn) as gallery:
        person = gallery.add_person(name)
        for number in range(photos):
            vector = rng.standard_normal(128).astype(np.float32)
            gallery.add_template(person.id, vector / np.linalg.norm(vector), MODEL,
                                 {"sharpness": 50.0}, None,
                                 hashlib.sha256(f"{name}-{number}".encode()).hexdigest())
        return person.id


class Door:
    """A member door's replica and access log, synced by hand (``sync``)."""

    def __init__(self, folder: Path, url: str, token: str, door_id: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.database = folder / "facegate.db"
        self.snapshots = folder / "snapshots"
        self.url = url
        self.door_id = door_id
        self.client = SiteClient(url, token)

    def sync(self, **kwargs):
        with Gallery(self.database) as gallery:
            return sync_once(gallery, Snapshots(self.snapshots), self.client, self.url, **kwargs)

    def people(self) -> list[str]:
        with Gallery(self.database) as gallery:
            return [person.name for person in gallery.list_people()]

    def record(self, kind: str = "granted", **fields) -> str:
        with EventLog(self.database, self.snapshots, door_id=self.door_id,
                      uplink=True) as events:
            return events.record(kind, face_crop=np.full((40, 40, 3), 90, np.uint8),
                                 **fields).id


def site_events(dsn: str) -> list:
    with EventLog(dsn, Path("/nonexistent"), door_id="site") as events:
        return events.list(limit=10_000)


def test_a_person_enrolled_at_the_site_reaches_every_door_and_a_removal_follows(site, rng,
                                                                                 tmp_path):
    url, dsn = site
    doors = [Door(tmp_path / name, url, add_door(dsn, name), name) for name in ("front", "back")]
    ada = enrol(dsn, "Ada", rng)
    for door in doors:
        assert door.sync().resynced  # a new member starts from the site's full pages
        assert door.people() == ["Ada"]
        with Gallery(door.database) as replica:
            assert replica.model == MODEL and len(replica.list_templates(ada)) == 2
            assert replica.list_templates(ada)[0].crop_jpeg is None  # crops stay at the site
    enrol(dsn, "Bob", rng)
    with Gallery(dsn) as gallery:
        gallery.update_person("Ada", name="Ada Lovelace")
        gallery.remove_person("Bob")
    for door in doors:
        report = door.sync(check_digest=True)
        assert not report.resynced and report.digest_matched is True
        assert door.people() == ["Ada Lovelace"]
    with Gallery(dsn) as gallery:
        gallery.remove_person(ada)
    for door in doors:
        door.sync()
        assert door.people() == []
    by_id = {door.id: door for door in list_doors(dsn)}
    assert by_id["front"].replica_seq == by_id["back"].replica_seq > 0
    assert by_id["front"].last_contact_at is not None


def test_a_rename_that_frees_a_name_another_takes_in_the_same_page_applies(site, rng, tmp_path):
    url, dsn = site
    door = Door(tmp_path / "front", url, add_door(dsn, "front"), "front")
    enrol(dsn, "Ann", rng, photos=1)
    enrol(dsn, "Bea", rng, photos=1)
    door.sync()
    with Gallery(dsn) as gallery:  # swap the two names through a third
        gallery.update_person("Ann", name="tmp")
        gallery.update_person("Bea", name="Ann")
        gallery.update_person("tmp", name="Bea")
    assert door.sync(check_digest=True).digest_matched is True
    assert sorted(door.people()) == ["Ann", "Bea"]


def test_the_digest_check_repairs_a_replica_edited_by_hand(site, rng, tmp_path):
    url, dsn = site
    door = Door(tmp_path / "front", url, add_door(dsn, "front"), "front")
    enrol(dsn, "Ada", rng)
    door.sync()
    with Gallery(door.database) as replica:  # a stranger slipped into the file by hand
        replica.db.execute("INSERT INTO people (id, name, created_at, updated_at)"
                           " VALUES ('x', 'Mallory', 'now', 'now')")
        replica.db.execute("UPDATE templates SET version = 99")
    assert sorted(door.people()) == ["Ada", "Mallory"]
    report = door.sync(check_digest=True)
    assert report.resynced and report.digest_matched is False
    assert door.people() == ["Ada"]
    assert door.sync(check_digest=True).digest_matched is True


def test_a_full_resync_pages_through_the_site_and_lands_at_the_head(site, rng, tmp_path,
                                                                    monkeypatch):
    url, dsn = site
    for number in range(7):
        enrol(dsn, f"Person {number}", rng, photos=3)
    monkeypatch.setattr("device.site.member.PAGE", 4)  # pages of 4: 2 of people, 6 of templates
    door = Door(tmp_path / "front", url, add_door(dsn, "front"), "front")
    door.sync(check_digest=True)
    assert len(door.people()) == 7
    with Gallery(dsn) as site_gallery, Gallery(door.database) as replica:
        assert read_state(replica).seq == site_gallery.change_seq()
        assert feed.replica_digest(replica.db) == feed.replica_digest(site_gallery.db)


def test_every_event_reaches_the_site_once_with_its_snapshot(site, rng, tmp_path):
    url, dsn = site
    door = Door(tmp_path / "front", url, add_door(dsn, "front"), "front")
    ada = enrol(dsn, "Ada", rng)
    door.sync()
    ids = [door.record(person_id=ada, person_name="Ada") for _ in range(3)]
    assert door.sync().sent == 3
    with Gallery(door.database) as replica:  # sent again, as after a crash before forgetting
        for event_id in ids:
            replica.db.execute("INSERT INTO uplink (event_id, created_at) VALUES (?, 'now')",
                               [event_id])
    assert door.sync().sent == 3
    stored = site_events(dsn)
    assert sorted(event.id for event in stored) == sorted(ids)
    assert all(event.door == "front" and event.face_path for event in stored)
    snapshots = Snapshots(tmp_path / "site" / "snapshots")
    assert snapshots.path(stored[0].face_path).read_bytes().startswith(b"\xff\xd8\xff")


def test_events_wait_while_the_site_is_away_and_all_go_up_when_it_is_back(postgres_dsn,
                                                                          tmp_path, rng):
    app = site_app(site_config(postgres_dsn, tmp_path / "site"))
    server = WebServer(app, "127.0.0.1", 0)
    port = server.port
    door = Door(tmp_path / "front", server.url, add_door(postgres_dsn, "front"), "front")
    door.sync()
    server.close()
    ids = [door.record("unknown") for _ in range(5)]
    with pytest.raises(SiteUnreachable, match="cannot be reached"):
        door.sync()
    server = WebServer(app, "127.0.0.1", port)
    try:
        assert door.sync().sent == 5
    finally:
        server.close()
    assert sorted(event.id for event in site_events(postgres_dsn)) == sorted(ids)


def test_a_door_writes_its_own_events_only_and_needs_its_own_credential(site, tmp_path):
    url, dsn = site
    front = SiteClient(url, add_door(dsn, "front"))
    event = {"id": "01a23234-b654-7000-9ab5-b2ccf6472670", "at": "2026-12-01T10:00:00.000Z",
             "door": "back", "kind": "granted"}
    with pytest.raises(SiteUnreachable, match="400 door front may send its own events only"):
        front.post("/sync/events", {"events": [event]})
    add_user(dsn, "ann", "a long enough password")
    api_token = create_token(dsn, "ann", "script")
    for token in ("", api_token, "fgd_not-a-door"):  # an admin's API token is no door's
        with pytest.raises(SiteUnreachable, match="401"):
            SiteClient(url, token).get("/sync/head")
    remove_door(dsn, "front")
    with pytest.raises(SiteUnreachable, match="401"):
        front.get("/sync/head")
    assert site_events(dsn) == []


def test_a_snapshot_is_kept_at_a_path_the_site_makes(site, tmp_path):
    url, dsn = site
    token = add_door(dsn, "front")
    client = SiteClient(url, token)
    event_id = "01a23234-b654-7000-9ab5-b2ccf6472670"
    client.post("/sync/events", {"events": [{"id": event_id, "at": "2026-12-01T10:00:00Z",
                                             "door": "front", "kind": "granted",
                                             "face_path": "../../etc/passwd"}]})
    with pytest.raises(SiteUnreachable, match="400 a snapshot is a JPEG"):
        client.put(f"/sync/events/{event_id}/snapshots/face", b"GIF89a", "image/jpeg")
    request = urllib.request.Request(f"{url}/sync/events/{event_id}/snapshots/..%2Fx",
                                     data=b"\xff\xd8\xff", method="PUT",
                                     headers={"Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(request)
    client.put(f"/sync/events/{event_id}/snapshots/face", b"\xff\xd8\xff\xe0 jpeg", "image/jpeg")
    (stored,) = site_events(dsn)
    assert stored.face_path == f"2026/12/01/{event_id}-face.jpg"  # the door's path is ignored


def test_a_member_doors_gallery_refuses_every_change_but_the_sites(site, rng, tmp_path):
    url, dsn = site
    door = Door(tmp_path / "front", url, add_door(dsn, "front"), "front")
    ada = enrol(dsn, "Ada", rng)
    door.sync()
    with Gallery(door.database) as replica:
        template = replica.list_templates(ada)[0]
        for change in (lambda: replica.add_person("Eve"),
                       lambda: replica.update_person("Ada", active=False),
                       lambda: replica.remove_person("Ada"),
                       lambda: replica.remove_template(template.id),
                       lambda: replica.add_template(ada, template.embedding, MODEL, {}, None,
                                                    "0" * 64)):
            with pytest.raises(ReplicaReadOnly, match="enrol, edit and remove people at the"):
                change()
    assert door.people() == ["Ada"]


def test_a_door_that_joins_a_site_trades_its_own_gallery_for_the_sites(site, rng, tmp_path):
    url, dsn = site
    door = Door(tmp_path / "front", url, add_door(dsn, "front"), "front")
    with Gallery(door.database) as own:
        own.add_person("Local Larry")
    enrol(dsn, "Ada", rng)
    assert door.sync().resynced
    assert door.people() == ["Ada"]


def test_the_stale_policy_refuses_as_configured_once_the_replica_is_too_old(tmp_path):
    fresh = ReplicaState(site="x", seq=3, heard_at="2999-01-01T00:00:00.000Z", digest_at=None,
                         resynced_at=None)
    old = ReplicaState(site="x", seq=3, heard_at="2020-01-01T00:00:00.000Z", digest_at=None,
                       resynced_at=None)
    never = ReplicaState(site=None, seq=0, heard_at=None, digest_at=None, resynced_at=None)

    def policy(**keys):
        return load_config(None, {"site.url": "https://site.example", **keys}, environ={},
                           places=NOWHERE).site

    keep, deny = policy(), policy(**{"site.when_stale": "deny"})
    allow = policy(**{"site.when_stale": "allow-list", "site.stale_allow": "Ada, Bob"})
    assert stale_refusal(old, keep, "Eve") is None
    assert stale_refusal(fresh, deny, "Eve") is None
    assert "too old" in stale_refusal(old, deny, "Ada")
    assert "never heard" in stale_refusal(never, deny, "Ada")
    assert stale_refusal(old, allow, "Ada") is None
    assert "policy allow-list" in stale_refusal(old, allow, "Eve")
    never_stale = policy(**{"site.when_stale": "deny", "site.max_replica_age": "0"})
    assert stale_refusal(old, never_stale, "Eve") is None


def test_the_site_commands_register_list_and_remove_doors(postgres_dsn, tmp_path, capsys):
    from device.cli import main

    config = tmp_path / "site.toml"
    config.write_text(f'[site]\ndatabase = "{postgres_dsn}"\n[paths]\n'
                      f'data_dir = "{tmp_path / "site"}"\n')
    assert main(["site", "door", "add", "front", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    (token,) = out.splitlines()  # the credential alone on stdout
    assert token.startswith("fgd_") and "site.token_file" in err
    with Gallery(postgres_dsn) as gallery:
        from device.site.doors import authenticate_door
        assert authenticate_door(gallery, token) == "front"
    assert main(["site", "door", "list", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith("front\tactive\tlast contact never")
    assert main(["site", "door", "remove", "front", "--config", str(config)]) == 0
    assert main(["site", "door", "remove", "front", "--config", str(config)]) == 1
    assert "no door 'front'" in capsys.readouterr().err
    assert main(["site", "door", "add", "no good", "--config", str(config)]) == 1
    assert "a door id must be" in capsys.readouterr().err


def test_gallery_commands_work_on_the_site_given_its_configuration(postgres_dsn, tmp_path,
                                                                   capsys, rng):
    from device.cli import main

    config = tmp_path / "site.toml"
    config.write_text(f'[site]\ndatabase = "{postgres_dsn}"\n[paths]\n'
                      f'data_dir = "{tmp_path / "site"}"\n')
    site = ["--config", str(config)]
    enrol(postgres_dsn, "Ada", rng)
    photo = Path(__file__).parent / "data" / "people" / "Colin_Powell" / "Colin_Powell_0001.jpg"
    assert main(["enroll", "--name", "Colin Powell", str(photo), *site]) == 0
    assert "enrolled" in capsys.readouterr().out
    assert main(["people", "list", "--json", *site]) == 0
    listed = [json.loads(line)["name"] for line in capsys.readouterr().out.splitlines()]
    assert listed == ["Ada", "Colin Powell"]
    assert main(["templates", "list", "Colin Powell", *site]) == 0
    assert MODEL in capsys.readouterr().out
    import io
    import sys
    sys_stdin, sys.stdin = sys.stdin, io.StringIO("a long enough password\n")
    try:
        assert main(["admin", "add", "ann", "--password-stdin", *site]) == 0
    finally:
        sys.stdin = sys_stdin
    assert "added ann" in capsys.readouterr().out
    assert main(["token", "add", "ann", "script", *site]) == 0
    assert capsys.readouterr().out.strip().startswith("fg_")
    assert main(["people", "remove", "Ada", *site]) == 0
    assert main(["events", *site]) == 0
    assert main(["backup", "--to", str(tmp_path / "b"), *site]) == 1
    assert "pg_dump" in capsys.readouterr().err


def test_a_site_without_a_database_says_so(tmp_path):
    with pytest.raises(FacegateError, match="site.database is not set"):
        site_app(load_config(None, {"paths.data_dir": str(tmp_path)}, environ={},
                             places=NOWHERE))


def test_pages_of_changes_apply_once_whatever_how_often(site, rng, tmp_path):
    url, dsn = site
    door = Door(tmp_path / "front", url, add_door(dsn, "front"), "front")
    enrol(dsn, "Ada", rng)
    door.sync()
    with Gallery(dsn) as gallery:
        page = feed.changes_since(gallery, 0)
    with Gallery(door.database) as replica:
        again = Replica(replica, url)
        before = feed.replica_digest(replica.db)
        again.apply_changes(page)  # an old page again: nothing moves
        assert feed.replica_digest(replica.db) == before


# --- A model swap, fleet-wide ------------------------------------------------------------------

FLOAT16 = "face_recognition_sface_2021dec_float16"
PEOPLE = Path(__file__).parent / "data" / "people"


def who_is_let_in(door: Door) -> set[str]:
    """Whom the door recognises in each enrolled person's second photo, with the model its
    replica matches with (the door's own decision, as the daemon makes it)."""
    from device.identification import Decision, Identifier
    from device.vision.image_io import read_image
    from device.vision.pipeline import FacePipeline

    with Gallery(door.database) as replica:
        pipeline = FacePipeline.from_models_dir(embedder=replica.model)
        identifier = Identifier(pipeline, replica, Decision.from_card(
            pipeline.embedder_card.threshold))
        names = set()
        for folder in sorted(PEOPLE.iterdir()):
            frame, _ = read_image(sorted(folder.glob("*.jpg"))[1])
            names.update(r.person_name for r in identifier.identify(frame, thorough=True)
                         if r.decision == "match")
        return names


def test_a_model_swap_at_the_site_leaves_no_door_blind_and_nobody_refused(
        site, tmp_path, pipeline, monkeypatch):
    from device.cli import main
    from device.site.replica import Replica
    from tests.door_support import enrol_photo

    url, dsn = site
    with Gallery(dsn) as gallery:
        for folder in sorted(PEOPLE.iterdir()):
            enrol_photo(pipeline, gallery, folder.name.replace("_", " "),
                        sorted(folder.glob("*.jpg"))[0])
    everyone = {folder.name.replace("_", " ") for folder in PEOPLE.iterdir()}
    doors = [Door(tmp_path / name, url, add_door(dsn, name), name) for name in ("front", "back")]
    for door in doors:
        door.sync()
        assert who_is_let_in(door) == everyone
    config = tmp_path / "site.toml"
    config.write_text(f'[site]\ndatabase = "{dsn}"\n[paths]\ndata_dir = "{tmp_path / "site"}"\n')
    assert main(["reembed", "--model", FLOAT16, "--config", str(config)]) == 0
    with Gallery(dsn) as gallery:  # both sets at the site until every door has moved
        assert gallery.model == FLOAT16 and set(gallery.models()) == {MODEL, FLOAT16}

    # Page by page (one change a page), the door's model always has its whole set.
    monkeypatch.setattr("device.site.member.PAGE", 1)
    seen = []
    apply = Replica.apply_changes

    def watched(replica, page):
        changed = apply(replica, page)
        model = replica.gallery.model
        seen.append((model, replica.gallery.models().get(model, 0)))
        return changed

    monkeypatch.setattr(Replica, "apply_changes", watched)
    doors[0].sync()
    complete = len(everyone)  # one template a person
    assert seen and all(model == MODEL and count == complete for model, count in seen)
    with Gallery(doors[0].database) as replica:
        assert replica.model == FLOAT16 and replica.models()[FLOAT16] == complete
    assert who_is_let_in(doors[0]) == everyone
    with Gallery(dsn) as gallery:  # the back door still matches with the old set: kept
        assert set(gallery.models()) == {MODEL, FLOAT16}
    assert who_is_let_in(doors[1]) == everyone
    doors[1].sync()  # the last door moves: the old set goes, at the site and then at doors
    with Gallery(dsn) as gallery:
        assert set(gallery.models()) == {FLOAT16}
    for door in doors:
        door.sync()
        with Gallery(door.database) as replica:
            assert set(replica.models()) == {FLOAT16}
        assert who_is_let_in(door) == everyone


def test_a_door_fetches_a_model_it_lacks_and_checks_its_hash(site, tmp_path, rng):
    import shutil

    from device.site.member import ensure_model
    from device.vision.models import default_models_dir

    url, dsn = site
    client = SiteClient(url, add_door(dsn, "front"))
    empty = tmp_path / "models"
    empty.mkdir()
    assert ensure_model(client, FLOAT16, empty)
    assert (empty / f"{FLOAT16}.tflite").read_bytes() == (
        default_models_dir() / f"{FLOAT16}.tflite").read_bytes()
    (empty / f"{FLOAT16}.tflite").write_bytes(b"tampered")  # a damaged copy is fetched again
    assert ensure_model(client, FLOAT16, empty)
    assert not ensure_model(client, "no_such_model", empty)
    shutil.rmtree(empty)
    for name in ("..%2F..%2Fetc", "...", "a%00b"):  # never a path out of the models folder
        with pytest.raises(SiteUnreachable):
            client.get(f"/sync/models/{name}")


def test_a_member_doors_page_says_how_old_its_copy_of_the_site_is(site, rng, tmp_path):
    from device.web import create_app
    from device.web.services import Services
    from tests.web_support import signed_in

    url, dsn = site
    door = Door(tmp_path / "front", url, add_door(dsn, "front"), "front")
    enrol(dsn, "Ada", rng)
    config = load_config(None, {"site.url": url, "paths.data_dir": str(tmp_path / "front")},
                         environ={}, places=NOWHERE)

    Gallery(door.database).close()
    app = create_app({"TESTING": True, "DATABASE": door.database, "SECRET_KEY": "x"},
                     services=Services(database=door.database, snapshots=door.snapshots,
                                       config=config))
    admin = signed_in(app, "ann", "admin")  # the door's own account (accounts stay local)
    assert "no copy has come yet" in admin.get("/").get_data(as_text=True)
    door.sync()
    text = admin.get("/").get_data(as_text=True)
    assert url in text and "checked" in text and "seconds ago" in text


def test_postgresqls_errors_reach_the_services_as_the_db_api_classes_they_catch(postgres_dsn,
                                                                                capsys, tmp_path):
    from device.cli import main
    from device.errors import UserExists
    from device.gallery.engines import DATABASE_ERRORS

    add_user(postgres_dsn, "ann", "a long enough password")
    with pytest.raises(UserExists, match="already exists"):  # a UNIQUE refused by PostgreSQL
        add_user(postgres_dsn, "ann", "another long password")
    gone = postgres_dsn.rsplit(":", 1)[0] + ":1/facegate"  # nobody listens on port 1
    with pytest.raises(DATABASE_ERRORS):
        Gallery(gone)
    config = tmp_path / "site.toml"
    config.write_text(f'[site]\ndatabase = "{gone}"\n')
    assert main(["people", "list", "--config", str(config)]) == 1
    (line,) = capsys.readouterr().err.splitlines()  # one line, no traceback
    assert "facegate:" in line and "127.0.0.1" in line


def test_info_says_whose_member_a_door_is_and_where_its_copy_stands(site, rng, tmp_path,
                                                                    capsys):
    from device.cli import main

    url, dsn = site
    door = Door(tmp_path / "front", url, add_door(dsn, "front"), "front")
    enrol(dsn, "Ada", rng)
    door.sync()
    config = tmp_path / "door.toml"
    config.write_text(f'[site]\nurl = "{url}"\n[paths]\ndata_dir = "{tmp_path / "front"}"\n')
    assert main(["info", "--config", str(config)]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("site")]
    with Gallery(dsn) as gallery:
        assert f"member of {url}: copy at change {gallery.change_seq()}, last heard 20" in line
