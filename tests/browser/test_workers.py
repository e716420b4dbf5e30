"""The workers page and the "no worker serves this type" notice in Chromium, over separate `backlane api`,
`supervisor` and `worker` processes."""

from __future__ import annotations

import json

import pytest
import redis as sync_redis
from playwright.sync_api import Page, expect
from ui_pages import create_job, open_job, sign_in, wait_status
from ui_servers import Processes

from shared.jobtypes import JobTypePolicy

pytestmark = pytest.mark.browser

SLOW = {"topic": "workers page", "steps": 1, "tokens_per_step": 400, "delay_ms": 50}  # 20 s


def test_the_workers_page_lists_the_worker_and_links_its_running_job(page: Page, split_servers: Processes) -> None:
    worker = split_servers.procs["worker-1"]
    sign_in(page, split_servers, "/workers")
    expect(page.get_by_role("heading", name="Workers")).to_be_visible()
    expect(page.locator("#nav a[data-route=workers]")).to_have_attribute("aria-current", "page")
    rows = page.get_by_test_id("worker-row")
    expect(rows).to_have_count(1)
    row = rows.first
    expect(row).to_contain_text(f"pid {worker.pid}")
    expect(row).to_contain_text("demo.story")
    expect(row.get_by_test_id("running-count")).to_have_text("0 / 4")

    job = create_job(split_servers, "demo.story", SLOW)
    assert "warnings" not in job
    wait_status(split_servers, job["id"], "running")
    link = row.get_by_test_id("running-job")
    expect(link).to_have_attribute("data-job-id", job["id"], timeout=10_000)  # the page refreshes itself
    expect(row.get_by_test_id("running-count")).to_have_text("1 / 4")
    link.click()
    expect(page).to_have_url(f"{split_servers.base_url}/ui/#/jobs/{job['id']}")
    expect(page.get_by_test_id("job-id")).to_have_text(job["id"])
    expect(page.get_by_test_id("unserved-notice")).to_be_hidden()

    # a killed worker leaves the page once its beats expire (lease 1.5 s)
    split_servers.kill("worker-1")
    sign_in(page, split_servers, "/workers")
    expect(page.get_by_test_id("no-workers")).to_be_visible(timeout=10_000)
    expect(page.get_by_test_id("worker-row")).to_have_count(0)


def test_a_queued_job_of_a_type_no_worker_serves_says_so(page: Page, split_servers: Processes) -> None:
    # a type some worker registered once, served by none of the live ones
    policy = JobTypePolicy(name="reports.monthly").registered(3).to_json()
    with sync_redis.Redis.from_url(split_servers.redis_url) as r:
        r.hset("bl:types", "reports.monthly", json.dumps(policy))
    job = create_job(split_servers, "reports.monthly", {})
    assert job["warnings"] == [
        "no live worker serves job type 'reports.monthly': the job waits queued until one that does starts"]
    open_job(page, split_servers, job["id"])
    notice = page.get_by_test_id("unserved-notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("No worker serves this type (reports.monthly)")
    notice.get_by_role("link", name="See the workers").click()
    expect(page.get_by_test_id("unserved-types")).to_contain_text("reports.monthly")
    expect(page.get_by_test_id("worker-row")).to_have_count(1)
