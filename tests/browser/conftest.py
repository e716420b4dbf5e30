"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, Backlane servers as subprocesses
against the test's private redis-server, and a page that fails its test on any console error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from ui_console import Console
from ui_pages import DESKTOP
from ui_servers import LONG_LEASE_S, TOKEN_TTL_S, Processes

CHROMIUM = "/usr/bin/chromium"
# never a browser download: the system Chromium, with everything that would reach the internet off
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]

# timings that let a killed worker's job restart within a test's patience, and events tokens that
# expire while the API is down (the page must fetch a fresh one instead of retrying a dead one)
SPLIT_ENV = {
    "BACKLANE_HEARTBEAT_S": "0.2",
    "BACKLANE_LEASE_S": "1.5",
    "BACKLANE_SUPERVISOR_INTERVAL_S": "0.1",
    "BACKLANE_EVENTS_TOKEN_TTL_S": str(TOKEN_TTL_S),
}

LONG_LEASE_ENV = {
    "BACKLANE_HEARTBEAT_S": "0.2",
    "BACKLANE_LEASE_S": str(LONG_LEASE_S),
    "BACKLANE_SUPERVISOR_INTERVAL_S": "0.1",
    "BACKLANE_DRAIN_GRACE_S": "0.5",
}

#: names of the fixtures that run Backlane servers for a test (see server_fixture)
SERVER_FIXTURES: set[str] = set()
F = TypeVar("F", bound=Callable[..., Any])


def server_fixture(function: F) -> F:
    """Marks a fixture as running servers a page talks to: ``new_page`` sets it up first, so that it stops
    only after the pages are closed. Every fixture that starts Backlane processes must carry it."""
    SERVER_FIXTURES.add(function.__name__)
    return function


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (or BACKLANE_SKIP_BROWSER=1)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def new_page(request: pytest.FixtureRequest, browser: Browser, console: Console) -> Iterator[Callable[..., Page]]:
    """new_page(viewport=DESKTOP) → a page in a fresh context (its own localStorage)."""
    # Pages must be closed, and the console checked, before the servers they talk to stop: an open page
    # keeps calling the API (the dashboard's refresh, the job view's record poll and stream), and a
    # request refused by a stopped server is a console error. pytest tears fixtures down in reverse order
    # of setup, which otherwise follows the order a test happens to name them in; setting the test's
    # servers up here, before any page, makes this teardown run before theirs for every test.
    for name in request.fixturenames:
        if name in SERVER_FIXTURES:
            request.getfixturevalue(name)
    contexts = []

    def make(viewport: dict[str, int] = DESKTOP) -> Page:
        context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("console", console.on_console)
        page.on("pageerror", console.on_page_error)
        return page

    yield make
    for context in contexts:
        context.close()
    assert console.unexpected() == [], "the browser reported errors"


@pytest.fixture
def page(new_page: Callable[..., Page]) -> Page:
    return new_page()


@pytest.fixture
@server_fixture
def dev_server(redis_url: str, tmp_path: Path) -> Iterator[Processes]:
    """``backlane dev``: API, worker and supervisor in one process."""
    # a short drain: a test that ends mid-job need not wait for it
    env = {"BACKLANE_DATA_DIR": str(tmp_path / "data"), "BACKLANE_DRAIN_GRACE_S": "0.5"}
    server = Processes(redis_url, env, tmp_path)
    server.start("dev", "dev")
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def _split(redis_url: str, tmp_path: Path, env: dict[str, str]) -> Iterator[Processes]:
    servers = Processes(redis_url, env, tmp_path)
    servers.start("api", "api")
    servers.start("supervisor", "supervisor")
    servers.start("worker-1", "worker")
    try:
        servers.wait_healthy()
        yield servers
    finally:
        servers.stop()


@pytest.fixture
@server_fixture
def split_servers(redis_url: str, tmp_path: Path) -> Iterator[Processes]:
    """``backlane api``, ``backlane supervisor`` and ``backlane worker`` (as "worker-1") as separate
    processes with short leases, so a test can SIGKILL the worker and start another."""
    yield from _split(redis_url, tmp_path, SPLIT_ENV)


@pytest.fixture
@server_fixture
def long_lease_servers(redis_url: str, tmp_path: Path) -> Iterator[Processes]:
    """The same processes with a lease of LONG_LEASE_S: a worker paused for a few seconds looks stale
    to the UI (half its lease gone) while the supervisor still leaves its job alone."""
    yield from _split(redis_url, tmp_path, LONG_LEASE_ENV)
