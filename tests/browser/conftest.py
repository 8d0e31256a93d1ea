"""Chromium for browser tests: Debian's own build (``apt-get install chromium``), driven by Playwright for Python.

Playwright's own browser download does not work offline, so the tests launch the system Chromium through
``executable_path``. Without it a test skips locally and fails under CI=true. Each test's screenshots go to
``artifacts/screenshots/`` (kept by CI as the run's artifacts; not in the repository).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.conftest import REPO_ROOT, missing_service

#: Debian's Chromium; CONTROLPLANE_TEST_CHROMIUM names another build.
CHROMIUM = os.environ.get("CONTROLPLANE_TEST_CHROMIUM", "/usr/bin/chromium")

#: Where screenshots are kept.
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"

# Headless, and quiet on a closed network: without the background-networking switches Chromium keeps trying to
# reach Google's hosts. No sandbox: CI runs as root, where Chromium's sandbox refuses to start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


#: ``screenshot(page, name)``: the path of the PNG saved.
Screenshot = Callable[[Page, str], Path]


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Playwright]:
    """Playwright's driver, for one test module at a time: its sync API keeps an asyncio loop running in the main
    thread while it is open, which would break every later test that runs a loop of its own (asyncio.run)."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def chromium(playwright_driver: Playwright) -> Iterator[Browser]:
    """One headless Chromium per test module (each test gets its own context: cookies and storage apart)."""
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        missing_service(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    browser = playwright_driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A page in a fresh browser context; what the page logs to its console is printed when a test fails."""
    context = chromium.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    console: list[str] = []
    tab.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    tab.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    yield tab
    if console:
        print("browser console:\n" + "\n".join(console))
    context.close()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Iterator[Screenshot]:
    """``screenshot(page, name)`` saves ``artifacts/screenshots/<test>-<name>.png`` and returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    test = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")

    def take(tab: Page, name: str) -> Path:
        path = SCREENSHOTS / f"{test}-{name}.png"
        tab.screenshot(path=str(path), full_page=True)
        return path

    yield take
