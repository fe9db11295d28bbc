"""Screenshots of the main admin pages for docs/: ``python -m tests.e2e.screenshots``.

The same set-up as the end-to-end tests (the real daemon on mock pins, a replay camera,
headless Debian chromium): two people are enrolled through the page, the replay brings
them and a stranger to the door, and each page is saved as a 1280x800 PNG once its
pictures have loaded, and the log and the people again as a phone shows them (390x844,
``phone-*.png``). ``make screenshots`` runs it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.e2e.appliance import ADMIN, DATA, PASSWORD, PEOPLE, PROJECT, Appliance
from tests.e2e.browser import VIEWPORT, browser_missing, launch

SERENA = PEOPLE / "Serena_Williams"
COLIN = PEOPLE / "Colin_Powell"
STRANGER = DATA / "strangers" / "AJ_Cook_0001.jpg"
# Who walks up to the door, over and over: two staff, then a stranger, an empty hall between.
REPLAY = [SERENA / "Serena_Williams_0002.jpg", None, COLIN / "Colin_Powell_0002.jpg", None,
          STRANGER, None]
PAGES = ("dashboard", "people", "person", "log", "event", "settings", "accounts")
PHONE = {"width": 390, "height": 844}
PHONE_PAGES = ("log", "people")

# Every picture in view has decoded (an MJPEG live view counts once its first frame has).
IMAGES_SHOWN = """() => Array.from(document.images).every(img =>
    img.naturalWidth > 0 || img.getBoundingClientRect().top > window.innerHeight)"""


def settle(page) -> None:
    """Wait for the page's pictures; a picture that never comes is visible in the PNG."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.wait_for_load_state("load")
    try:
        page.wait_for_function(IMAGES_SHOWN, timeout=15_000)
    except PlaywrightTimeout:
        print(f"warning: some pictures on {page.url} did not load", file=sys.stderr)


def shoot(page, out: Path, name: str) -> None:
    settle(page)
    path = out / f"{name}.png"
    page.screenshot(path=str(path))
    print(f"wrote {path.relative_to(PROJECT) if path.is_relative_to(PROJECT) else path}")


def take_screenshots(out: Path, scratch: Path) -> None:
    from playwright.sync_api import sync_playwright

    from tests.e2e import pages

    out.mkdir(parents=True, exist_ok=True)
    with Appliance(scratch, REPLAY, frames_each=20) as appliance, \
            sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(15_000)
        pages.sign_in(page, appliance.url, ADMIN, PASSWORD)

        pages.add_person(page, "Serena Williams")
        pages.upload(page, SERENA / "Serena_Williams_0001.jpg", SERENA / "Serena_Williams_0003.jpg")
        pages.add_person(page, "Colin Powell")
        pages.upload(page, COLIN / "Colin_Powell_0001.jpg", COLIN / "Colin_Powell_0003.jpg",
                     DATA / "page.png")
        shoot(page, out, "person")

        # Wait until the door has let both in, so the log and the dashboard have something.
        pages.wait_for_event(page, "granted", "Serena Williams", timeout=40)
        pages.wait_for_event(page, "granted", "Colin Powell", timeout=40)
        pages.wait_for_event(page, "unknown", None, timeout=40)
        shoot(page, out, "log")
        page.locator("table#events tr[data-kind=granted] a.event-link").first.click()
        shoot(page, out, "event")

        page.goto(appliance.url + "/")
        shoot(page, out, "dashboard")
        pages.open_people(page)
        shoot(page, out, "people")
        page.locator("a#nav-settings").click()
        shoot(page, out, "settings")
        appliance.cli("admin", "add", "Front desk", "--role", "viewer", "--password-stdin",
                      stdin=PASSWORD + "\n")
        page.locator("a#nav-accounts").click()
        shoot(page, out, "accounts")

        page.set_viewport_size(PHONE)
        for name, path in zip(PHONE_PAGES, ("/log", "/people"), strict=True):
            page.goto(appliance.url + path)
            shoot(page, out, f"phone-{name}")
        browser.close()
        status = appliance.stop()
        if status != 0:
            raise SystemExit(f"the daemon exited {status}:\n{appliance.log_tail()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.screenshots",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT / "docs" / "screenshots",
                        help="folder for the PNGs (default: docs/screenshots)")
    args = parser.parse_args(argv)
    missing = browser_missing()
    if missing:
        print(f"cannot take screenshots: {missing}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="facegate-screenshots-") as scratch:
        take_screenshots(args.out.resolve(), Path(scratch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
