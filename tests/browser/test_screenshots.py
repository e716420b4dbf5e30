"""The views at desktop and phone widths: nothing overflows sideways, controls have names, and the pictures
for the README. Set BACKLANE_SCREENSHOTS=1 to write them to docs/screenshots/ (else to a temporary dir)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from ui_pages import DESKTOP, PHONE, create_job, open_job, sign_in, wait_output_longer_than, wait_status
from ui_servers import ROOT, Processes

pytestmark = pytest.mark.browser

STORY = {"topic": "how tide mills work", "steps": 3, "tokens_per_step": 60, "delay_ms": 60}
QUICK = {"topic": "tide mills", "steps": 1, "tokens_per_step": 3, "delay_ms": 0}


@pytest.fixture
def shots_dir(tmp_path: Path) -> Path:
    if os.environ.get("BACKLANE_SCREENSHOTS") == "1":
        target = ROOT / "docs" / "screenshots"
        target.mkdir(parents=True, exist_ok=True)
        return target
    return tmp_path


def _fits(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"the page is {width} px wide at {page.viewport_size}"  # type: ignore[index]


def _named_controls(page: Page) -> None:
    """Every button, link and form field has a name a screen reader can say."""
    unnamed = page.evaluate("""() => [...document.querySelectorAll('button, a, input, select, textarea')]
        .filter(el => el.offsetParent !== null)
        .filter(el => !(el.getAttribute('aria-label') || el.textContent.trim() || el.labels?.length))
        .map(el => el.outerHTML.slice(0, 80))""")
    assert unnamed == []


def test_views_at_desktop_and_phone_widths(
    new_page: Callable[..., Page], dev_server: Processes, shots_dir: Path
) -> None:
    for job_input in (QUICK, {**QUICK, "fail": {"class": "input", "times": 1, "message": "topic too vague"}}):
        create_job(dev_server, "demo.story", job_input)
    done = create_job(dev_server, "demo.story", QUICK)
    review = create_job(dev_server, "demo.review", {"action": "Email the weekly summary", "delay_ms": 1})
    wait_status(dev_server, done["id"], "completed")
    wait_status(dev_server, review["id"], "needs_review")
    live = create_job(dev_server, "demo.story", STORY)

    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page = new_page(viewport)
        open_job(page, dev_server, live["id"])
        wait_output_longer_than(page, 450, timeout_s=30)
        expect(page.get_by_test_id("status")).to_have_text("running")
        # in the second of three steps: a fraction strictly between 0 and 1 while it runs
        page.wait_for_function("""() => {
            const bar = document.querySelector('[data-testid=progress]');
            const status = document.querySelector('[data-testid=status]').textContent;
            return status === 'running' && !bar.hidden && bar.hasAttribute('value')
                && bar.value > 0 && bar.value < 1; }""")
        expect(page.get_by_test_id("step")).to_have_text(re.compile(r"^Step: (outline|write)$"))
        _fits(page)
        _named_controls(page)
        page.screenshot(path=shots_dir / f"job-{name}.png", full_page=name == "phone")

        sign_in(page, dev_server, "/jobs")
        expect(page.get_by_test_id("job-row")).to_have_count(5)
        expect(page.get_by_test_id("count-all")).to_have_attribute("data-count", "5")
        # every count's label on one line, so the tiles of a row line up
        heights = page.evaluate("""() => [...document.querySelectorAll('.count-label')]
            .filter(el => el.offsetParent !== null).map(el => el.getBoundingClientRect().height)""")
        assert len(heights) == 8 and max(heights) - min(heights) < 1, heights
        done_row = page.locator(f"[data-testid=job-row][data-job-id='{done['id']}']")
        if name == "phone":  # a finished job's card leaves out what it does not have
            expect(done_row.locator("td[data-label=Heartbeat]")).to_be_hidden()
            expect(done_row.locator("td[data-label=Error]")).to_be_hidden()
        else:  # the table keeps its columns
            expect(done_row.locator("td[data-label=Heartbeat]")).to_have_text("—")
        _fits(page)
        _named_controls(page)
        page.screenshot(path=shots_dir / f"dashboard-{name}.png", full_page=name == "phone")

        sign_in(page, dev_server, "/new")
        expect(page.get_by_label("Input (JSON)")).to_have_value(re.compile(r'"topic"'))
        _fits(page)
        _named_controls(page)
        if name == "desktop":
            page.screenshot(path=shots_dir / "new-job-desktop.png")
