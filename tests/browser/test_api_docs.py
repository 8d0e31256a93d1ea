"""The API documentation page renders from the control plane alone, with the internet out of reach."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import Screenshot

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# The page is the same on either database: one backend is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_docs_page_lists_the_operations_and_offers_authorize_without_the_internet(
    live_server: str, page: Page, screenshot: Screenshot
) -> None:
    blocked: list[str] = []
    served: list[str] = []

    def only_local(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOCAL_HOSTS:
            served.append(url)
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(f"{live_server}/schema/swagger")

    operations = page.locator(".opblock")
    expect(operations.first).to_be_visible(timeout=15_000)
    expect(page.locator(".opblock-summary-path", has_text="/ofrep/v1/evaluate/flags/{key}")).to_have_count(1)
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/events")).to_have_count(1)
    expect(page.get_by_role("button", name="Authorize")).to_be_visible()
    assert operations.count() >= 30
    screenshot(page, "swagger")

    # The lock on a protected operation opens the token dialog with both ways to send a token.
    page.get_by_role("button", name="Authorize").click()
    dialog = page.locator(".modal-ux")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("bearerToken")
    expect(dialog).to_contain_text("X-API-Key")
    screenshot(page, "authorize")

    assert blocked == [], f"the page reached for the internet: {blocked}"
    assert any(url.endswith("/schema/assets/swagger-ui-bundle.js") for url in served)


def test_docs_root_serves_the_same_page(live_server: str, page: Page) -> None:
    page.route(
        "**/*",
        lambda route: route.continue_() if urlsplit(route.request.url).hostname in LOCAL_HOSTS else route.abort(),
    )
    page.goto(f"{live_server}/schema")
    expect(page.locator(".opblock").first).to_be_visible(timeout=15_000)
