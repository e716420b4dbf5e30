"""What a person sees when the machinery fails under a job: a worker killed mid-job (the supervisor restarts
it as attempt 2), a worker frozen with SIGSTOP (its heartbeat goes stale), and an API process that goes away
and comes back (the stream reconnects and resumes)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, Request, expect
from ui_console import Console
from ui_pages import (
    create_job,
    get_job,
    open_job,
    screen_output,
    sign_in,
    wait_finished,
    wait_output_longer_than,
)
from ui_replay import replay
from ui_servers import LONG_LEASE_S, TOKEN_TTL_S, Processes

pytestmark = pytest.mark.browser

STORY = {"topic": "tide mills", "steps": 3, "tokens_per_step": 40, "delay_ms": 40}
STALE = re.compile(r"\bstale\b")


def _allow_outage(console: Console, servers: Processes, job_id: str, dead_token: bool = False) -> None:
    """While the API is down the browser logs the job's stream being cut and its record, trace and
    stream requests refused (or reset, when one was in flight as the API stopped, or cut short after its
    headers: the API writes a response's headers and its body separately); with ``dead_token`` also
    the stream's retry refused (401) once the token expired."""
    job_url = re.escape(f"{servers.base_url}/v1/jobs/{job_id}")
    stream = r"/events\?token=[^ )]+"
    cut = ("ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE|ERR_INCOMPLETE_CHUNKED_ENCODING"
           "|ERR_CONTENT_LENGTH_MISMATCH")
    console.allow(rf"^console: Failed to load resource: net::({cut}) \({job_url}({stream}|/trace)?\)$")
    if dead_token:
        console.allow(rf"^console: Failed to load resource: the server responded with a status of 401 \(Unauthorized\)"
                      rf" \({job_url}{stream}\)$")


def test_a_killed_worker_shows_the_restart_and_the_job_completes(page: Page, split_servers: Processes) -> None:
    job = create_job(split_servers, "demo.story", STORY)
    open_job(page, split_servers, job["id"])
    wait_output_longer_than(page, 20)
    expect(page.get_by_test_id("attempt")).to_have_text("1 of 3")

    split_servers.kill("worker-1")
    split_servers.start("worker-2", "worker")

    expect(page.get_by_test_id("restart-notice")).to_contain_text("Worker lost — restarted, attempt 2",
                                                                  timeout=20_000)
    expect(page.get_by_test_id("attempt")).to_have_text("2 of 3")
    wait_finished(page)
    expect(page.get_by_test_id("status")).to_have_text("completed")
    expected = replay(split_servers.base_url, job["id"])
    assert expected.newest_attempt == 2
    assert any(s.get("reason") == "worker_lost" for s in expected.statuses)
    assert screen_output(page) == expected.output


def test_an_api_outage_shows_reconnecting_and_resumes_exactly(
    page: Page, split_servers: Processes, console: Console
) -> None:
    """The API goes away for longer than the events token lives: the browser's own retry is refused (401),
    so the page fetches the job again for a fresh links.events and resumes after its last cursor."""
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/events" in r.url else None)
    job = create_job(split_servers, "demo.story", STORY)
    _allow_outage(console, split_servers, job["id"], dead_token=True)
    open_job(page, split_servers, job["id"])
    wait_output_longer_than(page, 20)

    split_servers.kill("api")
    expect(page.get_by_test_id("connection")).to_have_text("Reconnecting…")
    page.wait_for_timeout((TOKEN_TTL_S + 1) * 1000)  # the token in the open stream's URL is now dead
    split_servers.start("api", "api")
    split_servers.wait_healthy()

    wait_finished(page)
    expect(page.get_by_test_id("connection")).to_be_hidden()
    expect(page.get_by_test_id("status")).to_have_text("completed")
    assert screen_output(page) == replay(split_servers.base_url, job["id"]).output
    assert any("after=" in url for url in streams), "the page never resumed with a fresh token"


def test_a_short_api_outage_is_bridged_by_the_browser_s_own_reconnect(
    page: Page, long_lease_servers: Processes, console: Console
) -> None:
    """The API goes away and comes back while the events token is still valid: EventSource reconnects by
    itself to the same URL with Last-Event-ID, and the page shows every event once."""
    servers = long_lease_servers
    job = create_job(servers, "demo.story", STORY)
    events_url = f"{servers.base_url}/v1/jobs/{job['id']}/events?token="
    _allow_outage(console, servers, job["id"])
    streams: list[Request] = []
    page.on("request", lambda r: streams.append(r) if r.url.startswith(events_url) else None)
    open_job(page, servers, job["id"])
    wait_output_longer_than(page, 20)

    servers.kill("api")
    expect(page.get_by_test_id("connection")).to_have_text("Reconnecting…")
    servers.start("api", "api")
    servers.wait_healthy()
    expect(page.get_by_test_id("connection")).to_be_hidden()

    wait_finished(page)
    expect(page.get_by_test_id("status")).to_have_text("completed")
    assert screen_output(page) == replay(servers.base_url, job["id"]).output
    # the browser's own retries: the first URL again (no fresh token, no ?after=), with Last-Event-ID
    assert len(streams) >= 2 and {r.url for r in streams} == {streams[0].url}, [r.url for r in streams]
    assert "last-event-id" not in streams[0].all_headers()
    assert streams[-1].all_headers().get("last-event-id"), streams[-1].all_headers()


def test_a_paused_worker_shows_a_stale_heartbeat_until_it_resumes(
    new_page: Callable[..., Page], long_lease_servers: Processes
) -> None:
    """SIGSTOP freezes the worker: no heartbeats, but its lease (LONG_LEASE_S) has not run out, so the job
    stays running on attempt 1. Once half the lease is gone the dashboard row and the job view say the
    heartbeat is stale; after SIGCONT the heartbeats come back and so does the normal look."""
    servers = long_lease_servers
    job = create_job(servers, "demo.story", {**STORY, "tokens_per_step": 100, "delay_ms": 50})
    view = new_page()
    open_job(view, servers, job["id"])
    wait_output_longer_than(view, 5)
    heartbeat = view.get_by_test_id("heartbeat")
    dashboard = new_page()
    sign_in(dashboard, servers, "/jobs")
    row = dashboard.locator(f"[data-testid=job-row][data-job-id='{job['id']}']")
    expect(row).to_have_attribute("data-status", "running")
    expect(row).not_to_have_class(STALE)
    expect(heartbeat).not_to_contain_text("stale")
    cells = row.get_by_role("cell")  # a running job's columns: attempt, age, run time, heartbeat
    expect(cells.nth(4)).to_have_text("1 / 3")
    expect(cells.nth(5)).to_have_text(re.compile(r"^(just now|\d+\.\d s ago)$"))
    expect(cells.nth(6)).to_have_text(re.compile(r"^\d+\.\d s$"))
    expect(cells.nth(7)).to_have_text(re.compile(r"^(just now|\d+\.\d s ago)$"))

    servers.pause("worker-1")
    try:
        # stale after LONG_LEASE_S / 2 of silence, plus a dashboard refresh; restarted only at LONG_LEASE_S
        patience = (LONG_LEASE_S - 2) * 1000
        expect(row).to_have_class(STALE, timeout=patience)
        expect(row).to_have_class(re.compile(r"\battention\b"))
        expect(row.get_by_role("cell").nth(7)).to_contain_text("stale")
        expect(heartbeat).to_contain_text("(stale: the worker may be gone)", timeout=patience)
        expect(heartbeat).to_have_class(STALE)
        record = get_job(servers, job["id"])
        assert (record["status"], record["attempt"]) == ("running", 1), "the supervisor restarted it meanwhile"
        assert record["lease_expires_at"] is not None
    finally:
        servers.resume("worker-1")
    expect(row).not_to_have_class(STALE, timeout=10_000)
    expect(heartbeat).not_to_contain_text("stale", timeout=10_000)
    assert get_job(servers, job["id"])["attempt"] == 1
