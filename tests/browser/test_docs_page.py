"""``GET /docs`` in Chromium: the vendored Redoc renders the generated document, offline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import server_fixture
from playwright.sync_api import Page, expect
from ui_servers import Processes

pytestmark = pytest.mark.browser


@pytest.fixture
@server_fixture
def api_server(redis_url: str, tmp_path: Path) -> Iterator[Processes]:
    server = Processes(redis_url, {}, tmp_path)
    server.start("api", "api")
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def test_the_reference_page_shows_every_operation(api_server: Processes, page: Page) -> None:
    doc = httpx.get(f"{api_server.base_url}/openapi.json", timeout=10).json()
    summaries = [op["summary"] for item in doc["paths"].values() for op in item.values()]
    outside: list[str] = []
    # nothing may come from anywhere but this server: the viewer is vendored, not fetched from a CDN
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(api_server.base_url)
               else (outside.append(route.request.url), route.abort()))
    page.goto(f"{api_server.base_url}/docs")
    expect(page.get_by_role("heading", name="Backlane").first).to_be_visible()
    for summary in summaries:
        expect(page.get_by_text(summary, exact=True).first).to_be_attached()
    expect(page.locator("h2", has_text="Create a job").first).to_be_visible()
    assert outside == []
