"""The job view in Chromium over a real `backlane dev` and a real Redis: start, follow, reload, cancel,
fail and retry. Every test also fails on any browser console error (see conftest)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from ui_pages import (
    create_job,
    get_job,
    open_job,
    screen_output,
    start_from_form,
    wait_finished,
    wait_output_longer_than,
)
from ui_replay import replay
from ui_servers import Processes, client

pytestmark = pytest.mark.browser

# about 6 s of streaming: 3 steps of 40 tokens, 50 ms each
STORY = {"topic": "tide mills", "steps": 3, "tokens_per_step": 40, "delay_ms": 50}
#: long enough (240 tokens, about 14 s) that three reloads land mid-stream on a loaded machine: the
#: 657 characters of STORY (about 6 s) could end before the third, and the output never grew again
RELOADED_STORY = {**STORY, "tokens_per_step": 80, "delay_ms": 60}
SHORT = {"topic": "tide mills", "steps": 2, "tokens_per_step": 8, "delay_ms": 5}


def test_start_from_form_and_follow_to_the_result(page: Page, dev_server: Processes) -> None:
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if "/events" in r.url else None)
    # every EventSource the page makes, so the test can see whether it was closed
    page.add_init_script("""(() => {
      const Native = window.EventSource; window.__sources = [];
      window.EventSource = function (...args) { const s = new Native(...args); window.__sources.push(s); return s; };
      window.EventSource.prototype = Native.prototype;
      Object.assign(window.EventSource, {CONNECTING: 0, OPEN: 1, CLOSED: 2});
    })()""")
    job_id = start_from_form(page, dev_server, SHORT)
    wait_finished(page)
    expect(page.get_by_test_id("status")).to_have_text("completed")
    expected = replay(dev_server.base_url, job_id)
    assert expected.output, "the demo job produced no output"
    assert screen_output(page) == expected.output
    expect(page.get_by_test_id("attempt")).to_have_text("1 of 3")
    expect(page.get_by_test_id("progress")).to_have_js_property("value", 1)
    expect(page.get_by_test_id("step")).to_have_text("Step: done")
    expect(page.get_by_test_id("result")).to_be_visible()
    expect(page.get_by_test_id("cancel")).to_have_count(0)
    assert get_job(dev_server, job_id)["status"] == "completed"
    # no reconnect loop after the terminal event: the page closed its EventSource (a closed one never
    # reconnects, whatever the browser's retry delay), and makes no new one (waiting is the point here)
    assert page.evaluate("window.__sources.map(s => s.readyState)") == [2]
    page.wait_for_timeout(3000)
    assert page.evaluate("window.__sources.length") == 1
    assert len(streams) == 1, f"the page opened the stream again after the job finished: {streams}"


def test_three_reloads_mid_stream_lose_and_repeat_nothing(
    page: Page, new_page: Callable[..., Page], dev_server: Processes
) -> None:
    job_id = start_from_form(page, dev_server, RELOADED_STORY)
    second = new_page()  # a second window on the same job, left alone while the first reloads
    open_job(second, dev_server, job_id)
    seen = 0
    # mid-stream: the step and the clocks of a running job (the fraction: see test_screenshots)
    wait_output_longer_than(page, 0)
    expect(page.get_by_test_id("step")).to_have_text(re.compile(r"^Step: \S"))
    expect(page.get_by_test_id("elapsed")).to_have_text(re.compile(r"^\d+\.\d s$"))
    expect(page.get_by_test_id("heartbeat")).to_have_text(re.compile(r"^(just now|\d+\.\d s ago)$"))
    for _ in range(3):
        before = wait_output_longer_than(page, seen + 20)
        expect(page.get_by_test_id("status")).to_have_text("running")  # still mid-stream
        page.reload()
        # the replay rebuilds exactly what was on screen, then continues
        after = wait_output_longer_than(page, len(before) - 1)
        assert after.startswith(before)
        seen = len(after)
    assert get_job(dev_server, job_id)["status"] == "running", "the reloads were not all mid-stream"
    wait_finished(page)
    expect(page.get_by_test_id("status")).to_have_text("completed")
    expected = replay(dev_server.base_url, job_id).output
    assert screen_output(page) == expected
    wait_finished(second)
    assert screen_output(second) == expected


def test_cancel_a_running_job(page: Page, dev_server: Processes) -> None:
    job_id = start_from_form(page, dev_server, {**STORY, "delay_ms": 200})
    wait_output_longer_than(page, 0)
    page.get_by_role("button", name="Cancel job").click()
    wait_finished(page)
    expect(page.get_by_test_id("status")).to_have_text("canceled")
    expect(page.get_by_test_id("cancel")).to_have_count(0)
    expect(page.get_by_test_id("retry")).to_be_visible()
    assert get_job(dev_server, job_id)["status"] == "canceled"
    assert screen_output(page) == replay(dev_server.base_url, job_id).output


def test_a_failed_job_says_why_and_retries_as_a_new_job(page: Page, dev_server: Processes) -> None:
    job = create_job(dev_server, "demo.story", {**SHORT, "fail": {"class": "input", "times": 1,
                                                                 "message": "the topic is too vague"}})
    open_job(page, dev_server, job["id"])
    wait_finished(page)
    expect(page.get_by_test_id("status")).to_have_text("failed")
    error = page.get_by_test_id("error")
    expect(error).to_have_attribute("data-error-class", "input")
    expect(error).to_contain_text("The input was not acceptable.")
    expect(page.get_by_test_id("error-message")).to_contain_text("the topic is too vague")
    expect(page.get_by_test_id("error-retryable")).to_contain_text("unlikely to help")
    page.get_by_role("button", name="Retry as a new job").click()
    page.wait_for_url(lambda url: job["id"] not in url)
    new_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_test_id("job-id")).to_have_text(new_id)
    assert get_job(dev_server, new_id)["retry_of"] == job["id"]
    expect(page.get_by_role("link", name=job["id"][:8] + "…")).to_be_visible()


def test_a_transient_failure_on_its_last_attempt_says_running_it_again_may_help(
    page: Page, dev_server: Processes
) -> None:
    with client(dev_server.base_url) as http:
        response = http.post("/v1/jobs", json={"type": "demo.story", "max_attempts": 1,
                                               "input": {**SHORT, "fail": {"class": "transient", "times": 1}}})
    job_id = response.json()["id"]
    open_job(page, dev_server, job_id)
    wait_finished(page)
    expect(page.get_by_test_id("status")).to_have_text("failed")
    expect(page.get_by_test_id("error")).to_have_attribute("data-error-class", "transient")
    expect(page.get_by_test_id("error-retryable")).to_have_text("Running it again may help.")
    expect(page.get_by_test_id("retry")).to_be_visible()


def test_a_transient_failure_is_retried_and_shown_as_attempt_2(page: Page, dev_server: Processes) -> None:
    job = create_job(dev_server, "demo.story", {**SHORT, "fail": {"class": "transient", "times": 1}})
    open_job(page, dev_server, job["id"])
    wait_finished(page)
    expect(page.get_by_test_id("status")).to_have_text("completed")
    expect(page.get_by_test_id("restart-notice")).to_contain_text("retried, attempt 2")
    expect(page.get_by_test_id("attempt")).to_have_text("2 of 3")
    expected = replay(dev_server.base_url, job["id"])
    assert expected.newest_attempt == 2
    assert screen_output(page) == expected.output
