"""Benchmark: a rollback through the API until the pipeline's upload page, open in Chromium, hides its upload control.

Per backend: a fresh database, the control plane served in this process and the pipeline's page on another port
(tests/browser/flag_page.py: CORS for the page's origin, QA's rollout of enable-reference-images running at 100%),
one headless Chromium (Debian's) on the page signed in as one user. Then TRIES times: roll QA back through the API
(`POST .../rollout/rollback`), wait for the control to be hidden, restart the rollout, wait for it to be shown again.
The page stamps `Date.now()` when the control changes (`data-changed-at`); the figure is that stamp minus the wall
clock just before the rollback request was sent, so it covers the API call, the commit, the stream notice, the
provider's bulk re-fetch and the page's re-render. Prints p50 and max, and the same for showing it again.

    .venv/bin/python -m bench.browser_rollback [--tries 20] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import logging
import statistics

from playwright.sync_api import Page, expect, sync_playwright

from bench.rollout_race import database
from controlplane.db import create_db_engine
from controlplane.migrate import upgrade_to_head
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.browser.flag_page import served_flag_page

#: How long one change may take before the try counts as lost (the goal is under a second).
TIMEOUT_MS = 10_000


def changed_after_ms(page: Page, sent: float) -> float:
    """Milliseconds from ``sent`` (Unix seconds) to the page's last change of the control."""
    return float(page.locator("body").get_attribute("data-changed-at") or "nan") - sent * 1000


def run_backend(backend: str, tries: int, page: Page) -> tuple[list[float], list[float]]:
    """Hide and show times (ms) for ``tries`` rollbacks and restarts on one backend."""
    hidden: list[float] = []
    shown: list[float] = []
    with database(backend) as url:
        engine = create_db_engine(url)
        upgrade_to_head(engine)
        engine.dispose()
        with served_flag_page(url) as served:
            control = page.locator("#upload")
            page.goto(served.url("user-1"))
            expect(control).to_be_visible(timeout=TIMEOUT_MS)
            for _ in range(tries):
                sent = served.rollback()
                expect(control).to_be_hidden(timeout=TIMEOUT_MS)
                hidden.append(changed_after_ms(page, sent))
                sent = served.restart()
                expect(control).to_be_visible(timeout=TIMEOUT_MS)
                shown.append(changed_after_ms(page, sent))
            page.goto("about:blank")
    return hidden, shown


def report(backend: str, name: str, values: list[float]) -> None:
    """One line of figures."""
    print(
        f"{backend:<10} {name:<22} n={len(values):<3} p50 {statistics.median(values):7.1f} ms   "
        f"max {max(values):7.1f} ms   min {min(values):7.1f} ms"
    )


def main() -> None:
    """Parse arguments, run each backend, print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call would bury the figures
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for backend in args.backends.split(","):
                context = browser.new_context()
                hidden, shown = run_backend(backend, args.tries, context.new_page())
                context.close()
                report(backend, "rollback -> hidden", hidden)
                report(backend, "restart -> shown", shown)
        finally:
            browser.close()


if __name__ == "__main__":
    main()
