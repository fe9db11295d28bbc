"""Fixtures: one real daemon and one headless Chromium per module (both gone before the
rest of the suite runs, so its timing tests have the CPU), a fresh browser context (no
cookies) per test.

A missing browser skips these tests on a developer's machine and fails them on CI
(``CI=true``), so they are never skipped there unnoticed.
"""

from __future__ import annotations

import pytest

from tests.e2e.appliance import PEOPLE, Appliance
from tests.e2e.browser import VIEWPORT, browser_missing, launch, require

SERENA = PEOPLE / "Serena_Williams"


@pytest.fixture(scope="module")
def browser():
    require(browser_missing(), "the end-to-end browser")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def appliance(browser, tmp_path_factory):
    """The daemon, replaying Serena Williams's second photo at the door, over and over;
    an admin exists, nobody is enrolled. Stopped with SIGTERM; it must exit 0."""
    appliance = Appliance(tmp_path_factory.mktemp("appliance"),
                          [SERENA / "Serena_Williams_0002.jpg", None], frames_each=20)
    appliance.add_admin()
    appliance.start()
    yield appliance
    status = appliance.stop()
    assert status == 0, f"the daemon exited {status} on SIGTERM:\n{appliance.log_tail()}"


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    page = context.new_page()
    request.node.e2e_page = page
    yield page
    context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, show where the browser was and what the page said."""
    report = yield
    page = getattr(item, "e2e_page", None)
    if report.when == "call" and report.failed and page is not None:
        try:
            text = page.locator("body").inner_text(timeout=2000)[:3000]
            report.sections.append(("browser page at failure", f"{page.url}\n\n{text}"))
        except Exception as exc:  # the page may be gone; the failure itself matters more
            report.sections.append(("browser page at failure", f"unreadable: {exc}"))
    return report
