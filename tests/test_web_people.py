"""People and enrolment on the admin page: add, search, enrol by upload and by capture, the
duplicate-person warning, edit, delete, and the bad input each step must survive."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime

import cv2
import numpy as np

from device.config import Config
from device.events import EventLog
from device.gallery.store import Gallery
from device.web.services import Services
from tests.liveness_support import BONA_FIDE, PRINT_ATTACKS, needs_pad_dev, pad_dev
from tests.web_support import (
    COLIN,
    COUPLE,
    PAGE,
    PASSWORD,
    SERENA,
    PhotoLiveView,
    add_person,
    audit_actions,
    csrf_from,
    photo,
    post,
    results,
    sign_in,
    signed_in,
    upload,
)


def gallery_of(app) -> Gallery:
    return Gallery(app.config["DATABASE"])


def template_count(app, person_id: str) -> int:
    with gallery_of(app) as gallery:
        return gallery.db.execute("SELECT COUNT(*) FROM templates WHERE person_id = ?",
                                  [person_id]).fetchone()[0]


# --- The list ----------------------------------------------------------------------------------


def test_a_person_added_is_listed_with_a_thumbnail_and_template_count(app, admin):
    person_id = add_person(admin, "Colin Powell", "E-17")
    assert template_count(app, person_id) == 0
    upload(admin, person_id, [photo(COLIN[0])])
    page = admin.get("/people").get_data(as_text=True)
    row = re.search(r'<tr data-person-name="Colin Powell".*?</tr>', page, re.S)[0]
    assert '<td class="templates" data-label="Templates">1</td>' in row and "E-17" in row
    assert f'class="face" src="/people/{person_id}/face.jpg"' in row
    face = admin.get(f"/people/{person_id}/face.jpg")
    assert face.mimetype == "image/jpeg" and face.data.startswith(b"\xff\xd8")
    assert audit_actions(app.config["DATABASE"])[-2:] == ["person_add", "enrol"]


def test_search_filters_by_name_or_external_id(admin):
    add_person(admin, "Colin Powell", "E-17")
    add_person(admin, "Serena Williams", "E-42")
    for query, expected in (("colin", ["Colin Powell"]), ("E-42", ["Serena Williams"]),
                            ("", ["Colin Powell", "Serena Williams"]), ("zz", [])):
        page = admin.get("/people", query_string={"q": query}).get_data(as_text=True)
        assert re.findall(r'data-person-name="([^"]+)"', page) == expected


def test_a_person_needs_a_unique_name(app, admin):
    response = post(admin, "/people/new", {"name": "  "}, page="/people/new")
    assert response.status_code == 400
    assert 'id="error-name"' in response.get_data(as_text=True)
    add_person(admin, "Colin Powell")
    response = post(admin, "/people/new", {"name": "Colin Powell"}, page="/people/new")
    assert response.status_code == 400
    assert "already in the gallery" in response.get_data(as_text=True)
    with gallery_of(app) as gallery:
        assert gallery.counts()["people"] == 1


def test_an_unknown_person_is_not_found(admin):
    assert admin.get("/people/no-such-id").status_code == 404


# --- Enrolment by upload -----------------------------------------------------------------------


def test_an_upload_enrols_good_photos_and_refuses_bad_ones_with_reasons(app, admin):
    person_id = add_person(admin, "Colin Powell")
    response = upload(admin, person_id, [
        photo(COLIN[0]), photo(COUPLE), photo(PAGE), (b"\xff\xd8\xff not really a jpeg", "x.jpg"),
    ])
    assert response.status_code == 200
    outcomes = results(response)
    # The couple's two faces are held back for the admin to pick one (the face picker).
    assert [status for status, _ in outcomes] == ["accepted", "pending", "refused", "refused"]
    assert "2 faces of similar size found" in outcomes[1][1]
    assert "no face found" in outcomes[2][1]
    assert "not an image facegate can read" in outcomes[3][1]
    page = response.get_data(as_text=True)
    assert re.search(r'<li class="accepted">\s*<img class="crop" src="/templates/[^"]+/crop.jpg"',
                     page)
    assert template_count(app, person_id) == 1
    # The same bytes again: refused, nothing added.
    again = upload(admin, person_id, [photo(COLIN[0])])
    assert results(again) == [("refused", "this image is already enrolled for Colin Powell")]
    assert template_count(app, person_id) == 1


def test_client_file_names_are_shown_but_never_used_on_disk(app, admin, tmp_path):
    person_id = add_person(admin, "Colin Powell")
    data, _ = photo(COLIN[0])
    response = upload(admin, person_id, [(data, "../../../evil.jpg")])
    assert results(response)[0][0] == "accepted"
    assert "photo 1 (evil.jpg)" in response.get_data(as_text=True)
    assert not any("evil" in path.name for path in tmp_path.rglob("*"))


def test_an_upload_without_photos_says_so(app, admin):
    person_id = add_person(admin, "Colin Powell")
    token = csrf_from(admin, f"/people/{person_id}")
    response = admin.post(f"/people/{person_id}/photos", data={"csrf_token": token},
                          content_type="multipart/form-data")
    assert response.status_code == 400
    assert "Choose one or more photos to upload." in response.get_data(as_text=True)


def test_an_oversized_upload_gets_a_clear_413_page_and_changes_nothing(make_app):
    app = make_app(MAX_CONTENT_LENGTH=12_000)
    from device.web.auth import add_user

    add_user(app.config["DATABASE"], "ann", PASSWORD)
    client = app.test_client()
    sign_in(client, "ann", PASSWORD)
    person_id = add_person(client, "Colin Powell")
    response = upload(client, person_id, [photo(COLIN[0]), photo(COLIN[1])])
    assert response.status_code == 413
    assert "The upload is too large" in response.get_data(as_text=True)
    assert template_count(app, person_id) == 0


def test_a_photo_with_too_many_pixels_is_refused(make_app):
    app = make_app(MAX_UPLOAD_PIXELS=10_000)
    from device.web.auth import add_user

    add_user(app.config["DATABASE"], "ann", PASSWORD)
    client = app.test_client()
    sign_in(client, "ann", PASSWORD)
    person_id = add_person(client, "Colin Powell")
    outcomes = results(upload(client, person_id, [photo(COLIN[0])]))
    assert outcomes[0][0] == "refused" and "image too large" in outcomes[0][1]
    assert template_count(app, person_id) == 0


def test_a_face_of_someone_else_is_held_back_until_confirmed(app, admin):
    colin = add_person(admin, "Colin Powell")
    upload(admin, colin, [photo(COLIN[0])])
    other = add_person(admin, "C. Powell")
    response = upload(admin, other, [photo(COLIN[1])])
    page = response.get_data(as_text=True)
    assert results(response)[0][0] == "pending"
    warning = re.search(r'<div class="flash warning identity-warning".*?</div>', page, re.S)[0]
    assert "already enrolled as Colin Powell" in warning and 'class="confirm-identity"' in warning
    assert template_count(app, other) == 0
    token = re.search(r'name="token" value="([0-9a-f]{32})"', warning)[1]
    no_reason = post(admin, f"/people/{other}/photos/confirm", {"token": token},
                     page=f"/people/{other}")
    assert no_reason.status_code == 400 and template_count(app, other) == 0
    confirmed = post(admin, f"/people/{other}/photos/confirm",
                     {"token": token, "reason": "his brother, checked"}, page=f"/people/{other}")
    assert [status for status, _ in results(confirmed)] == ["accepted"]
    assert template_count(app, other) == 1
    assert "enrol_forced" in audit_actions(app.config["DATABASE"])
    # The token is spent: a second confirmation saves nothing more.
    again = post(admin, f"/people/{other}/photos/confirm",
                 {"token": token, "reason": "again"}, page=f"/people/{other}")
    assert again.status_code == 400
    assert template_count(app, other) == 1


def test_a_photo_of_someone_else_uploaded_under_an_enrolled_name_is_held_back(app, admin):
    colin = add_person(admin, "Colin Powell")
    upload(admin, colin, [photo(COLIN[0])])
    response = upload(admin, colin, [photo(SERENA[0])])
    assert results(response)[0][0] == "pending"
    assert "does not look like Colin Powell" in response.get_data(as_text=True)
    assert template_count(app, colin) == 1


def test_a_made_up_or_foreign_confirmation_token_saves_nothing(app, admin):
    colin = add_person(admin, "Colin Powell")
    upload(admin, colin, [photo(COLIN[0])])
    other = add_person(admin, "C. Powell")
    page = upload(admin, other, [photo(COLIN[1])]).get_data(as_text=True)
    token = re.search(r'name="token" value="([0-9a-f]{32})"', page)[1]
    third = add_person(admin, "Someone Else")
    for person_id, sent in ((other, "../../facegate.db"), (third, token)):
        response = post(admin, f"/people/{person_id}/photos/confirm",
                        {"token": sent, "reason": "sure"}, page=f"/people/{person_id}")
        assert response.status_code == 400
    assert template_count(app, other) == template_count(app, third) == 0


# --- Enrolment by capture ----------------------------------------------------------------------


def test_capture_takes_good_frames_from_the_door_camera(app, admin, services):
    person_id = add_person(admin, "Colin Powell")
    page = admin.get(f"/people/{person_id}/capture").get_data(as_text=True)
    assert 'id="live-view"' in page and 'id="capture"' in page
    response = post(admin, f"/people/{person_id}/capture", {"frames": "2"},
                    page=f"/people/{person_id}/capture")
    assert response.status_code == 200
    assert [status for status, _ in results(response)] == ["accepted", "accepted"]
    assert template_count(app, person_id) == 2
    assert services.live.frames_taken >= 2


def test_capture_stops_when_someone_else_steps_in_front_of_the_camera(app, admin, services):
    services.live = PhotoLiveView([COLIN[0], SERENA[0], COLIN[1]])
    person_id = add_person(admin, "Colin Powell")
    response = post(admin, f"/people/{person_id}/capture", {"frames": "3"},
                    page=f"/people/{person_id}/capture")
    outcomes = results(response)
    assert [status for status, _ in outcomes] == ["accepted", "refused"]
    assert "not the same face as the frames before it" in outcomes[1][1]
    assert "Capture stopped" in response.get_data(as_text=True)
    assert template_count(app, person_id) == 1


def test_capture_of_someone_else_for_an_enrolled_person_is_held_back(app, admin, services):
    person_id = add_person(admin, "Colin Powell")
    upload(admin, person_id, [photo(COLIN[0])])
    services.live = PhotoLiveView([SERENA[0], SERENA[1]])
    response = post(admin, f"/people/{person_id}/capture", {"frames": "2"},
                    page=f"/people/{person_id}/capture")
    assert [status for status, _ in results(response)] == ["pending"]
    assert "does not look like Colin Powell" in response.get_data(as_text=True)
    assert template_count(app, person_id) == 1


def test_a_photo_with_two_similar_faces_shows_them_and_enrols_the_one_picked(app, admin):
    person_id = add_person(admin, "Partner")
    response = upload(admin, person_id, [photo(COUPLE)])
    page = response.get_data(as_text=True)
    assert results(response)[0][0] == "pending"
    picker = re.search(r'<div class="flash warning face-picker".*?</ul>', page, re.S)[0]
    thumbnails = re.findall(r'src="(/people/[^"]+/face/\d\.jpg)"', picker)
    assert len(thumbnails) == 2
    face = admin.get(thumbnails[1])
    assert face.status_code == 200 and face.mimetype == "image/jpeg"
    token = re.search(r'name="token" value="([0-9a-f]{32})"', picker)[1]
    picked = post(admin, f"/people/{person_id}/photos/confirm", {"token": token, "face": "1"},
                  page=f"/people/{person_id}")
    assert [status for status, _ in results(picked)] == ["accepted"]
    assert template_count(app, person_id) == 1


def test_capture_without_a_camera_says_so(make_app, services):
    bare = Services(database=services.database, snapshots=services.snapshots,
                    pipeline_factory=services.pipeline_factory)
    app = make_app(services=bare)
    from device.web.auth import add_user

    add_user(app.config["DATABASE"], "ann", PASSWORD)
    client = app.test_client()
    sign_in(client, "ann", PASSWORD)
    person_id = add_person(client, "Colin Powell")
    response = post(client, f"/people/{person_id}/capture", page=f"/people/{person_id}/capture")
    assert response.status_code == 400
    assert "No camera is connected" in response.get_data(as_text=True)


# --- Edit ------------------------------------------------------------------------------------


def edit_form(**changes: str) -> dict[str, str]:
    form = {"name": "Colin Powell", "external_id": "", "active": "on", "valid_from": "",
            "valid_until": "", "schedule": ""}
    form.update(changes)
    return {key: value for key, value in form.items() if value is not None}


def test_an_edit_saves_validity_and_schedule_and_is_audited(app, admin):
    person_id = add_person(admin, "Colin Powell")
    response = post(admin, f"/people/{person_id}", edit_form(
        name="Colin L. Powell", external_id="E-17", active=None,
        valid_from="2025-01-01T08:00", valid_until="2025-12-31T18:00",
        schedule="mon-fri 07:00-19:00; sat 08:00-12:00"), page=f"/people/{person_id}")
    assert response.status_code == 302
    with gallery_of(app) as gallery:
        person = gallery.get_person(person_id)
    assert (person.name, person.external_id, person.active) == ("Colin L. Powell", "E-17", False)
    assert json.loads(person.schedule) == [{"days": "mon-fri", "from": "07:00", "until": "19:00"},
                                           {"days": "sat", "from": "08:00", "until": "12:00"}]
    local = datetime(2025, 1, 1, 8, 0).astimezone()
    assert datetime.fromisoformat(person.valid_from) == local.astimezone(UTC)
    page = admin.get(f"/people/{person_id}").get_data(as_text=True)
    assert 'value="mon-fri 07:00-19:00; sat 08:00-12:00"' in page
    assert 'value="2025-01-01T08:00"' in page
    assert audit_actions(app.config["DATABASE"])[-1] == "person_edit"


def test_a_valid_until_date_alone_is_the_whole_of_that_day_as_with_the_cli(app, admin):
    person_id = add_person(admin, "Colin Powell")
    response = post(admin, f"/people/{person_id}", edit_form(valid_until="2027-06-30"),
                    page=f"/people/{person_id}")
    assert response.status_code == 302
    with gallery_of(app) as gallery:
        person = gallery.get_person(person_id)
    end = datetime(2027, 6, 30, 23, 59, 59, 999_000).astimezone()
    assert datetime.fromisoformat(person.valid_until) == end


def test_a_bad_schedule_is_shown_beside_its_field_and_nothing_is_saved(app, admin):
    person_id = add_person(admin, "Colin Powell")
    response = post(admin, f"/people/{person_id}",
                    edit_form(name="Renamed", schedule="weekdays 7-19"),
                    page=f"/people/{person_id}")
    assert response.status_code == 400
    error = re.search(r'id="error-schedule">([^<]*)<', response.get_data(as_text=True))[1]
    assert "HH:MM" in error or "mon..sun" in error
    with gallery_of(app) as gallery:
        person = gallery.get_person(person_id)
    assert (person.name, person.schedule, person.version) == ("Colin Powell", None, 1)


def test_a_validity_that_ends_before_it_starts_is_refused(app, admin):
    person_id = add_person(admin, "Colin Powell")
    response = post(admin, f"/people/{person_id}",
                    edit_form(valid_from="2025-06-01T08:00", valid_until="2025-01-01T08:00"),
                    page=f"/people/{person_id}")
    assert response.status_code == 400 and 'id="error-valid_until"' in response.get_data(
        as_text=True)


def test_an_edit_made_on_a_stale_page_does_not_overwrite_a_newer_one(app, admin):
    person_id = add_person(admin, "Colin Powell")
    with gallery_of(app) as gallery:
        gallery.update_person(person_id, external_id="set meanwhile")
    response = post(admin, f"/people/{person_id}", {**edit_form(name="Mine"), "version": "1"},
                    page=f"/people/{person_id}")
    assert response.status_code == 400
    with gallery_of(app) as gallery:
        assert gallery.get_person(person_id).external_id == "set meanwhile"


# --- Delete ----------------------------------------------------------------------------------


def test_delete_removes_templates_crops_and_snapshots_after_a_confirmation(app, admin, tmp_path):
    person_id = add_person(admin, "Colin Powell")
    upload(admin, person_id, [photo(COLIN[0]), photo(COLIN[1])])
    face = np.full((112, 112, 3), 128, np.uint8)
    with EventLog(app.config["DATABASE"], app.config["SNAPSHOTS_DIR"], door_id="test") as log:
        event = log.record("granted", person_id=person_id, person_name="Colin Powell",
                           score=0.7, face_crop=face, frame=cv2.imread(str(COLIN[0])))
        files = [log.snapshot_file(event.face_path), log.snapshot_file(event.frame_path)]
    assert all(path.is_file() for path in files)
    confirm = admin.get(f"/people/{person_id}/delete").get_data(as_text=True)
    assert 'id="confirm-delete"' in confirm and "2 face templates" in confirm
    response = post(admin, f"/people/{person_id}/delete", page=f"/people/{person_id}/delete")
    assert response.status_code == 302 and response.location == "/people"
    assert not any(path.exists() for path in files)
    with gallery_of(app) as gallery:
        assert gallery.counts() == {"people": 0, "templates": {}}
    with EventLog(app.config["DATABASE"], app.config["SNAPSHOTS_DIR"], door_id="test") as log:
        kept = log.get(event.id)
    assert (kept.person_id, kept.person_name, kept.face_path) == (None, None, None)
    assert audit_actions(app.config["DATABASE"])[-1] == "person_delete"
    assert admin.get(f"/people/{person_id}").status_code == 404


# --- Two admins at once ------------------------------------------------------------------------


def test_two_admins_enrolling_at_once_while_the_door_recognises_lose_and_mix_nothing(
        app, admin, services, pipeline):
    second = app.test_client()
    from device.web.auth import add_user

    add_user(app.config["DATABASE"], "bob", PASSWORD)
    sign_in(second, "bob", PASSWORD)
    colin, serena = add_person(admin, "Colin Powell"), add_person(second, "Serena Williams")
    outcomes: dict[str, list] = {}
    stop = threading.Event()

    def enrol(client, person_id, photos):
        outcomes[person_id] = results(upload(client, person_id, [photo(p) for p in photos]))

    def door_recognises():
        frame = cv2.imread(str(SERENA[0]))
        with Gallery(app.config["DATABASE"]) as gallery:
            while not stop.is_set():
                with services.pipeline_lock:
                    pipeline.process(frame)
                gallery.change_seq()

    threads = [threading.Thread(target=enrol, args=(admin, colin, COLIN)),
               threading.Thread(target=enrol, args=(second, serena, SERENA))]
    door = threading.Thread(target=door_recognises)
    door.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stop.set()
    door.join(10)
    assert [status for status, _ in outcomes[colin]] == ["accepted"] * 3
    assert [status for status, _ in outcomes[serena]] == ["accepted"] * 3
    with gallery_of(app) as gallery:
        ids, _, matrix = gallery.embeddings(pipeline.model_name)
    assert sorted(ids) == sorted([colin] * 3 + [serena] * 3)
    # Each template sits with its own person: closer to their other templates than to anyone.
    for row, owner in enumerate(ids):
        scores = matrix @ matrix[row]
        scores[row] = -2
        assert ids[int(np.argmax(scores))] == owner


def test_deleting_a_person_deletes_their_held_back_photos(app, admin):
    colin = add_person(admin, "Colin Powell")
    upload(admin, colin, [photo(COLIN[0])])
    other = add_person(admin, "C. Powell")
    assert results(upload(admin, other, [photo(COLIN[1])]))[0][0] == "pending"
    pending = app.config["PENDING_DIR"]
    assert list(pending.glob("*.img"))
    post(admin, f"/people/{other}/delete", page=f"/people/{other}/delete")
    assert not list(pending.iterdir())


def test_a_name_with_terminal_escapes_or_a_bidi_override_is_refused(app, admin):
    for name in ("Ada\x1b[2J", "\u202eadA", "x" * 5000):
        response = post(admin, "/people/new", {"name": name}, page="/people/new")
        assert response.status_code == 400
        assert 'id="error-name"' in response.get_data(as_text=True)
    with gallery_of(app) as gallery:
        assert gallery.counts()["people"] == 0


@needs_pad_dev
def test_capture_refuses_a_photo_held_up_to_the_camera_and_takes_a_live_face(make_app,
                                                                            services):
    # The door's own configuration: the liveness check on.
    services.config = Config()
    services.live = PhotoLiveView([pad_dev(name) for name in PRINT_ATTACKS])
    app = make_app(services=services, CAPTURE_TIMEOUT_SECONDS=1.5)
    client = signed_in(app, "ann", "admin")
    person_id = add_person(client, "Printed Person")
    response = post(client, f"/people/{person_id}/capture", {"frames": "2"},
                    page=f"/people/{person_id}/capture")
    outcomes = results(response)
    assert outcomes and {status for status, _ in outcomes} == {"refused"}
    assert all("looks like a photo or a screen, not a live face (liveness" in reason
               for _, reason in outcomes)
    assert "took the face for a photo or a screen" in response.get_data(as_text=True)
    assert template_count(app, person_id) == 0
    assert "enrol_refused" in audit_actions(app.config["DATABASE"])

    services.live = PhotoLiveView([pad_dev(BONA_FIDE[0])])
    live_person = add_person(client, "Live Person")
    response = post(client, f"/people/{live_person}/capture", {"frames": "1"},
                    page=f"/people/{live_person}/capture")
    assert [status for status, _ in results(response)] == ["accepted"]
    assert template_count(app, live_person) == 1
