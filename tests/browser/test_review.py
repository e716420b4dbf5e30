"""Review in Chromium over a real `backlane dev`: a demo.review job stops in needs_review with its proposed
result; a person approves it (completed) or rejects it (canceled), with a note that is recorded."""

from __future__ import annotations

import pytest
from playwright.sync_api import Error, Page, Route, expect
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


def test_a_note_being_written_survives_the_record_s_refresh(page: Page, dev_server: Processes) -> None:
    """Bug: the review panel was rebuilt when the record changed under it (its result or its attempts
    arriving after the status event), and the rebuilt panel had an empty note: a note typed in between
    was sent as no note ("Review: rejected by ui"). Fix: a rebuilt panel keeps what was typed.
    Here the page first gets an older record (no attempts yet), the note is typed, then the next poll
    brings the real record and the panel is rebuilt."""
    job = create_job(dev_server, "demo.review", PROPOSAL)
    for _ in range(200):
        if get_job(dev_server, job["id"])["status"] == "needs_review":
            break
        page.wait_for_timeout(100)
    state = {"older": True, "real_served": 0}

    def record(route: Route) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        try:
            response = route.fetch()
            body = response.json()
        except Error:  # the page is closing: this poll no longer matters
            return
        if state["older"]:
            body["attempts"] = []
        else:
            state["real_served"] += 1
        route.fulfill(response=response, json=body)

    page.route(f"**/v1/jobs/{job['id']}", record)
    open_job(page, dev_server, job["id"])
    expect(page.get_by_test_id("review")).to_be_visible(timeout=20_000)
    page.get_by_label("Note").fill("kept while the record refreshes")
    state["older"] = False
    for _ in range(100):  # the page polls the record every 2 s
        if state["real_served"]:
            break
        page.wait_for_timeout(100)
    assert state["real_served"], "the page never fetched the record again"
    expect(page.get_by_test_id("review-note")).to_have_value("kept while the record refreshes")
    page.get_by_role("button", name="Reject", exact=True).click()
    expect(page.get_by_test_id("review-outcome")).to_contain_text("kept while the record refreshes")
