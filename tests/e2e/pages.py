"""What an admin does on the page, step by step, by the page's element contract.

The selectors below are the contract between the web app and these tests (and the
screenshots): change one side, change the other.
"""

from __future__ import annotations

import time
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

SUBMIT = "button[type=submit], input[type=submit], button:not([type])"


def submit(form: Locator) -> None:
    """Press the form's submit button, as a person would."""
    form.locator(SUBMIT).first.click()


def sign_in(page: Page, url: str, name: str, password: str) -> None:
    page.goto(url + "/login")
    form = page.locator("form#login")
    form.locator("input[name=username]").fill(name)
    form.locator("input[name=password]").fill(password)
    submit(form)
    page.wait_for_load_state()


def open_people(page: Page) -> None:
    page.locator("a#nav-people").click()
    page.wait_for_load_state()


def person_row(page: Page, name: str) -> Locator:
    return page.locator(f'tr[data-person-name="{name}"]')


def add_person(page: Page, name: str) -> None:
    """People, "add", name, save: ends on the new person's page."""
    open_people(page)
    page.locator("a#add-person").click()
    form = page.locator("form#person-form")
    form.locator("input[name=name]").fill(name)
    submit(form)
    expect(page.locator("form#enrol-upload")).to_be_visible()


def open_person(page: Page, name: str) -> None:
    """From anywhere: People, then the person's row."""
    open_people(page)
    person_row(page, name).locator("a").first.click()
    expect(page.locator("form#enrol-upload")).to_be_visible()


def upload(page: Page, *photos: Path) -> Locator:
    """Upload photos on the person's page; returns the result list's items."""
    form = page.locator("form#enrol-upload")
    form.locator("input[name=photos]").set_input_files([str(p) for p in photos])
    submit(form)
    results = page.locator("ul#enrol-results li")
    expect(results.first).to_be_visible(timeout=30_000)  # the first upload loads the models
    return results


def wait_for_event(page: Page, kind: str, person: str | None, timeout: float = 30) -> Locator:
    """The access log's row of a ``kind`` event naming ``person`` (None: anyone), reloading
    the log until it appears."""
    page.locator("a#nav-log").click()
    page.wait_for_load_state()
    row = page.locator(f'table#events tr[data-kind="{kind}"]')
    if person is not None:
        row = row.filter(has=page.locator("td.person", has_text=person))
    deadline = time.monotonic() + timeout
    while row.count() == 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {kind} event for {person} in the log after "
                                 f"{timeout:.0f} s")
        time.sleep(1)
        page.reload()
    return row.first


def delete_person(page: Page, name: str) -> None:
    """From the person's page: "delete", then confirm."""
    open_person(page, name)
    page.locator("a#delete-person").click()
    page.locator("form#confirm-delete button").first.click()
    page.wait_for_load_state()


def expect_image_loaded(image: Locator, timeout: float = 15) -> None:
    """Wait until ``image`` has decoded a picture (``naturalWidth > 0``)."""
    expect(image).to_be_attached()
    image.page.wait_for_function("img => img.naturalWidth > 0",
                                 arg=image.element_handle(), timeout=timeout * 1000)


def sign_out(page: Page) -> None:
    page.locator("button#nav-logout").click()
    expect(page.locator("form#login")).to_be_visible()


def change_password(page: Page, current: str, new: str) -> None:
    """Account (the name in the header), then the password form: current, new, new again."""
    page.locator("a#nav-account").click()
    form = page.locator("form#password-form")
    form.locator("input[name=current_password]").fill(current)
    form.locator("input[name=new_password]").fill(new)
    form.locator("input[name=new_password2]").fill(new)
    submit(form)
    page.wait_for_load_state()
