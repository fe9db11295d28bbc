"""The admin page on a phone (390x844, an iPhone 12-14's CSS pixels): no page scrolls
sideways, the tables fold into cards, the header stays compact.

One person is enrolled and let in, so the log, the person and the event pages have content;
the account pages (your own, everyone's, one account's) are checked too.
"""

from __future__ import annotations

import pytest

from tests.e2e.browser import in_ci

if not in_ci():
    pytest.importorskip("playwright", reason="no headless browser: the playwright package "
                        "is missing (pip install -e '.[dev]')")

from playwright.sync_api import expect  # noqa: E402

from tests.e2e.appliance import ADMIN, PASSWORD, PEOPLE  # noqa: E402
from tests.e2e.pages import add_person, sign_in, upload, wait_for_event  # noqa: E402

PHONE = {"width": 390, "height": 844}
SERENA = PEOPLE / "Serena_Williams"
OVERFLOW = "() => [document.documentElement.scrollWidth, window.innerWidth]"


@pytest.fixture
def phone(browser, request):
    context = browser.new_context(viewport=PHONE)
    context.set_default_timeout(10_000)
    page = context.new_page()
    request.node.e2e_page = page
    yield page
    context.close()


def test_no_main_page_scrolls_sideways_on_a_phone(appliance, phone):
    sign_in(phone, appliance.url, ADMIN, PASSWORD)
    add_person(phone, "Serena Williams")
    person_url = phone.url
    upload(phone, SERENA / "Serena_Williams_0001.jpg")
    row = wait_for_event(phone, "granted", "Serena Williams", timeout=40)
    event_id = row.get_attribute("data-event-id")

    phone.goto(appliance.url + "/accounts")
    account_url = phone.locator(f'tr[data-account-name="{ADMIN}"] td.name a').get_attribute(
        "href")

    for path in ("/", "/people", person_url.removeprefix(appliance.url),
                 person_url.removeprefix(appliance.url) + "/capture", "/people/new", "/log",
                 f"/log/{event_id}", "/settings", "/audit", "/account", "/accounts",
                 account_url):
        phone.goto(appliance.url + path)
        phone.wait_for_load_state("load")
        scroll_width, inner_width = phone.evaluate(OVERFLOW)
        assert scroll_width <= inner_width, f"{path} is {scroll_width} px wide on a phone"

    # The log's rows are cards, each cell labelled; the header holds one line.
    phone.goto(appliance.url + "/log")
    cell = phone.locator("table#events tr[data-kind=granted] td.snapshots").first
    expect(cell).to_be_visible()
    assert phone.locator("header").bounding_box()["height"] < 60
