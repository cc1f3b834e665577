"""Real Chromium (Debian's ``chromium`` package, installed by scripts/test.sh) through Playwright.

Playwright drives the system browser by its path: nothing is downloaded at test time. A missing
browser is a failure with the command that installs it, never a skip. The fixtures live for one
module: while Playwright's sync API runs it keeps an event loop marked as running in the main
thread, which would break every asyncio test collected after it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

# The flags Chromium needs as root in a container with no network beyond loopback.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path is not None:
            return path
    raise RuntimeError(
        "Chromium is not installed: run the README's test command (bash scripts/test.sh), "
        "which installs Debian's chromium package"
    )


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(
        executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True
    )
    try:
        yield chromium
    finally:
        chromium.close()
