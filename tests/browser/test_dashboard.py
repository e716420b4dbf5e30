"""The operator dashboard and sign-in in Chromium over a real `backlane dev`: counts, filters, highlights,
paging, opening a row; the key taken from the address and kept out of it."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, Route, expect
from ui_console import Console
from ui_pages import create_job, sign_in, wait_status
from ui_servers import KEY, Processes, client

pytestmark = pytest.mark.browser

QUICK = {"topic": "tide mills", "steps": 1, "tokens_per_step": 2, "delay_ms": 0}


def _scene(server: Processes) -> dict[str, list[str]]:
    """Jobs in several states: two completed, one failed, one canceled, one waiting for review."""
    ids: dict[str, list[str]] = {"completed": [], "failed": [], "canceled": [], "needs_review": []}
    for _ in range(2):
        ids["completed"].append(create_job(server, "demo.story", QUICK)["id"])
    ids["failed"].append(create_job(server, "demo.story", {**QUICK, "fail": {"class": "policy", "times": 1}})["id"])
    slow = create_job(server, "demo.story", {**QUICK, "tokens_per_step": 500, "delay_ms": 100})["id"]
    with client(server.base_url) as http:
        assert http.post(f"/v1/jobs/{slow}/cancel").status_code in (200, 202)
    ids["canceled"].append(slow)
    ids["needs_review"].append(create_job(server, "demo.review", {"action": "Email the summary", "delay_ms": 1})["id"])
    for status, job_ids in ids.items():
        for job_id in job_ids:
            wait_status(server, job_id, status)
    return ids


def test_counts_filters_highlights_and_opening_a_row(page: Page, dev_server: Processes) -> None:
    ids = _scene(dev_server)
    api_calls: list[str] = []
    page.on("request", lambda r: api_calls.append(r.url) if "/v1/" in r.url else None)
    sign_in(page, dev_server, "/jobs")
    rows = page.get_by_test_id("job-row")
    expect(rows).to_have_count(5)
    expected_counts = {"all": "5", "queued": "0", "running": "0", "needs_review": "1", "completed": "2",
                       "failed": "1", "canceled": "1", "expired": "0"}
    for status, count in expected_counts.items():
        expect(page.get_by_test_id(f"count-{status}")).to_have_attribute("data-count", count)
        expect(page.get_by_test_id(f"count-{status}").locator(".count-n")).to_have_text(count)

    # the counts come from the server in one request, not from paging through the list per status
    assert any(url.endswith("/v1/jobs/counts") for url in api_calls)
    assert not [url for url in api_calls if "status=" in url], api_calls

    # newest first, as the API lists them
    with client(dev_server.base_url) as http:
        listed = [j["id"] for j in http.get("/v1/jobs").json()["jobs"]]
    assert [rows.nth(i).get_attribute("data-job-id") for i in range(5)] == listed

    # what needs a person stands out: a failure, a review
    failed_row = page.locator(f"[data-testid=job-row][data-job-id='{ids['failed'][0]}']")
    expect(failed_row).to_have_class(re.compile(r"\battention\b"))
    expect(failed_row).to_contain_text("policy")
    review_row = page.locator(f"[data-testid=job-row][data-job-id='{ids['needs_review'][0]}']")
    expect(review_row).to_have_class(re.compile(r"\battention\b"))
    expect(review_row.locator(".badge")).to_have_text("needs_review")
    done_row = page.locator(f"[data-testid=job-row][data-job-id='{ids['completed'][0]}']")
    expect(done_row).not_to_have_class(re.compile(r"\battention\b"))

    # a finished job's columns: attempt, age, run time, no heartbeat (it is history), no error
    cells = done_row.get_by_role("cell")
    expect(cells.nth(4)).to_have_text("1 / 3")
    expect(cells.nth(5)).to_have_text(re.compile(r"^(just now|\d+\.\d s ago)$"))
    expect(cells.nth(6)).to_have_text(re.compile(r"^\d+\.\d s$"))
    expect(cells.nth(7)).to_have_text("—")
    expect(cells.nth(8)).to_have_text("—")

    page.get_by_label("Status", exact=True).select_option("failed")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", ids["failed"][0])
    assert "status=failed" in page.url  # a reload keeps the filter
    page.reload()
    expect(rows).to_have_count(1)
    expect(page.get_by_label("Status", exact=True)).to_have_value("failed")

    page.get_by_test_id("count-completed").click()
    expect(rows).to_have_count(2)
    for i in range(2):
        expect(rows.nth(i)).to_have_attribute("data-status", "completed")

    page.get_by_label("Status", exact=True).select_option("")
    page.get_by_label("Type", exact=True).select_option("openai.batch")
    expect(rows).to_have_count(0)
    expect(page.get_by_test_id("empty")).to_have_text("No jobs match these filters.")
    page.get_by_label("Type", exact=True).select_option("demo.story")
    expect(rows).to_have_count(4)
    expect(page.get_by_test_id("count-all")).to_have_attribute("data-count", "4")  # counts follow the type
    expect(page.get_by_test_id("count-needs_review")).to_have_attribute("data-count", "0")

    rows.filter(has=page.locator(f"a[data-job-id='{ids['canceled'][0]}']")).get_by_role("cell").nth(2).click()
    expect(page.get_by_test_id("job-id")).to_have_text(ids["canceled"][0])
    expect(page.get_by_test_id("status")).to_have_text("canceled")


def test_paging_and_live_refresh(page: Page, dev_server: Processes) -> None:
    first = [create_job(dev_server, "demo.story", QUICK)["id"] for _ in range(21)]
    sign_in(page, dev_server, "/jobs")
    rows = page.get_by_test_id("job-row")
    expect(rows).to_have_count(20)
    expect(rows.first).to_have_attribute("data-job-id", first[-1])
    expect(page.get_by_test_id("page-newer")).to_be_disabled()
    page.get_by_test_id("page-older").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", first[0])
    expect(page.get_by_test_id("page-older")).to_be_disabled()
    page.get_by_test_id("page-newer").click()
    expect(rows).to_have_count(20)

    # a job created elsewhere appears without a reload
    newest = create_job(dev_server, "demo.story", QUICK)["id"]
    expect(rows.first).to_have_attribute("data-job-id", newest, timeout=10_000)
    expect(page.get_by_test_id("count-all")).to_have_attribute("data-count", "22")


def test_sign_in_link_stores_the_key_and_leaves_the_address(
    page: Page, dev_server: Processes, new_page: Callable[..., Page], console: Console
) -> None:
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    sign_in(page, dev_server, "/jobs")
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    assert "key=" not in page.url and KEY not in page.url
    expect(page.get_by_test_id("count-all")).to_have_attribute("data-count", "0")  # the API was called
    assert any("/v1/jobs" in url for url in urls)
    # the fragment never reaches a server, so the key is in no request's URL (it travels as a header)
    assert [url for url in urls if KEY in url] == []
    assert page.evaluate("localStorage.getItem('backlane.apiKey')") == KEY
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()

    # a wrong key is refused (the 401 is logged by the browser on purpose), a right one signs in
    console.allow(rf"^console: Failed to load resource: the server responded with a status of 401 \(Unauthorized\) "
                  rf"\({re.escape(dev_server.base_url)}/v1/job-types\)$")
    other = new_page()
    other.on("request", lambda r: urls.append(r.url))
    other.goto(f"{dev_server.base_url}/ui/#/jobs")
    other.get_by_label("API key").fill("not-a-key")
    other.get_by_role("button", name="Sign in").click()
    expect(other.get_by_role("alert")).to_contain_text("not accepted")
    other.get_by_label("API key").fill(KEY)
    other.get_by_role("button", name="Sign in").click()
    expect(other.get_by_role("heading", name="Jobs")).to_be_visible()
    assert [url for url in urls if KEY in url or "not-a-key" in url] == []


def test_keyboard_only_start_a_job_and_open_it_from_the_dashboard(page: Page, dev_server: Processes) -> None:
    sign_in(page, dev_server, "/new")
    # the form is ready once the job types have arrived: until then there is no type to start, and
    # their arrival fills the input with the chosen type's example, replacing anything typed before
    expect(page.get_by_label("Job type")).to_have_value("demo.story")
    page.get_by_label("Input (JSON)").focus()
    page.keyboard.press("Control+a")
    page.keyboard.type('{"topic": "keyboards", "steps": 1, "tokens_per_step": 3, "delay_ms": 0}')
    page.keyboard.press("Control+Enter")  # starts the job
    expect(page.get_by_test_id("status")).to_have_text("completed")
    job_id = page.get_by_test_id("job-id").text_content()

    page.get_by_role("link", name="Jobs", exact=True).focus()
    page.keyboard.press("Enter")
    first_link = page.get_by_test_id("job-row").first.get_by_role("link")
    expect(first_link).to_have_attribute("data-job-id", job_id or "")
    # Tab order reaches the row's link after the page controls
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.jobId") == job_id:
            break
    else:
        raise AssertionError("Tab never reached the job's link")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("job-id")).to_have_text(job_id or "")


def test_the_start_form_waits_for_the_job_types_and_keeps_what_was_typed(page: Page, dev_server: Processes) -> None:
    """Bug: on the start form, text typed before ``GET /v1/job-types`` answered was replaced by the
    chosen type's example, and Ctrl+Enter before then sent a job with no type. Cause: the form was
    usable before it had any type, and the types' arrival filled the input. Fix: Start is disabled
    until the types have loaded, and early input becomes the input of the type then chosen."""
    arrived: list[Route] = []
    page.route("**/v1/job-types", lambda route: arrived.append(route))  # held until released below
    sign_in(page, dev_server, "/new")
    start = page.get_by_role("button", name="Start job")
    expect(start).to_be_disabled()
    typed = '{"topic": "early", "steps": 1, "tokens_per_step": 2, "delay_ms": 0}'
    page.get_by_label("Input (JSON)").fill(typed)
    page.get_by_label("Input (JSON)").press("Control+Enter")  # nothing to start with yet
    expect(page.get_by_test_id("form-error")).to_be_hidden()
    while not arrived:  # Playwright hands the held request over as the page's events are processed
        page.wait_for_timeout(50)
    arrived[0].continue_()
    expect(page.get_by_label("Job type")).to_have_value("demo.story")
    expect(start).to_be_enabled()
    expect(page.get_by_label("Input (JSON)")).to_have_value(typed)
    start.click()
    expect(page.get_by_test_id("status")).to_have_text("completed")
    with client(dev_server.base_url) as http:
        job = http.get(f"/v1/jobs/{page.get_by_test_id('job-id').text_content()}").json()
    assert (job["type"], job["input"]["topic"]) == ("demo.story", "early")
