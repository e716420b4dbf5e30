"""The trace waterfall in the job view and the cost on the dashboard, in Chromium over a real
`backlane dev` and a real Redis. Every test also fails on any browser console error (see conftest)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from ui_pages import create_job, open_job, sign_in, wait_finished
from ui_replay import replay
from ui_servers import Processes

from compute.types.demo_agent import agent_text

pytestmark = pytest.mark.browser

#: section 1 fails all 3 tries of attempt 1 (transient): attempt 2 replays research and outline
AGENT = {"topic": "tide mills", "sections": 2, "tokens_per_step": 6, "delay_ms": 40,
         "fail": {"step": "section#1", "times": 3, "class": "transient"}}


def test_the_waterfall_follows_a_restarted_agent_and_marks_replayed_steps(page: Page, dev_server: Processes) -> None:
    job = create_job(dev_server, "demo.agent", AGENT)
    open_job(page, dev_server, job["id"])
    waterfall = page.get_by_test_id("waterfall")
    expect(waterfall).to_be_visible(timeout=20_000)  # while the job runs: it updates live
    wait_finished(page)
    expect(page.get_by_test_id("status")).to_have_text("completed")
    assert (page.get_by_test_id("output").text_content() or "") == agent_text("tide mills", 2, 6)
    assert replay(dev_server.base_url, job["id"]).output == agent_text("tide mills", 2, 6)
    replayed = waterfall.locator('[data-testid="span"][data-status="replayed"]')
    expect(replayed).to_have_count(2)
    names = sorted(re.sub(r"replayed.*", "", text) for text in replayed.all_text_contents())
    assert names == ["step outline", "step research"]
    expect(replayed.first).to_contain_text("replayed from attempt 1")
    expect(replayed.first.get_by_test_id("span-cost")).to_have_text("free (replayed)")
    expect(waterfall.locator('[data-kind="attempt"]')).to_have_count(2)
    # four model calls: research and outline in attempt 1, the two sections in attempt 2
    calls = waterfall.locator('[data-testid="span"][data-kind="llm"]')
    expect(calls).to_have_count(4)
    expect(calls.first.get_by_test_id("span-tokens")).to_contain_text(" in")
    expect(calls.first.get_by_test_id("span-cost")).to_have_text(re.compile(r"^\$\d"))
    expect(page.get_by_test_id("trace-total")).to_have_text(re.compile(r"\$\d"))

    sign_in(page, dev_server, "/jobs")
    row = page.locator(f'[data-testid="job-row"][data-job-id="{job["id"]}"]')
    expect(row.get_by_test_id("job-cost")).to_have_text(re.compile(r"^\$\d"))
    expect(page.get_by_test_id("cost-by-type")).to_contain_text("demo.agent: $")
