"""The dashboard (door state, live view, unlock now) and the access log (filters, snapshots,
CSV export)."""

from __future__ import annotations

import csv
import io
import re
import time
from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest

from device.events import EventLog
from device.liveness import LivenessCheck, attack_sentence, liveness_loader
from device.web.services import Services
from tests.conftest import load
from tests.liveness_support import PRINT_ATTACKS, needs_pad_dev, pad_dev
from tests.web_support import (
    COLIN,
    PASSWORD,
    audit_actions,
    post,
    relay_on,
    sign_in,
)

START = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)


@pytest.fixture
def events(app):
    """Four events an hour apart from START: Colin granted (with snapshots), a stranger,
    Colin denied, and a forced door; returns them oldest first."""
    now = [START]
    face = np.full((112, 112, 3), 90, np.uint8)
    frame = cv2.imread(str(COLIN[0]))
    recorded = []
    with EventLog(app.config["DATABASE"], app.config["SNAPSHOTS_DIR"], door_id="front",
                  clock=lambda: now[0], stdout=io.StringIO()) as log:
        for kind, person in (("granted", "p-colin"), ("unknown", None), ("denied", "p-colin"),
                             ("forced_open", None)):
            recorded.append(log.record(
                kind, person_id=person, person_name="Colin Powell" if person else None,
                score=0.71 if person else 0.2, reason="outside schedule" if kind == "denied"
                else None, face_crop=face if kind == "granted" else None,
                frame=frame if kind == "granted" else None))
            now[0] += timedelta(hours=1)
    return recorded


def rows(response) -> list[str]:
    return re.findall(r'<tr data-kind="(\w+)"', response.get_data(as_text=True))


def local_input(when: datetime) -> str:
    return when.astimezone().strftime("%Y-%m-%dT%H:%M")


# --- The dashboard -------------------------------------------------------------------------------


def test_the_dashboard_shows_the_door_state_live_view_and_latest_events(admin, events):
    page = admin.get("/").get_data(as_text=True)
    assert re.search(r'id="door-state"[^>]*>locked<', page)
    assert '<img id="live-view"' in page and 'id="unlock-now"' in page
    recent = re.search(r'<ul id="recent-events".*?</ul>', page, re.S)[0]
    assert recent.count("<li") == 4
    assert f'src="/snapshots/{events[0].id}/face"' in recent


def test_unlock_now_energises_the_relay_and_is_audited(app, admin, pin_factory, door):
    response = post(admin, "/unlock")
    assert response.status_code == 302
    assert relay_on(pin_factory)
    assert door.state == "unlocked"
    assert re.search(r'id="door-state"[^>]*>unlocked<', admin.get("/").get_data(as_text=True))
    assert audit_actions(app.config["DATABASE"])[-1] == "unlock"


def test_the_live_view_serves_the_newest_frame_as_jpeg(admin):
    response = admin.get("/live.jpg")
    assert response.mimetype == "image/jpeg" and response.data.startswith(b"\xff\xd8")
    assert response.headers["Cache-Control"] == "no-store"


def test_without_a_camera_or_door_the_dashboard_shows_placeholders(make_app, services):
    bare = Services(database=services.database, snapshots=services.snapshots)
    app = make_app(services=bare)
    from device.web.auth import add_user

    add_user(app.config["DATABASE"], "ann", PASSWORD)
    client = app.test_client()
    sign_in(client, "ann", PASSWORD)
    page = client.get("/").get_data(as_text=True)
    assert 'id="live-placeholder"' in page and 'id="live-view"' not in page
    assert re.search(r'id="door-state"[^>]*>unknown<', page)
    assert client.get("/live.jpg").status_code == 404


# --- The log -----------------------------------------------------------------------------------


def test_the_log_lists_events_newest_first_with_names_and_snapshots(viewer, events):
    response = viewer.get("/log")
    assert rows(response) == ["forced_open", "denied", "unknown", "granted"]
    page = response.get_data(as_text=True)
    granted = re.search(r'<tr data-kind="granted".*?</tr>', page, re.S)[0]
    assert '<td class="person" data-label="Person">Colin Powell</td>' in granted
    assert f'<img class="snapshot" src="/snapshots/{events[0].id}/face"' in granted


def test_the_log_filters_by_decision_person_and_time(admin, events):
    assert rows(admin.get("/log?kind=granted")) == ["granted"]
    assert rows(admin.get("/log?person=p-colin")) == ["denied", "granted"]
    since, until = local_input(START + timedelta(hours=1)), local_input(START + timedelta(hours=3))
    assert rows(admin.get("/log", query_string={"since": since, "until": until})) == [
        "denied", "unknown"]


def test_a_bad_time_filter_is_explained(admin, events):
    response = admin.get("/log?since=yesterday-ish")
    assert response.status_code == 400
    assert 'id="error-since"' in response.get_data(as_text=True)
    assert admin.get("/log?kind=nonsense").status_code == 400


@pytest.fixture
def east_of_utc(monkeypatch):
    """The machine's local zone 14 hours east of UTC: local year 1 begins in UTC year 0."""
    monkeypatch.setenv("TZ", "UTC-14")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("query", ["since=0001-01-01T00:00", "until=9999-12-31T23:59:59-14:00",
                                   "since=99999999d", "page=99999999999999999999", "page=0",
                                   "page=%C2%B2", "page=x"])
def test_an_out_of_range_filter_or_page_is_a_400_with_one_sentence(admin, events, query,
                                                                     east_of_utc):
    response = admin.get(f"/log?{query}")
    assert response.status_code == 400
    field = query.split("=")[0]
    message = re.search(rf'id="error-{field}">([^<]+)<', response.get_data(as_text=True))[1]
    assert message.endswith(".") and message.count(". ") == 0
    assert admin.get(f"/log.csv?{query}").status_code in (200, 400)  # never a 500


def test_the_log_reads_ages_like_the_cli(admin, events):
    assert admin.get("/log?since=2h").status_code == 200


def test_the_csv_export_has_the_same_filters(admin, events):
    page = admin.get("/log?kind=denied").get_data(as_text=True)
    link = re.search(r'<a id="export-csv"[^>]*href="([^"]+)"', page)[1]
    assert link == "/log.csv?kind=denied"
    response = admin.get(link)
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    table = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert table[0] == ["at", "door", "kind", "person", "score", "reason", "event_id"]
    assert table[1][1:] == ["front", "denied", "Colin Powell", "0.7100", "outside schedule",
                            events[2].id]
    assert len(table) == 2
    everything = list(csv.reader(io.StringIO(admin.get("/log.csv").get_data(as_text=True))))
    assert len(everything) == 5


def test_the_csv_export_defuses_spreadsheet_formulas(app, admin):
    with EventLog(app.config["DATABASE"], app.config["SNAPSHOTS_DIR"], door_id="front",
                  stdout=io.StringIO()) as log:
        log.record("granted", person_id="p-x", person_name="=HYPERLINK(\"http://x\")")
    table = list(csv.reader(io.StringIO(admin.get("/log.csv").get_data(as_text=True))))
    assert table[1][3].startswith("'=")


# --- Snapshots ---------------------------------------------------------------------------------


def test_a_snapshot_is_served_by_event_id(viewer, events):
    for which in ("face", "frame"):
        with viewer.get(f"/snapshots/{events[0].id}/{which}") as response:
            assert response.status_code == 200 and response.mimetype == "image/jpeg"
            assert response.data.startswith(b"\xff\xd8")
            assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("url", [
    "/snapshots/no-such-event/face",
    "/snapshots/{granted}/thumbnail",
    "/snapshots/{unknown}/face",  # an event without snapshots
    "/snapshots/..%2F..%2Ffacegate.db/face",
    "/snapshots/{granted}/..%2F..%2Ffacegate.db",
])
def test_a_snapshot_url_never_reaches_a_file_of_its_own_choosing(admin, events, url):
    url = url.format(granted=events[0].id, unknown=events[1].id)
    with admin.get(url) as response:
        assert response.status_code == 404


def test_a_snapshot_removed_from_disk_is_not_found(app, admin, events):
    with EventLog(app.config["DATABASE"], app.config["SNAPSHOTS_DIR"], door_id="x") as log:
        log.snapshot_file(events[0].face_path).unlink()
    assert admin.get(f"/snapshots/{events[0].id}/face").status_code == 404


def test_a_door_opened_while_locked_shows_as_forced(make_app, services, pin_factory):
    from device.door import Door, DoorSettings
    from device.web.auth import add_user

    contact = 27
    pin_factory.pin(contact).drive_low()  # the reed contact is closed: the door is shut
    with Door(DoorSettings(relay_pin=22, contact_pin=contact),
              pin_factory=pin_factory) as door:
        services.door = door
        app = make_app(services=services)
        add_user(app.config["DATABASE"], "vic", PASSWORD, role="viewer")
        client = app.test_client()
        sign_in(client, "vic", PASSWORD)
        pin_factory.pin(contact).drive_high()  # opened, while locked
        assert door.is_open and door.state == "locked"
        with EventLog(app.config["DATABASE"], app.config["SNAPSHOTS_DIR"], door_id="front",
                      stdout=io.StringIO()) as log:
            log.record("forced_open")  # as the daemon logs the door's event
        page = client.get("/").get_data(as_text=True)
        assert re.search(r'id="door-state"[^>]*>forced<', page)


def test_an_audit_page_number_out_of_range_is_a_400(admin):
    assert admin.get("/audit?page=99999999999999999999").status_code == 400
    assert admin.get("/audit?page=2").status_code == 200


# --- Presentation attacks ------------------------------------------------------------------------


@pytest.fixture
def attack(app, pipeline, events):
    """A printed photo held up to the door, as the daemon logs it: judged by the real
    liveness model, resembling Colin Powell by the real embedder, with its snapshot."""
    frame = load(pad_dev(PRINT_ATTACKS[0]))
    face = pipeline.process(frame)[0]
    judged = LivenessCheck(liveness_loader()).judge(frame, face.box)
    assert judged.attack
    colin = pipeline.process(load(COLIN[0]))[0]
    x1, y1, x2, y2 = (int(v) for v in face.box)
    with EventLog(app.config["DATABASE"], app.config["SNAPSHOTS_DIR"], door_id="front",
                  clock=lambda: START + timedelta(hours=5), stdout=io.StringIO()) as log:
        return log.record(
            "attack", person_id="p-colin", person_name="Colin Powell",
            score=float(np.dot(face.embedding, colin.embedding)),
            reason=attack_sentence(judged), face_crop=frame[y1:y2, x1:x2], frame=frame,
            detail={"liveness": round(judged.score, 4), "liveness_threshold": judged.threshold,
                    "liveness_votes": [round(judged.score, 4)] * 3})


def row(response, kind: str) -> str:
    return re.search(rf'<tr data-kind="{kind}".*?</tr>', response.get_data(as_text=True),
                     re.S)[0]


@needs_pad_dev
def test_a_presentation_attack_reads_as_one_in_the_log(viewer, attack):
    response = viewer.get("/log")
    assert rows(response) == ["attack", "forced_open", "denied", "unknown", "granted"]
    shown = row(response, "attack")
    liveness = f"{attack.detail['liveness']:.2f}"
    assert '<span class="kind kind-attack kind-refused">presentation attack</span>' in shown
    assert '<span class="resembled">looked like</span> Colin Powell' in shown
    assert ('<td class="reason" data-label="Reason">Presentation attack — looked like Colin '
            f'Powell, liveness {liveness}</td>') in shown
    assert f'<td class="score" data-label="Score">{attack.score:.3f}</td>' in shown
    assert f'<img class="snapshot" src="/snapshots/{attack.id}/face"' in shown
    # Refusals share one colour; a grant has its own.
    assert 'class="kind kind-denied kind-refused"' in row(response, "denied")
    assert 'class="kind kind-granted"' in row(response, "granted")


@needs_pad_dev
def test_the_log_filters_presentation_attacks(admin, attack):
    response = admin.get("/log?kind=attack")
    assert rows(response) == ["attack"]
    assert re.search(r'<option value="attack" selected>presentation attack</option>',
                     response.get_data(as_text=True))
    assert rows(admin.get("/log?person=p-colin")) == ["attack", "denied", "granted"]
    table = list(csv.reader(io.StringIO(admin.get("/log.csv?kind=attack")
                                        .get_data(as_text=True))))
    assert [line[2:4] for line in table[1:]] == [["attack", "Colin Powell"]]
    assert table[1][5] == attack.reason and "liveness" in attack.reason


@needs_pad_dev
def test_the_dashboard_shows_a_presentation_attack_with_its_liveness(admin, attack):
    page = admin.get("/").get_data(as_text=True)
    newest = re.search(r'<ul id="recent-events".*?<li data-kind="(\w+)"(.*?)</li>', page,
                       re.S)
    assert newest[1] == "attack"
    assert "presentation attack" in newest[2] and "looked like</span> Colin Powell" in newest[2]
    assert f'<span class="liveness">liveness {attack.detail["liveness"]:.2f}</span>' in newest[2]


@needs_pad_dev
def test_the_api_lists_presentation_attacks_with_their_liveness(viewer, attack):
    listed = viewer.get("/api/events?kind=attack").get_json()
    assert listed["total"] == 1
    (event,) = listed["events"]
    assert (event["kind"], event["person_name"]) == ("attack", "Colin Powell")
    assert event["detail"]["liveness"] == attack.detail["liveness"]
    assert event["face_url"] == f"/api/events/{attack.id}/face.jpg"


@needs_pad_dev
def test_an_attack_on_a_person_since_erased_keeps_its_liveness_but_not_the_name(app, admin,
                                                                                 attack):
    with EventLog(app.config["DATABASE"], app.config["SNAPSHOTS_DIR"], door_id="front",
                  stdout=io.StringIO()) as log:
        log.delete_person("p-colin")
    shown = row(admin.get("/log"), "attack")
    assert "Colin" not in shown
    assert (f'<td class="reason" data-label="Reason">Presentation attack — liveness '
            f'{attack.detail["liveness"]:.2f}</td>') in shown


def test_an_attack_the_model_could_not_score_is_still_shown_as_one(app, admin):
    with EventLog(app.config["DATABASE"], app.config["SNAPSHOTS_DIR"], door_id="front",
                  stdout=io.StringIO()) as log:
        log.record("attack", reason=attack_sentence(None),
                   detail={"liveness": None, "liveness_votes": [None, None, None]})
    shown = row(admin.get("/log"), "attack")
    assert '<td class="reason" data-label="Reason">Presentation attack</td>' in shown
    assert '<td class="person" data-label="Person"></td>' in shown


# --- Words, and one event's page ---------------------------------------------------------------


def test_a_snapshot_opens_the_events_own_page(viewer, events):
    granted = events[0]
    log = viewer.get("/log").get_data(as_text=True)
    assert f'href="/log/{granted.id}"' in log
    page = viewer.get(f"/log/{granted.id}").get_data(as_text=True)
    assert '<dd class="person">Colin Powell</dd>' in page
    assert '<dd class="score">0.710</dd>' in page
    assert '<dd class="liveness">not checked</dd>' in page
    assert f'src="/snapshots/{granted.id}/face"' in page
    assert f'src="/snapshots/{granted.id}/frame"' in page
    assert 'href="/log"' in page


def test_an_event_page_names_the_reason_and_says_when_no_snapshot_was_kept(viewer, events):
    page = viewer.get(f"/log/{events[2].id}").get_data(as_text=True)
    assert '<dd class="reason">outside schedule</dd>' in page
    assert "No snapshot was kept" in page
    assert viewer.get("/log/no-such-event").status_code == 404


def test_the_audit_page_shows_details_in_words_not_python(app, admin):
    from device.audit import record

    record(app.config["DATABASE"], "enrol_refused",
           {"refusals": ["no face found", "too dark"], "changed": {"door.unlock_seconds": 5}},
           "ann", "127.0.0.1")
    page = admin.get("/audit").get_data(as_text=True)
    assert "<b>refusals</b> no face found; too dark" in page
    assert "<b>changed</b> door.unlock_seconds: 5" in page
    assert "[&#39;" not in page and "{&#39;" not in page


def test_counts_are_singular_or_plural_in_words():
    from device.web.words import plural

    assert plural(1, "template") == "1 template"
    assert plural(0, "template") == "0 templates"
    assert plural(1, "person", "people") == "1 person"
    assert plural(3, "person", "people") == "3 people"


# --- The dashboard's poll ----------------------------------------------------------------------


def test_the_dashboard_state_follows_the_door_and_the_log(admin, events, door, pin_factory):
    state = admin.get("/dashboard/state").get_json()
    assert state["door"] == "locked" and state["camera"] == "up"
    assert state["latest"] == events[-1].id
    assert 'data-kind="forced_open"' in state["events_html"]
    post(admin, "/unlock")
    assert admin.get("/dashboard/state").get_json()["door"] == "unlocked"
    door.relock()
    assert admin.get("/dashboard/state").get_json()["door"] == "locked"


def test_the_dashboard_says_camera_down_when_no_frame_comes(admin, services):
    services.live.frame_age_seconds = 10.0
    assert admin.get("/dashboard/state").get_json()["camera"] == "down"
    assert '<strong id="camera-state" class="state-camera-down">down</strong>' in admin.get(
        "/").get_data(as_text=True)
    services.live.frame_age_seconds = None  # no frame yet
    assert admin.get("/dashboard/state").get_json()["camera"] == "down"


def test_without_a_camera_the_state_says_so(make_app, services):
    from dataclasses import replace

    from tests.web_support import signed_in

    app = make_app(services=replace(services, live=None, door=None))
    state = signed_in(app, "ann", "admin").get("/dashboard/state").get_json()
    assert state == {**state, "camera": "none", "door": "unknown", "contact": None}


def test_the_dashboard_poll_needs_a_session_and_is_not_activity(client):
    response = client.get("/dashboard/state")
    assert response.status_code == 302 and "next=" not in response.location


def test_a_live_view_knows_how_old_its_newest_frame_is():
    from device.daemon.live import LiveFrames

    live = LiveFrames()
    assert live.frame_age_seconds is None
    live.publish(np.zeros((4, 4, 3), np.uint8), [])
    assert 0.0 <= live.frame_age_seconds < 1.0
