"""The headless browser: Debian's ``chromium`` driven by Python ``playwright``.

The system browser, never one downloaded by ``playwright install`` (unpinned, large, and
impossible offline): ``scripts/ensure-system-packages`` installs ``chromium`` with apt-get.
``FACEGATE_CHROMIUM`` names another executable.
"""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("FACEGATE_CHROMIUM", "/usr/bin/chromium"))

# Headless and quiet: no GPU, no network of its own (updates, sync, QUIC), no first-run UI.
# playwright adds --headless and a fresh --user-data-dir for every launch.
LAUNCH_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

VIEWPORT = {"width": 1280, "height": 800}


def in_ci() -> bool:
    """True on CI (``CI=true``), where a missing browser is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require(missing: str | None, what: str) -> None:
    """Skip the test when a system part (``what``: "PostgreSQL") cannot run here, and fail
    it on CI, where ``make test`` has installed everything: a missing part there is a bug."""
    if missing is None:
        return
    import pytest

    if in_ci():
        pytest.fail(f"CI=true and {what} cannot run: {missing}", pytrace=False)
    pytest.skip(f"no {what}: {missing}")


def browser_missing() -> str | None:
    """Why the browser cannot run here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[dev]')"
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return (f"{CHROMIUM} is missing: run scripts/ensure-system-packages "
                "(apt-get install chromium); never `playwright install`")
    return None


def launch(playwright):
    """Chromium, headless, from the system package."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=LAUNCH_ARGS, chromium_sandbox=False)
