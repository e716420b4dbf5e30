"""Review in Chromium over a real `backlane dev`: a demo.review job stops in needs_review with its proposed
result; a person approves it (completed) or rejects it (canceled), with a note that is recorded."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from ui_pages import create_job, get_job, open_job, wait_finished
from ui_servers import Processes

pytestmark = pytest.mark.browser

PROPOSAL = {"action": "Send the weekly summary to the team", "target": "team@example.com", "delay_ms": 5}


@pytest.mark.parametrize(("button", "final", "state"), [("Approve", "completed", "approved"),
                                                       ("Reject", "canceled", "rejected")])
def test_review_with_a_note(page: Page, dev_server: Processes, button: str, final: str, state: str) -> None:
    job = create_job(dev_server, "demo.review", PROPOSAL)
    open_job(page, dev_server, job["id"])
    expect(page.get_by_test_id("status")).to_have_text("needs_review", timeout=20_000)
    expect(page.get_by_test_id("review")).to_be_visible()
    expect(page.get_by_test_id("proposed-result")).not_to_have_text("null")
    expect(page.get_by_test_id("cancel")).to_be_visible()

    page.get_by_label("Note").fill(f"{state} in the browser test")
    page.get_by_role("button", name=button, exact=True).click()
    wait_finished(page)
    expect(page.get_by_test_id("status")).to_have_text(final)
    expect(page.get_by_test_id("review")).to_have_count(0)
    expect(page.get_by_test_id("review-outcome")).to_contain_text(f"{state} in the browser test")
    if final == "completed":  # the apply step ran once, and the approved draft is still on screen
        expect(page.get_by_test_id("restart-notice")).to_contain_text("Approved — applying it, attempt 2")
        expect(page.get_by_test_id("output")).to_contain_text("Proposed: Send the weekly summary")
        expect(page.get_by_test_id("applied")).to_contain_text("recorded on the job")
    review = get_job(dev_server, job["id"])["review"]
    assert review["state"] == state
    assert review["note"] == f"{state} in the browser test"
