"""An account at the real appliance, in a real headless browser: a viewer made with
``facegate admin add`` changes their own password on the Account page, and from then on
signs in with the new one only. (A separate account, so that the module's admin keeps the
password the other tests sign in with.)"""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from tests.e2e.browser import in_ci

if not in_ci():  # on CI a missing playwright is an import error: loud, never a skip
    pytest.importorskip("playwright", reason="no headless browser: the playwright package "
                        "is missing (pip install -e '.[dev]')")

from playwright.sync_api import expect  # noqa: E402

from tests.e2e.appliance import ADMIN, PASSWORD  # noqa: E402
from tests.e2e.pages import change_password, sign_in, sign_out  # noqa: E402

NEW = "a long new password"


def test_a_user_changes_their_password_and_signs_in_with_the_new_one(appliance, page):
    appliance.cli("admin", "add", "kim", "--role", "viewer", "--password-stdin",
                  stdin=PASSWORD + "\n")
    sign_in(page, appliance.url, "kim", PASSWORD)

    change_password(page, PASSWORD, NEW)

    expect(page.locator(".flash.info")).to_contain_text("Your password is changed")
    assert urlparse(page.url).path == "/account"  # still signed in
    sign_out(page)
    sign_in(page, appliance.url, "kim", PASSWORD)
    expect(page.locator(".flash.error")).to_contain_text("Wrong name or password.")
    sign_in(page, appliance.url, "kim", NEW)
    expect(page.locator("a#nav-account")).to_contain_text("kim")
    assert urlparse(page.url).path == "/"


def test_an_admin_disables_an_account_and_it_can_no_longer_sign_in(appliance, browser, page):
    appliance.cli("admin", "add", "lee", "--role", "viewer", "--password-stdin",
                  stdin=PASSWORD + "\n")
    sign_in(page, appliance.url, ADMIN, PASSWORD)
    page.locator("a#nav-accounts").click()
    page.locator('tr[data-account-name="lee"] td.name a').click()
    page.locator("form#account-disable button").click()
    expect(page.locator("#account-active")).to_contain_text("disabled")

    other = browser.new_context().new_page()
    try:
        sign_in(other, appliance.url, "lee", PASSWORD)
        expect(other.locator(".flash.error")).to_contain_text("This account is disabled")
    finally:
        other.context.close()
