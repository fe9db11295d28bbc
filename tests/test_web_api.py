"""The JSON API under /api/, through Flask's test client, on a real temporary SQLite file,
the real models and the real images of tests/data, and a door on gpiozero's mock pins.

Every refusal is checked twice: the status and one-sentence error, and that the database
is as it was.
"""

from __future__ import annotations

import io
import re
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockPin

from device.backup import backup_database, restore_database
from device.door import Door, DoorSettings
from device.events import EventLog
from device.gallery.migrations import MIGRATIONS
from device.gallery.store import Gallery
from device.site_settings import SETTABLE
from device.web import create_app
from device.web.audit import list_audit
from device.web.services import Services
from device.web.sessions import start_session
from device.web.tokens import create_token, list_tokens, revoke_token
from device.web.users import add_user, remove_user
from tests.conftest import DATA, load

RELAY = 17
ROOT = Path(__file__).resolve().parent.parent
COLIN = sorted((DATA / "people" / "Colin_Powell").glob("*.jpg"))
SERENA = sorted((DATA / "people" / "Serena_Williams").glob("*.jpg"))
PASSWORD = "correct horse battery"


# --- Fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path, factory, pipeline):
    """A door's data folder with an admin and a viewer, a door on mock pins, and the app."""
    database = tmp_path / "facegate.db"
    Gallery(database).close()
    admin = add_user(database, "alice", PASSWORD, "admin")
    viewer = add_user(database, "victor", PASSWORD, "viewer")
    door = Door(DoorSettings(relay_pin=RELAY, unlock_seconds=0.3), pin_factory=factory)
    services = Services(database=database, snapshots=tmp_path / "snapshots", door=door,
                        pipeline_factory=lambda: pipeline)
    app = create_app({"TESTING": True, "SECRET_KEY": "test"}, services=services)
    yield Site(app, database, tmp_path / "snapshots", factory, admin, viewer,
               create_token(database, "alice", "tests"), create_token(database, "victor", "wall"))
    door.close()


class Site:
    def __init__(self, app, database, snapshots, factory, admin, viewer, admin_token,
                 viewer_token) -> None:
        self.app, self.database, self.snapshots, self.factory = app, database, snapshots, factory
        self.admin, self.viewer = admin, viewer
        self.admin_token, self.viewer_token = admin_token, viewer_token
        self.client = app.test_client()

    def call(self, method: str, path: str, *, token: str | None = "admin", **kwargs: Any):
        """A request with the admin's token (``token="viewer"``, another token, or None)."""
        headers = dict(kwargs.pop("headers", {}))
        token = {"admin": self.admin_token, "viewer": self.viewer_token}.get(token, token)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def sign_in(self, user) -> str:
        """Give the test client a signed-in session; return its CSRF token."""
        sid = start_session(self.database, user.id, timedelta(minutes=30))
        with self.client.session_transaction() as session:
            session.update(sid=sid, user_id=user.id, user_version=user.version,
                           seen=time.time(), csrf="c" * 43)
        return "c" * 43

    def count(self, table: str) -> int:
        with sqlite3.connect(self.database) as connection:
            return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def audit_actions(self) -> list[str]:
        return [row["action"] for row in list_audit(self.database)]

    @property
    def relay(self) -> MockPin:
        return self.factory.pin(RELAY)


def photo_files(*paths: Path) -> dict:
    return {"photos": [(io.BytesIO(path.read_bytes()), path.name) for path in paths]}


def add_person(site: Site, name: str) -> str:
    response = site.call("POST", "/api/people", json={"name": name})
    assert response.status_code == 201, response.json
    return response.json["id"]


def enrol(site: Site, person_id: str, *paths: Path, query: str = ""):
    return site.call("POST", f"/api/people/{person_id}/photos{query}",
                     data=photo_files(*paths), content_type="multipart/form-data")


def assert_error(response, status: int, *words: str, field: str | None = None) -> None:
    assert response.status_code == status, (response.status_code, response.get_data(True))
    error = response.json["error"]
    assert isinstance(error, str) and error
    for word in words:
        assert word in error, (word, error)
    if field is not None:
        assert response.json.get("field") == field


# --- Signing in --------------------------------------------------------------------------------


def test_health_is_public_and_says_nothing_more(site):
    response = site.call("GET", "/api/health", token=None)
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_without_a_token_or_session_every_call_is_401(site):
    for path in ["/api/people", "/api/events", "/api/door", "/api/backup", "/api/tokens"]:
        assert_error(site.call("GET", path, token=None), 401, "sign in")
    # A POST without a session meets the CSRF check first (400) or the API's own (401).
    refused = site.call("POST", "/api/door/unlock", token=None)
    assert refused.status_code in (400, 401) and refused.json["error"]
    assert not site.relay.state


def test_an_unknown_malformed_or_revoked_token_is_401(site):
    assert_error(site.call("GET", "/api/people", token="fg_not-a-token"), 401, "unknown")
    basic = site.call("GET", "/api/people", token=None,
                      headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert_error(basic, 401, "Bearer")
    token = next(t for t in list_tokens(site.database, "alice"))
    revoke_token(site.database, token.id)
    response = site.call("GET", "/api/people")
    assert_error(response, 401, "revoked")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_only_a_hash_of_a_token_is_stored_and_tokens_go_with_their_account(site):
    with sqlite3.connect(site.database) as connection:
        stored = connection.execute("SELECT token_hash FROM api_tokens").fetchall()
    assert len(stored) == 2
    assert all(re.fullmatch(r"[0-9a-f]{64}", row[0]) for row in stored)
    for file in site.database.parent.glob("facegate.db*"):  # the -wal file too
        assert site.admin_token.encode() not in file.read_bytes()
    remove_user(site.database, "victor")
    assert [t.user_name for t in list_tokens(site.database)] == ["alice"]
    assert site.call("GET", "/api/door", token="viewer").status_code == 401


def test_a_token_records_when_it_was_last_used(site):
    assert list_tokens(site.database, "alice")[0].last_used_at is None
    assert site.call("GET", "/api/people").status_code == 200
    assert list_tokens(site.database, "alice")[0].last_used_at is not None


def test_a_viewer_reads_the_door_and_the_log_but_nothing_else(site):
    assert site.call("GET", "/api/door", token="viewer").status_code == 200
    assert site.call("GET", "/api/events", token="viewer").status_code == 200
    for method, path in [("GET", "/api/people"), ("POST", "/api/people"),
                         ("POST", "/api/door/unlock"), ("POST", "/api/door/lock"),
                         ("GET", "/api/settings"), ("PATCH", "/api/settings"),
                         ("GET", "/api/tokens"), ("GET", "/api/backup"),
                         ("POST", "/api/restore")]:
        assert_error(site.call(method, path, token="viewer", json={"name": "Mallory"}), 403,
                     "admin")
    assert site.count("people") == 0
    assert not site.relay.state


def test_a_session_may_call_the_api_with_its_csrf_token_in_a_header(site):
    csrf = site.sign_in(site.admin)
    assert site.call("GET", "/api/people", token=None).status_code == 200
    refused = site.call("POST", "/api/people", token=None, json={"name": "Colin Powell"})
    assert refused.status_code == 400 and "error" in refused.json
    assert site.count("people") == 0
    made = site.call("POST", "/api/people", token=None, json={"name": "Colin Powell"},
                     headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201


def test_a_bearer_token_is_judged_alone_even_beside_a_signed_in_cookie(site):
    site.sign_in(site.admin)
    response = site.call("POST", "/api/people", token="fg_forged", json={"name": "Mallory"})
    assert_error(response, 401)
    assert site.count("people") == 0


# --- API tokens --------------------------------------------------------------------------------


def test_tokens_are_made_from_a_session_shown_once_and_revocable(site):
    csrf = site.sign_in(site.admin)
    headers = {"X-CSRF-Token": csrf}
    made = site.call("POST", "/api/tokens", token=None, json={"name": "backup script"},
                     headers=headers)
    assert made.status_code == 201
    token = made.json["token"]
    assert re.fullmatch(r"fg_[A-Za-z0-9_-]{43}", token)
    assert made.json["user"] == "alice" and made.json["active"] is True
    listed = site.call("GET", "/api/tokens", token=token)
    assert listed.status_code == 200
    assert token not in listed.get_data(True)  # neither the token nor its hash comes back
    assert {"backup script", "tests", "wall"} <= {t["name"] for t in listed.json["tokens"]}

    for_viewer = site.call("POST", "/api/tokens", token=None, headers=headers,
                           json={"name": "lobby display", "user": "victor"})
    assert for_viewer.status_code == 201 and for_viewer.json["user"] == "victor"
    add_user(site.database, "bob", PASSWORD, "admin")
    assert_error(site.call("POST", "/api/tokens", token=None, headers=headers,
                           json={"name": "as bob", "user": "bob"}), 400, field="user")
    assert_error(site.call("POST", "/api/tokens", token=None, headers=headers,
                           json={"name": "  "}), 400, field="name")

    assert_error(site.call("POST", "/api/tokens", token=token, json={"name": "child"}), 403,
                 "session")
    revoked = site.call("DELETE", f"/api/tokens/{made.json['id']}")
    assert revoked.status_code == 200 and revoked.json["active"] is False
    assert site.call("GET", "/api/people", token=token).status_code == 401
    assert_error(site.call("DELETE", "/api/tokens/no-such-token"), 404)
    assert {"token_create", "token_revoke"} <= set(site.audit_actions())


# --- The door ----------------------------------------------------------------------------------


def test_unlock_energises_the_relay_until_the_time_is_up_and_is_audited(site):
    response = site.call("POST", "/api/door/unlock", json={"seconds": 0.5})
    assert response.status_code == 200
    assert site.relay.state  # energised: unlocked
    assert response.json["state"] == "unlocked"
    assert response.json["unlocked_until"].endswith("Z")
    assert site.call("GET", "/api/door", token="viewer").json["state"] == "unlocked"
    deadline = time.monotonic() + 3
    while site.relay.state and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not site.relay.state
    assert site.call("GET", "/api/door").json == {"state": "locked", "unlocked_until": None,
                                                  "open": None}
    assert "unlock" in site.audit_actions()


def test_unlock_refuses_bad_seconds_and_leaves_the_relay_alone(site):
    for body, field in [({"seconds": 600}, "seconds"), ({"seconds": "3"}, "seconds"),
                        ({"seconds": True}, "seconds"), ({"secs": 3}, "secs")]:
        assert_error(site.call("POST", "/api/door/unlock", json=body), 400, field=field)
    assert_error(site.call("POST", "/api/door/unlock", data="3",
                           content_type="text/plain"), 400, "JSON")
    assert_error(site.call("POST", "/api/door/unlock", json=[3]), 400, "object")
    assert not site.relay.state
    assert "unlock" not in site.audit_actions()


def test_hold_open_until_a_time_then_lock_again(site):
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    held = site.call("POST", "/api/door/hold-open", json={"until": until})
    assert held.status_code == 200 and held.json["state"] == "held_open"
    assert site.relay.state
    locked = site.call("POST", "/api/door/lock")
    assert locked.status_code == 200 and locked.json["state"] == "locked"
    assert not site.relay.state
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert_error(site.call("POST", "/api/door/hold-open", json={"until": past}), 400,
                 "future", field="until")
    assert_error(site.call("POST", "/api/door/hold-open", json={}), 400, field="until")
    assert_error(site.call("POST", "/api/door/hold-open", json={"until": "tomorrow"}), 400,
                 field="until")
    assert not site.relay.state
    assert {"hold_open", "lock"} <= set(site.audit_actions())


def test_without_a_door_the_door_calls_say_so(tmp_path):
    database = tmp_path / "facegate.db"
    Gallery(database).close()
    add_user(database, "alice", PASSWORD, "admin")
    app = create_app({"TESTING": True}, services=Services(database=database,
                                                          snapshots=tmp_path / "snapshots"))
    headers = {"Authorization": f"Bearer {create_token(database, 'alice', 't')}"}
    client = app.test_client()
    assert_error(client.get("/api/door", headers=headers), 503, "no door")
    assert_error(client.post("/api/door/unlock", headers=headers), 503, "no door")


# --- People ------------------------------------------------------------------------------------


def test_people_are_added_listed_searched_edited_and_deleted(site):
    made = site.call("POST", "/api/people", json={"name": " Colin  Powell ",
                                                  "external_id": "E-17"})
    assert made.status_code == 201
    colin = made.json
    assert colin["name"] == "Colin Powell" and colin["templates"] == 0 and colin["active"]
    assert made.headers["Location"].endswith(f"/api/people/{colin['id']}")
    add_person(site, "Serena Williams")

    names = [p["name"] for p in site.call("GET", "/api/people").json["people"]]
    assert names == ["Colin Powell", "Serena Williams"]
    assert [p["name"] for p in site.call("GET", "/api/people?q=e-17").json["people"]] == [
        "Colin Powell"]
    assert site.call("GET", f"/api/people/{colin['id']}").json == colin

    edited = site.call("PATCH", f"/api/people/{colin['id']}", json={
        "active": False, "schedule": "mon-fri 07:00-19:00", "external_id": None,
        "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2026-12-31T18:00:00+01:00",
        "version": 1})
    assert edited.status_code == 200, edited.json
    assert edited.json["active"] is False
    assert edited.json["schedule"] == "mon-fri 07:00-19:00"
    assert edited.json["external_id"] is None
    assert edited.json["valid_until"] == "2026-12-31T17:00:00.000Z"
    assert edited.json["version"] == 2
    cleared = site.call("PATCH", f"/api/people/{colin['id']}", json={"schedule": ""})
    assert cleared.json["schedule"] is None

    deleted = site.call("DELETE", f"/api/people/{colin['id']}")
    assert deleted.status_code == 200 and deleted.json["deleted"] == colin["id"]
    assert_error(site.call("GET", f"/api/people/{colin['id']}"), 404)
    assert {"person_add", "person_edit", "person_delete"} <= set(site.audit_actions())


def test_bad_person_requests_are_refused_naming_the_field_and_change_nothing(site):
    person_id = add_person(site, "Colin Powell")
    before = site.call("GET", f"/api/people/{person_id}").json
    cases = [
        ("POST", "/api/people", {}, 400, "name"),
        ("POST", "/api/people", {"name": 7}, 400, "name"),
        ("POST", "/api/people", {"name": "   "}, 400, "name"),
        ("POST", "/api/people", {"name": "X", "role": "boss"}, 400, "role"),
        ("POST", "/api/people", {"name": "Colin Powell"}, 409, "name"),
        ("PATCH", f"/api/people/{person_id}", {"schedule": "mon-fri 7-19"}, 400, "schedule"),
        ("PATCH", f"/api/people/{person_id}", {"active": "yes"}, 400, "active"),
        ("PATCH", f"/api/people/{person_id}", {"valid_from": "soon"}, 400, "valid_from"),
        ("PATCH", f"/api/people/{person_id}", {"valid_from": "2026-02-01T00:00Z",
                                               "valid_until": "2026-01-01T00:00Z"},
         400, "valid_until"),
        ("PATCH", f"/api/people/{person_id}", {"name": "Z", "version": 5}, 409, "version"),
        ("PATCH", f"/api/people/{person_id}", {"nickname": "C"}, 400, "nickname"),
    ]
    for method, path, body, status, field in cases:
        assert_error(site.call(method, path, json=body), status, field=field)
    assert_error(site.call("PATCH", f"/api/people/{person_id}", json={}), 400, "nothing")
    assert_error(site.call("GET", "/api/people/no-such-person"), 404)
    assert_error(site.call("GET", "/api/people/Colin Powell"), 404)  # ids only in URLs
    assert_error(site.call("GET", "/api/people?sort=name"), 400, field="sort")
    assert site.call("GET", f"/api/people/{person_id}").json == before
    assert site.count("people") == 1


# --- Enrolment ---------------------------------------------------------------------------------


def test_photos_are_enrolled_with_their_quality(site):
    person_id = add_person(site, "Colin Powell")
    response = enrol(site, person_id, COLIN[0], COLIN[1])
    assert response.status_code == 201, response.json
    photos = response.json["photos"]
    assert [p["status"] for p in photos] == ["enrolled", "enrolled"]
    assert [p["filename"] for p in photos] == [COLIN[0].name, COLIN[1].name]
    assert all(p["template_id"] and p["quality"]["interocular_px"] > 0 for p in photos)
    assert response.json["person"]["templates"] == 2
    raw = site.call("POST", f"/api/people/{person_id}/photos", data=COLIN[2].read_bytes(),
                    content_type="image/jpeg")
    assert raw.status_code == 201 and raw.json["photos"][0]["filename"] is None
    assert site.count("templates") == 3
    assert "enrol" in site.audit_actions()


@pytest.mark.parametrize(("path", "code", "words"), [
    (DATA / "page.png", "no_face", "no face"),
    (DATA / "couple.jpg", "several_faces", "faces"),
    (None, "unreadable", "not an image"),
])
def test_a_refused_photo_says_why_and_saves_nothing(site, path, code, words):
    person_id = add_person(site, "Colin Powell")
    data = path.read_bytes() if path else b"\xff\xd8\xff\xe0 this is not really a JPEG"
    response = site.call("POST", f"/api/people/{person_id}/photos",
                         data={"photos": [(io.BytesIO(data), "upload.jpg")]},
                         content_type="multipart/form-data")
    assert_error(response, 422, words)
    assert response.json["photos"][0]["status"] == "refused"
    assert response.json["photos"][0]["code"] == code
    assert site.count("templates") == 0


def test_the_same_photo_twice_is_refused_in_one_upload_and_across_uploads(site):
    person_id = add_person(site, "Colin Powell")
    first = enrol(site, person_id, COLIN[0], COLIN[0])
    assert first.status_code == 201
    assert [p["status"] for p in first.json["photos"]] == ["enrolled", "refused"]
    assert first.json["photos"][1]["code"] == "repeated"
    again = enrol(site, person_id, COLIN[0])
    assert_error(again, 422, "already enrolled")
    assert again.json["photos"][0]["code"] == "already_enrolled"
    assert site.count("templates") == 1


def test_a_face_of_someone_else_needs_confirming_and_then_is_saved(site):
    colin = add_person(site, "Colin Powell")
    assert enrol(site, colin, COLIN[0]).status_code == 201
    other = add_person(site, "Not Colin")
    held = enrol(site, other, SERENA[0], COLIN[1])
    assert_error(held, 409, "already enrolled as Colin Powell", "force=1")
    statuses = [p["status"] for p in held.json["photos"]]
    assert statuses == ["not_saved", "needs_confirmation"]
    assert held.json["photos"][1]["code"] == "already_enrolled_as"
    assert held.json["photos"][1]["matches"]["person_id"] == colin
    assert site.count("templates") == 1  # nothing of the upload was saved

    no_reason = enrol(site, other, SERENA[0], COLIN[1], query="?force=1")
    assert_error(no_reason, 400, "reason", field="reason")
    confirmed = enrol(site, other, SERENA[0], COLIN[1], query="?force=1&reason=twins")
    assert confirmed.status_code == 201
    assert [p["status"] for p in confirmed.json["photos"]] == ["enrolled", "enrolled"]
    assert site.count("templates") == 3
    assert "enrol_forced" in site.audit_actions()


def test_a_photo_of_someone_else_is_refused_under_an_enrolled_name(site):
    colin = add_person(site, "Colin Powell")
    assert enrol(site, colin, COLIN[0]).status_code == 201
    held = enrol(site, colin, SERENA[0])
    assert_error(held, 409, "does not look like Colin Powell's enrolled photos")
    assert held.json["photos"][0]["code"] == "not_same_person"
    assert site.count("templates") == 1
    assert "enrol_refused" in site.audit_actions()


def test_face_n_picks_one_face_of_a_photo_with_several(site):
    person_id = add_person(site, "Partner")
    refused = enrol(site, person_id, DATA / "couple.jpg")
    assert_error(refused, 422, "faces")
    faces = refused.json["photos"][0]["faces"]
    assert len(faces) == 2 and all(len(face["box"]) == 4 for face in faces)
    picked = enrol(site, person_id, DATA / "couple.jpg", query=f"?face={faces[1]['index']}")
    assert picked.status_code == 201
    assert site.count("templates") == 1


def test_bad_uploads_are_refused_as_json(site):
    person_id = add_person(site, "Colin Powell")
    site.app.config["MAX_CONTENT_LENGTH"] = 5_000
    too_big = enrol(site, person_id, COLIN[0], COLIN[1])
    assert_error(too_big, 413, "larger")
    site.app.config["MAX_CONTENT_LENGTH"] = 20 * 1024 * 1024
    assert_error(site.call("POST", f"/api/people/{person_id}/photos", json={"x": 1}), 400,
                 "multipart", field="photos")
    assert_error(site.call("POST", f"/api/people/{person_id}/photos", data={},
                           content_type="multipart/form-data"), 400, field="photos")
    wrong_field = site.call("POST", f"/api/people/{person_id}/photos",
                            data={"photo": (io.BytesIO(b"x"), "a.jpg")},
                            content_type="multipart/form-data")
    assert_error(wrong_field, 400, field="photo")
    assert_error(enrol(site, "no-such-person", COLIN[0]), 404)
    assert site.count("templates") == 0


def test_deleting_a_person_removes_templates_crops_and_snapshots(site):
    person_id = add_person(site, "Colin Powell")
    assert enrol(site, person_id, COLIN[0]).status_code == 201
    frame = load(COLIN[1])
    with EventLog(site.database, site.snapshots, door_id="front", stdout=io.StringIO()) as log:
        event = log.record("granted", person_id=person_id, person_name="Colin Powell",
                           score=0.8, face_crop=frame[60:180, 60:180], frame=frame)
        files = [log.snapshot_file(event.face_path), log.snapshot_file(event.frame_path)]
    assert all(path.is_file() for path in files)
    with site.call("GET", f"/api/events/{event.id}/face.jpg") as face:
        assert face.status_code == 200

    response = site.call("DELETE", f"/api/people/{person_id}")
    assert response.status_code == 200
    assert response.json["templates_removed"] == 1 and response.json["events_anonymised"] == 1
    assert not any(path.exists() for path in files)
    assert site.count("templates") == 0
    kept = site.call("GET", f"/api/events/{event.id}").json
    assert kept["kind"] == "granted" and kept["person_id"] is None
    assert kept["person_name"] is None and kept["face_url"] is None
    assert_error(site.call("GET", f"/api/events/{event.id}/face.jpg"), 404)


# --- The access log ----------------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_events_are_filtered_paged_and_their_snapshots_served(site):
    clock = Clock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    frame = load(SERENA[0])
    ids = {}
    with EventLog(site.database, site.snapshots, door_id="front", clock=clock,
                  stdout=io.StringIO()) as log:
        for hour, kind, person in [(8, "granted", "p-serena"), (9, "unknown", None),
                                   (10, "granted", "p-colin"), (11, "denied", "p-serena")]:
            clock.now = clock.now.replace(hour=hour)
            event = log.record(kind, person_id=person, score=0.5,
                               face_crop=frame[50:200, 50:200] if hour == 8 else None,
                               frame=frame if hour == 8 else None)
            ids[hour] = event.id

    def listed(query: str) -> list[str]:
        response = site.call("GET", f"/api/events{query}", token="viewer")
        assert response.status_code == 200, response.json
        return [e["id"] for e in response.json["events"]]

    assert listed("") == [ids[11], ids[10], ids[9], ids[8]]  # newest first
    assert listed("?kind=granted") == [ids[10], ids[8]]
    assert listed("?person=p-serena") == [ids[11], ids[8]]
    assert listed("?since=2026-03-02T09:00Z&until=2026-03-02T11:00Z") == [ids[10], ids[9]]
    assert listed("?limit=2&offset=1") == [ids[10], ids[9]]
    assert site.call("GET", "/api/events?limit=1").json["total"] == 4

    one = site.call("GET", f"/api/events/{ids[8]}", token="viewer").json
    assert one["kind"] == "granted" and one["door"] == "front"
    assert "face_path" not in one
    with site.call("GET", one["face_url"], token="viewer") as face:
        assert face.status_code == 200 and face.mimetype == "image/jpeg"
        assert face.data.startswith(b"\xff\xd8\xff")
    with site.call("GET", one["frame_url"], token="viewer") as frame_jpeg:
        assert frame_jpeg.status_code == 200
    assert_error(site.call("GET", f"/api/events/{ids[9]}/face.jpg"), 404, "snapshot")
    assert_error(site.call("GET", "/api/events/nope"), 404)
    assert_error(site.call("GET", "/api/events/nope/frame.jpg"), 404)

    for query, field in [("?kind=opened", "kind"), ("?since=yesterdayish", "since"),
                         ("?limit=-1", "limit"), ("?limit=100000", "limit"),
                         ("?door=front", "door")]:
        assert_error(site.call("GET", f"/api/events{query}"), 400, field=field)


@pytest.mark.parametrize(("query", "field"), [
    ("since=99999999d", "since"), ("since=9999-12-31T23:59:59-14:00", "since"),
    ("until=0001-01-01T00:00", "until"), ("offset=99999999999999999999", "offset"),
    ("limit=%C2%B2", "limit"), ("offset=" + "9" * 5000, "offset")])
def test_an_out_of_range_event_filter_is_a_400_naming_it(site, query, field):
    assert_error(site.call("GET", f"/api/events?{query}", token="viewer"), 400, field=field)


def test_a_snapshot_path_is_never_taken_from_outside_the_log(site, tmp_path):
    (tmp_path / "secret.jpg").write_bytes(b"\xff\xd8\xffsecret")
    with EventLog(site.database, site.snapshots, door_id="front", stdout=io.StringIO()) as log:
        event = log.record("unknown")
    with sqlite3.connect(site.database) as connection:
        connection.execute("UPDATE events SET face_path = ? WHERE id = ?",
                           ["../secret.jpg", event.id])
    assert_error(site.call("GET", f"/api/events/{event.id}/face.jpg"), 404)
    sneaky = site.call("GET", "/api/events/..%2F..%2Fsecret.jpg/face.jpg")
    assert sneaky.status_code in (401, 404) and b"secret" not in sneaky.data


# --- Settings ----------------------------------------------------------------------------------


def test_settings_are_validated_before_anything_is_stored(site):
    got = site.call("GET", "/api/settings")
    assert got.status_code == 200 and got.json["settings"] == {}
    assert "recognition.threshold" in got.json["settable"]

    changed = site.call("PATCH", "/api/settings", json={"recognition.threshold": 0.6,
                                                         "door.unlock_seconds": 5})
    assert changed.status_code == 200, changed.json
    assert changed.json["changed"]["recognition.threshold"] == {"old": None, "new": 0.6}
    assert changed.json["settings"] == {"door.unlock_seconds": 5.0,
                                        "recognition.threshold": 0.6}

    for body, field in [({"recognition.threshold": 5}, "recognition.threshold"),
                        ({"door.unlock_seconds": 0.5, "door.held_open_seconds": -1},
                         "door.held_open_seconds"),
                        ({"paths.data_dir": "/"}, "paths.data_dir"),
                        ({"recognition.threshold": [1]}, "recognition.threshold")]:
        assert_error(site.call("PATCH", "/api/settings", json=body), 400, field=field)
    assert_error(site.call("PATCH", "/api/settings", json={}), 400, "nothing")
    assert site.call("GET", "/api/settings").json["settings"] == {
        "door.unlock_seconds": 5.0, "recognition.threshold": 0.6}

    cleared = site.call("PATCH", "/api/settings", json={"recognition.threshold": None})
    assert cleared.json["settings"] == {"door.unlock_seconds": 5.0}
    assert "settings_change" in site.audit_actions()


# --- Backup and restore ------------------------------------------------------------------------


def test_a_backup_is_a_whole_sqlite_file_even_while_the_door_writes(site, tmp_path):
    for number in range(20):
        add_person(site, f"Person {number}")
    stop = threading.Event()
    written = []

    def door_writes() -> None:
        with EventLog(site.database, site.snapshots, door_id="front",
                      stdout=io.StringIO()) as log, Gallery(site.database) as gallery:
            while not stop.is_set():
                log.record("unknown", score=0.1)
                written.append(gallery.add_person(f"Walk-in {len(written)}").id)

    writer = threading.Thread(target=door_writes)
    writer.start()
    try:
        while len(written) < 5:
            time.sleep(0.01)
        with site.call("GET", "/api/backup") as response:
            assert response.status_code == 200
            assert response.mimetype == "application/vnd.sqlite3"
            assert "attachment" in response.headers["Content-Disposition"]
            copy = tmp_path / "downloaded.db"
            copy.write_bytes(response.data)
    finally:
        stop.set()
        writer.join()
    with sqlite3.connect(copy) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        people = connection.execute("SELECT COUNT(*) FROM people").fetchone()[0]
        version = connection.execute("SELECT MAX(version) FROM _migrations").fetchone()[0]
    assert 20 + 5 <= people <= 20 + len(written)
    assert version == len(MIGRATIONS)
    assert not list(site.database.parent.glob(".backup-*"))  # the temporary copy is gone
    assert "backup" in site.audit_actions()


def restore(site: Site, data: bytes, token: str = "admin"):
    return site.call("POST", "/api/restore", token=token,
                     data={"database": (io.BytesIO(data), "facegate.db")},
                     content_type="multipart/form-data")


def test_restoring_a_good_backup_brings_back_deleted_people(site, tmp_path):
    kept_id = add_person(site, "Colin Powell")
    assert enrol(site, kept_id, COLIN[0]).status_code == 201
    saved = tmp_path / "saved.db"
    backup_database(site.database, saved)
    assert site.call("DELETE", f"/api/people/{kept_id}").status_code == 200
    add_person(site, "Added Later")
    with Gallery(site.database) as gallery:
        seen_seq = gallery.change_seq()

    response = restore(site, saved.read_bytes())
    assert response.status_code == 200, response.json
    assert response.json["people"] == 1 and response.json["templates"] == 1
    names = [p["name"] for p in site.call("GET", "/api/people").json["people"]]
    assert names == ["Colin Powell"]
    with Gallery(site.database) as gallery:
        assert gallery.change_seq() > seen_seq  # a running door reloads its matcher
        assert gallery.db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    previous = site.database.parent / response.json["kept_previous"]
    assert previous.name.startswith("facegate.db.before-restore-")
    with sqlite3.connect(previous) as connection:
        assert connection.execute("SELECT name FROM people").fetchall() == [("Added Later",)]
    assert "restore" in site.audit_actions()


def test_an_older_backup_is_migrated_as_it_is_restored(tmp_path):
    live = tmp_path / "facegate.db"
    with Gallery(live) as gallery:
        gallery.add_person("Added Later")
    old = tmp_path / "old.db"
    with Gallery(old, migrations=MIGRATIONS[:2]) as gallery:
        gallery.add_person("Colin Powell")
    result = restore_database(live, old)
    assert result["schema_version"] == 2 and result["people"] == 1
    with Gallery(live) as gallery:
        assert [p.name for p in gallery.list_people()] == ["Colin Powell"]
        assert gallery.db.execute("SELECT MAX(version) FROM _migrations").fetchone()[0] == len(
            MIGRATIONS)
        assert gallery.db["api_tokens"].exists()
    assert Path(result["kept_previous"]).exists()


def test_a_restore_of_anything_but_our_database_is_refused_and_changes_nothing(site, tmp_path):
    add_person(site, "Colin Powell")
    good = tmp_path / "good.db"
    backup_database(site.database, good)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    newer = tmp_path / "newer.db"
    backup_database(site.database, newer)
    with sqlite3.connect(newer) as connection:
        connection.execute("INSERT INTO _migrations VALUES (99, 'from the future', 'x')")
    tampered = tmp_path / "tampered.db"
    backup_database(site.database, tampered)
    with sqlite3.connect(tampered) as connection:
        connection.execute("CREATE TRIGGER sneaky AFTER INSERT ON events BEGIN "
                           "DELETE FROM people; END")
    data = good.read_bytes()
    corrupt = bytearray(data)
    corrupt[4096:8192] = bytes(4096)  # the second page (a table's root) zeroed
    cases = [
        (b"name,total\nalice,3\n", "not an SQLite database"),
        (data[: len(data) // 2], "SQLite"),
        (bytes(corrupt), "SQLite"),
        (foreign.read_bytes(), "not facegate's"),
        (newer.read_bytes(), "newer facegate"),
        (tampered.read_bytes(), "sneaky"),
    ]
    for upload, words in cases:
        response = restore(site, upload)
        assert_error(response, 400, words, field="database")
    assert_error(site.call("POST", "/api/restore", data={},
                           content_type="multipart/form-data"), 400, field="database")
    assert [p["name"] for p in site.call("GET", "/api/people").json["people"]] == [
        "Colin Powell"]
    assert not list(site.database.parent.glob("facegate.db.before-restore-*"))
    assert not list(site.database.parent.glob(".upload-*"))
    assert not list(site.database.parent.glob(".restore-*"))
    assert "restore" not in site.audit_actions()


def test_an_oversized_restore_is_413_json(site):
    site.app.config["MAX_RESTORE_BYTES"] = 10_000
    assert_error(restore(site, b"x" * 20_000), 413, "backup")
    assert site.count("people") == 0


# --- Documentation -----------------------------------------------------------------------------


def test_every_api_route_is_in_openapi_yaml_and_nothing_else_is(site):
    yaml = pytest.importorskip("yaml")
    spec = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    assert spec["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, item in spec["paths"].items()
                  for method in item if method in ("get", "post", "patch", "put", "delete")}
    routed = set()
    for rule in site.app.url_map.iter_rules():
        if rule.endpoint.startswith("api."):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            routed |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routed - documented == set(), "routes missing from docs/openapi.yaml"
    assert documented - routed == set(), "docs/openapi.yaml describes routes that do not exist"
    settings = spec["components"]["schemas"]["Settings"]["properties"]
    assert set(settings) == set(SETTABLE), "docs/openapi.yaml's Settings keys are out of date"


def test_api_md_shows_every_route(site):
    text = (ROOT / "docs" / "api.md").read_text()
    for rule in site.app.url_map.iter_rules():
        if rule.endpoint.startswith("api."):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                assert f"{method} {path}" in text, f"{method} {path} is not in docs/api.md"


@pytest.mark.parametrize("bad", ["   ", "Ada\x1b[2J", "\u202eadA", "x" * 5000])
def test_the_api_refuses_the_names_the_store_refuses_naming_the_field(site, bad):
    if bad.strip():
        assert_error(site.call("POST", "/api/people", json={"name": bad}), 400, field="name")
    else:
        assert_error(site.call("POST", "/api/people", json={"name": bad}), 400, "empty",
                     field="name")
    person_id = add_person(site, "Ada")
    assert_error(site.call("PATCH", f"/api/people/{person_id}", json={"name": bad}), 400,
                 field="name")
    if bad.strip():
        assert_error(site.call("PATCH", f"/api/people/{person_id}", json={"external_id": bad}),
                     400, "external id", field="external_id")
    assert site.count("people") == 1


def test_a_valid_until_date_alone_is_the_end_of_that_day_as_on_the_command_line(site):
    colin = add_person(site, "Colin Powell")
    edited = site.call("PATCH", f"/api/people/{colin}",
                       json={"valid_until": "2027-06-30", "version": 1})
    assert edited.status_code == 200, edited.json
    end = datetime(2027, 6, 30, 23, 59, 59, 999_000).astimezone().astimezone(UTC)
    assert edited.json["valid_until"] == end.isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
