"""An admin at the real appliance, in a real headless browser.

The daemon runs as a user runs it (``facegate run --web``, mock pins, a replay camera that
keeps showing Serena Williams); the admin signs in, enrols her from a photo, watches the
door let her in, and deletes her, and her files go with her.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlparse

import pytest

from tests.e2e.browser import in_ci

if not in_ci():  # on CI a missing playwright is an import error: loud, never a skip
    pytest.importorskip("playwright", reason="no headless browser: the playwright package "
                        "is missing (pip install -e '.[dev]')")

from playwright.sync_api import expect  # noqa: E402

from tests.e2e.appliance import ADMIN, DATA, PASSWORD, PEOPLE  # noqa: E402
from tests.e2e.pages import (  # noqa: E402
    add_person,
    delete_person,
    expect_image_loaded,
    open_people,
    person_row,
    sign_in,
    upload,
    wait_for_event,
)

NAME = "Serena Williams"
SERENA = PEOPLE / "Serena_Williams"


def test_a_signed_out_visit_is_sent_to_the_sign_in_page(appliance, page):
    page.goto(appliance.url + "/people")
    assert urlparse(page.url).path == "/login"
    expect(page.locator("form#login")).to_be_visible()


def test_a_wrong_password_is_refused_with_a_message(appliance, page):
    sign_in(page, appliance.url, ADMIN, "not the password")
    expect(page.locator(".flash.error")).to_contain_text("Wrong name or password.")
    expect(page.locator("form#login")).to_be_visible()
    page.goto(appliance.url + "/people")
    assert urlparse(page.url).path == "/login"


def test_the_dashboard_shows_the_door_and_the_live_view(appliance, page):
    sign_in(page, appliance.url, ADMIN, PASSWORD)
    page.goto(appliance.url + "/")
    expect(page.locator("#door-state")).to_have_text(re.compile(r"\w"))
    expect_image_loaded(page.locator("img#live-view"))


def test_an_enrolled_person_is_let_in_and_leaves_no_trace_when_deleted(appliance, page):
    sign_in(page, appliance.url, ADMIN, PASSWORD)
    add_person(page, NAME)

    upload(page, SERENA / "Serena_Williams_0001.jpg")
    expect(page.locator("ul#enrol-results li.accepted")).to_have_count(1)
    upload(page, DATA / "page.png")
    expect(page.locator("ul#enrol-results li.refused")).to_contain_text(
        re.compile("no face", re.IGNORECASE))

    open_people(page)
    expect(person_row(page, NAME).locator("td.templates")).to_have_text("1")

    # The replay keeps showing her second photo; the door picks up the new template.
    granted_row = wait_for_event(page, "granted", NAME, timeout=30)
    expect_image_loaded(granted_row.locator("img.snapshot").first)
    granted = [e for e in appliance.cli_json("events")
               if e["kind"] == "granted" and e["person_name"] == NAME]
    assert granted, "the page shows a grant that `facegate events` does not"
    snapshots = [appliance.snapshots / e[key] for e in granted
                 for key in ("face_path", "frame_path") if e[key]]
    assert snapshots and all(path.is_file() for path in snapshots)

    delete_person(page, NAME)
    open_people(page)
    expect(person_row(page, NAME)).to_have_count(0)
    assert appliance.cli("people", "list", "--json").stdout == ""
    time.sleep(1.5)  # a decision the door was making as she was deleted lands in the log
    assert [path for path in snapshots if path.exists()] == []
    assert [e for e in appliance.cli_json("events") if e["person_name"] == NAME] == []


def test_a_photo_of_two_people_shows_the_faces_and_enrols_the_one_picked(appliance, page):
    sign_in(page, appliance.url, ADMIN, PASSWORD)
    add_person(page, "Partner")
    upload(page, DATA / "couple.jpg")
    picker = page.locator("div.face-picker")
    expect(picker).to_be_visible()
    choices = picker.locator("button.face-choice")
    expect(choices).to_have_count(2)
    for number in range(2):
        expect_image_loaded(choices.nth(number).locator("img"))
    choices.nth(1).click()
    page.wait_for_load_state()
    expect(page.locator("ul#enrol-results li.accepted")).to_have_count(1)
    expect(page.locator("#templates li.template")).to_have_count(1)
    (person,) = [p for p in appliance.cli_json("people", "list") if p["name"] == "Partner"]
    assert person["templates"] == 1
    delete_person(page, "Partner")


def test_the_dashboard_follows_the_door_without_a_reload(appliance, page):
    sign_in(page, appliance.url, ADMIN, PASSWORD)
    page.goto(appliance.url + "/")
    expect(page.locator("#camera-state")).to_have_text("up", timeout=10_000)
    page.locator("form#unlock-now button").click()
    page.wait_for_load_state()
    state = page.locator("#door-state")
    expect(state).to_have_text("unlocked")
    page.evaluate("window.__not_reloaded = true")
    # The strike relocks after door.unlock_seconds; the 2-second poll shows it, no reload.
    expect(state).to_have_text("locked", timeout=15_000)
    assert page.evaluate("window.__not_reloaded === true")
    expect(page.locator("#recent-events li[data-kind=manual_unlock]")).to_have_count(1)
