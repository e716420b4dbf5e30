"""The dashboard's search (a job id prefix, a metadata key=value), the error message in the list, the
copy button of a job's full id, and retry/cancel of many ticked jobs at once, each job's outcome shown."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect
from ui_console import Console
from ui_pages import sign_in, wait_status
from ui_servers import Processes, client

pytestmark = pytest.mark.browser

QUICK = {"topic": "tide mills", "steps": 1, "tokens_per_step": 2, "delay_ms": 0}
SLOW = {**QUICK, "tokens_per_step": 500, "delay_ms": 100}
FAILING = {**QUICK, "fail": {"class": "policy", "times": 1}}


def _create(server: Processes, job_input: dict[str, Any], metadata: dict[str, Any] | None = None) -> str:
    with client(server.base_url) as http:
        response = http.post("/v1/jobs", json={"type": "demo.story", "input": job_input, "metadata": metadata})
        assert response.status_code == 201, response.text
        job_id: str = response.json()["id"]
        return job_id


def _row(page: Page, job_id: str) -> Any:
    return page.locator(f"[data-testid=job-row][data-job-id='{job_id}']")


def test_search_by_metadata_and_id_prefix_error_text_and_copying_an_id(
    page: Page, dev_server: Processes,
) -> None:
    acme = [_create(dev_server, QUICK, {"customer": "acme"}) for _ in range(2)]
    globex = _create(dev_server, QUICK, {"customer": "globex"})
    failed = _create(dev_server, FAILING, {"customer": "initech"})
    for job_id in [*acme, globex]:
        wait_status(dev_server, job_id, "completed")
    message = wait_status(dev_server, failed, "failed")["error"]["message"]
    assert message

    sign_in(page, dev_server, "/jobs")
    expect(page.get_by_test_id("job-row")).to_have_count(4)
    # the list says what went wrong, not only the class of error
    error = _row(page, failed).get_by_test_id("job-error")
    expect(error).to_contain_text("policy")
    expect(error).to_contain_text(message[:40])

    search = page.get_by_label("Search")
    search.fill("customer=acme")
    search.press("Enter")
    expect(page.get_by_test_id("job-row")).to_have_count(2)
    assert sorted(r.get_attribute("data-job-id") or "" for r in page.get_by_test_id("job-row").all()) == sorted(acme)
    assert "q=customer%3Dacme" in page.url
    page.reload()  # the search is in the address
    expect(page.get_by_test_id("job-row")).to_have_count(2)
    expect(page.get_by_label("Search")).to_have_value("customer=acme")

    search = page.get_by_label("Search")
    search.fill(globex[:10].upper())
    search.press("Enter")
    expect(page.get_by_test_id("job-row")).to_have_count(1)
    expect(page.get_by_test_id("job-row")).to_have_attribute("data-job-id", globex)

    search.fill("customer=nobody")
    search.press("Enter")
    expect(page.get_by_test_id("job-row")).to_have_count(0)
    expect(page.get_by_test_id("empty")).to_have_text("No jobs match these filters.")

    search.fill("not an id!")
    search.press("Enter")
    expect(page.get_by_test_id("search-error")).to_contain_text("start of a job id")
    search.fill("customer=")
    search.press("Enter")
    expect(page.get_by_test_id("search-error")).to_contain_text("key=value")

    search.fill("")
    search.press("Enter")
    expect(page.get_by_test_id("job-row")).to_have_count(4)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    _row(page, failed).get_by_test_id("copy-id").click()
    expect(_row(page, failed).get_by_test_id("copy-id")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == failed
    assert page.url.endswith("#/jobs")  # copying does not open the job


def test_bulk_retry_and_cancel_show_each_jobs_outcome(
    page: Page, dev_server: Processes, console: Console,
) -> None:
    console.allow("409")  # the jobs the server refuses to retry, on purpose
    failed = [_create(dev_server, FAILING) for _ in range(2)]
    done = _create(dev_server, QUICK)
    for job_id in failed:
        wait_status(dev_server, job_id, "failed")
    wait_status(dev_server, done, "completed")

    sign_in(page, dev_server, "/jobs")
    expect(page.get_by_test_id("job-row")).to_have_count(3)
    expect(page.get_by_test_id("bulk-retry")).to_be_disabled()
    page.get_by_test_id("select-all").check()
    expect(page.get_by_test_id("selected-count")).to_have_text("3 selected")
    page.get_by_test_id("bulk-retry").click()
    expect(page.get_by_test_id("bulk-summary")).to_have_text("Retry: 2 of 3 done, 1 refused (see why below)")
    results = page.get_by_test_id("bulk-result")
    for job_id in failed:
        line = results.and_(page.locator(f"[data-job-id='{job_id}']"))
        expect(line).to_have_attribute("data-outcome", "ok")
        expect(line).to_contain_text("retried as")
    refused = results.and_(page.locator(f"[data-job-id='{done}']"))
    expect(refused).to_have_attribute("data-outcome", "refused")
    expect(refused).to_contain_text("only failed, canceled or expired jobs can be retried")
    # the new jobs appear (newest first) and nothing stays ticked
    expect(page.get_by_test_id("job-row")).to_have_count(5)
    expect(page.get_by_test_id("selected-count")).to_contain_text("Tick jobs")
    with client(dev_server.base_url) as http:
        retried = {j["retry_of"] for j in http.get("/v1/jobs").json()["jobs"] if j["retry_of"]}
    assert retried == set(failed)

    # cancel asks first, then cancels only the ticked rows
    slow = [_create(dev_server, SLOW) for _ in range(2)]
    expect(page.get_by_test_id("job-row")).to_have_count(7)
    _row(page, slow[0]).get_by_test_id("select-job").check()
    _row(page, slow[1]).get_by_test_id("select-job").check()
    expect(page.get_by_test_id("select-all")).to_have_js_property("indeterminate", True)
    page.get_by_test_id("bulk-cancel").click()
    page.get_by_test_id("bulk-keep").click()
    assert all(wait_status(dev_server, j, "queued", "running")["status"] != "canceled" for j in slow)
    page.get_by_test_id("bulk-cancel").click()
    page.get_by_test_id("bulk-confirm").click()
    expect(page.get_by_test_id("bulk-summary")).to_have_text("Cancel: 2 of 2 done")
    for job_id in slow:
        wait_status(dev_server, job_id, "canceled")
