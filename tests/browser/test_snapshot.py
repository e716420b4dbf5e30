"""A long job opened (and reloaded) in Chromium far behind: the page starts from one snapshot event instead
of every event, and ends showing exactly what a page that got every event shows."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from ui_pages import create_job, get_job, open_job, screen_output, wait_finished, wait_output_longer_than, wait_status
from ui_replay import replay
from ui_servers import Processes, client

pytestmark = pytest.mark.browser

#: 2,400 tokens, a few seconds each attempt: several pages of events
LONG_STORY = {"topic": "tide mills", "steps": 3, "tokens_per_step": 800, "delay_ms": 2}
#: a page whose EventSource asks for every event: what the screen looks like without snapshots
EVERY_EVENT = """(() => {
  const Native = window.EventSource;
  window.EventSource = function (url, init) {
    const address = new URL(url, location.href);
    address.searchParams.set("compact", "false");
    return new Native(address, init);
  };
  window.EventSource.prototype = Native.prototype;
  Object.assign(window.EventSource, {CONNECTING: 0, OPEN: 1, CLOSED: 2});
})()"""
SHOWN = ("status", "attempt", "restart-notice", "output-note", "step", "progress-message")


def shown(page: Page) -> dict[str, str]:
    """What the view shows, beside the output."""
    return {test_id: page.get_by_test_id(test_id).text_content() or "" for test_id in SHOWN}


def snapshots_sent(servers: Processes) -> float:
    with client(servers.base_url) as http:
        found = re.search(r"^backlane_sse_snapshots_total (\S+)$", http.get("/metrics").text, re.M)
    assert found, "the API reports no snapshots counter"
    return float(found.group(1))


def wait_events(servers: Processes, job_id: str, more_than: int, attempt: int = 1) -> None:
    deadline = time.monotonic() + 30
    while True:
        job = get_job(servers, job_id)
        if job["attempt"] == attempt and job["status"] == "running" and job["last_seq"] > more_than:
            return
        assert time.monotonic() < deadline, f"job {job_id} never passed {more_than} events in attempt {attempt}: {job}"
        time.sleep(0.05)


def test_a_long_job_reloaded_after_a_restart_starts_from_a_snapshot(
    new_page: Callable[..., Page], split_servers: Processes
) -> None:
    servers = split_servers
    job = create_job(servers, "demo.story", LONG_STORY)
    wait_events(servers, job["id"], 900)
    servers.kill("worker-1")  # attempt 1 is lost; attempt 2 re-emits what its checkpoint keeps
    servers.start("worker-2", "worker")
    wait_events(servers, job["id"], 1000, attempt=2)

    before = snapshots_sent(servers)
    compact, full = new_page(), new_page()
    full.add_init_script(EVERY_EVENT)
    open_job(compact, servers, job["id"])
    open_job(full, servers, job["id"])
    wait_output_longer_than(compact, 100)
    compact.reload()  # a reload far behind again: a second snapshot
    expect(compact.get_by_test_id("job-id")).to_have_text(job["id"])
    wait_finished(compact)
    wait_finished(full)

    expected = replay(servers.base_url, job["id"])
    assert expected.newest_attempt == 2 and len(expected.events) > 2000
    assert screen_output(compact) == screen_output(full) == expected.output
    assert shown(compact) == shown(full)
    expect(compact.get_by_test_id("restart-notice")).to_contain_text("Worker lost — restarted, attempt 2")
    expect(compact.get_by_test_id("attempt")).to_have_text("2 of 3")
    expect(compact.get_by_test_id("status")).to_have_text("completed")
    expect(compact.get_by_test_id("progress")).to_have_js_property("value", 1)
    assert snapshots_sent(servers) >= before + 2  # the open and the reload; the full page got none


def test_an_approved_draft_stays_on_screen_after_a_snapshot(new_page: Callable[..., Page],
                                                             dev_server: Processes) -> None:
    """A snapshot taken after an approval holds the approved draft apart (``draft``): the view shows it
    before the apply step's output, with the same notice and note as a view that saw every event."""
    words = " ".join(["w"] * 250)  # the longest input: 502 output events in the draft, with "Proposed:" and "on"
    job = create_job(dev_server, "demo.review", {"action": words, "target": words, "delay_ms": 0})
    wait_status(dev_server, job["id"], "needs_review")
    with client(dev_server.base_url) as http:
        assert http.post(f"/v1/jobs/{job['id']}/approve", json={"note": "go"}).status_code == 200
    wait_status(dev_server, job["id"], "completed")

    before = snapshots_sent(dev_server)
    compact, full = new_page(), new_page()
    full.add_init_script(EVERY_EVENT)
    for page in (compact, full):
        open_job(page, dev_server, job["id"])
        wait_finished(page)
    events = replay(dev_server.base_url, job["id"]).events
    draft = "".join(e["text"] for e in events if e["type"] == "output" and e["attempt"] == 1)
    assert draft.startswith("Proposed: w w") and len(events) > 500
    assert screen_output(compact) == screen_output(full) == draft
    assert shown(compact) == shown(full)
    expect(compact.get_by_test_id("restart-notice")).to_have_text("Approved — applying it, attempt 2")
    expect(compact.get_by_test_id("output-note")).to_contain_text("The approved draft (attempt 1)")
    assert snapshots_sent(dev_server) == before + 1
