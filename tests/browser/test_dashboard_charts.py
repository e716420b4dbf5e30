"""The dashboard's charts, drawn by the page as inline SVG from GET /v1/stats: jobs completed and failed
per minute, the queue per type, run-time p50/p95 per type; they follow the jobs as the page refreshes."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from ui_pages import create_job, sign_in, wait_status
from ui_servers import Processes, client

pytestmark = pytest.mark.browser

QUICK = {"topic": "tide mills", "steps": 1, "tokens_per_step": 2, "delay_ms": 0}


def _bar_sum(page: Page, attribute: str) -> int:
    bars = page.get_by_test_id("minute-bar")
    return sum(int(bars.nth(i).get_attribute(attribute) or 0) for i in range(bars.count()))


def test_charts_show_jobs_per_minute_the_queue_and_run_times(page: Page, dev_server: Processes) -> None:
    done = [create_job(dev_server, "demo.story", QUICK)["id"] for _ in range(3)]
    failed = create_job(dev_server, "demo.story", {**QUICK, "fail": {"class": "policy", "times": 1}})["id"]
    for job_id in done:
        wait_status(dev_server, job_id, "completed")
    wait_status(dev_server, failed, "failed")

    sign_in(page, dev_server, "/jobs")
    chart = page.get_by_test_id("chart-per-minute")
    expect(chart).to_have_attribute("aria-label", "Jobs per minute over the last 30 minutes: 3 completed, 1 failed")
    expect(page.get_by_test_id("minute-bar")).to_have_count(30)
    assert (_bar_sum(page, "data-completed"), _bar_sum(page, "data-failed")) == (3, 1)
    # the newest minute is drawn last, and it is where the jobs ended (or the one before, at a boundary)
    bars = page.get_by_test_id("minute-bar")
    recent = [int(bars.nth(i).get_attribute("data-completed") or 0) for i in (28, 29)]
    assert sum(recent) == 3
    assert chart.locator("rect.bar.completed").count() == 30  # one bar per minute, drawn by the page

    run_time = page.get_by_test_id("chart-run-time-row").and_(page.locator("[data-type='demo.story']"))
    expect(run_time).to_have_count(1)
    p50, p95 = float(run_time.get_attribute("data-p50") or "nan"), float(run_time.get_attribute("data-p95") or "nan")
    assert 0 < p50 <= p95
    expect(run_time.locator("rect.bar")).to_have_count(2)  # p50 and p95, drawn
    expect(run_time).to_contain_text("p95")
    expect(page.get_by_test_id("chart-queue-empty")).to_be_visible()

    # a job that runs shows in the queue chart at the next refresh, and its end in the minutes
    slow = create_job(dev_server, "demo.story", {**QUICK, "tokens_per_step": 500, "delay_ms": 50})["id"]
    wait_status(dev_server, slow, "running")
    queue = page.get_by_test_id("chart-queue-row").and_(page.locator("[data-type='demo.story']"))
    expect(queue).to_have_attribute("data-running", "1", timeout=10_000)
    expect(queue.locator("rect.bar.running")).to_have_count(1)
    with client(dev_server.base_url) as http:
        assert http.post(f"/v1/jobs/{slow}/cancel").status_code in (200, 202)
    wait_status(dev_server, slow, "canceled")
    expect(page.get_by_test_id("chart-queue-empty")).to_be_visible(timeout=10_000)
    # a canceled job is neither completed nor failed
    assert (_bar_sum(page, "data-completed"), _bar_sum(page, "data-failed")) == (3, 1)
