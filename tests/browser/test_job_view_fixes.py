"""Job view fixes in Chromium: the webhook delivery log, an indeterminate bar until the first fraction,
no "attempt failed" banner on a completed job, Retry demoted after a hopeless error, a signed-out page
that says why, and output on a phone that stops following once the reader scrolls up."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import server_fixture
from playwright.sync_api import Page, expect
from ui_console import Console
from ui_pages import PHONE, create_job, open_job, sign_in, wait_finished, wait_status
from ui_servers import Processes, client

pytestmark = pytest.mark.browser

QUICK = {"topic": "tide mills", "steps": 1, "tokens_per_step": 2, "delay_ms": 0}


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


@pytest.fixture
@server_fixture
def webhook_server(redis_url: str, tmp_path: Path) -> Iterator[Processes]:
    """``backlane dev`` that signs webhooks and may send them to this machine (the test's receiver)."""
    env = {"BACKLANE_DATA_DIR": str(tmp_path / "data"), "BACKLANE_DRAIN_GRACE_S": "0.5",
           "BACKLANE_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"k" * 32).decode(),
           "BACKLANE_WEBHOOK_ALLOW_PRIVATE": "1"}
    server = Processes(redis_url, env, tmp_path)
    server.start("dev", "dev")
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def test_the_webhook_delivery_log_is_shown(page: Page, webhook_server: Processes, receiver: str) -> None:
    with client(webhook_server.base_url) as http:
        response = http.post("/v1/jobs", json={"type": "demo.story", "input": QUICK, "webhook_url": receiver})
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
    wait_status(webhook_server, job_id, "completed")
    open_job(page, webhook_server, job_id)
    panel = page.get_by_test_id("deliveries")
    # queued, running, completed: each delivered once; the page polls until none is pending
    expect(panel.locator("summary")).to_have_text("Webhook deliveries (3)", timeout=15_000)
    expect(page.get_by_test_id("delivery-state")).to_have_text("Every status change delivered")
    panel.locator("summary").click()
    rows = page.get_by_test_id("delivery")
    expect(rows).to_have_count(3)
    for i in range(3):
        expect(rows.nth(i)).to_have_attribute("data-ok", "true")
        expect(rows.nth(i)).to_contain_text("HTTP 204")
    expect(rows.first).to_contain_text("completed")  # newest first
    expect(panel).to_contain_text(receiver)


def test_a_job_without_a_webhook_has_no_delivery_panel(page: Page, dev_server: Processes) -> None:
    job_id = create_job(dev_server, "demo.story", QUICK)["id"]
    open_job(page, dev_server, job_id)
    wait_finished(page)
    expect(page.get_by_test_id("status")).to_have_text("completed")
    expect(page.get_by_test_id("deliveries")).to_have_count(0)


def test_the_bar_is_indeterminate_until_the_first_fraction(page: Page, dev_server: Processes) -> None:
    job_id = create_job(dev_server, "demo.story", {"topic": "tides", "steps": 3, "tokens_per_step": 40,
                                                   "delay_ms": 50})["id"]
    open_job(page, dev_server, job_id)
    bar = page.get_by_test_id("progress")
    expect(page.get_by_test_id("step")).to_have_text("Step: research")  # its progress says fraction 0
    expect(bar).to_be_visible()
    assert bar.evaluate("el => el.matches(':indeterminate')")
    expect(page.get_by_test_id("step")).to_have_text("Step: outline", timeout=20_000)
    assert not bar.evaluate("el => el.matches(':indeterminate')")
    assert abs(float(bar.evaluate("el => el.value")) - 1 / 3) < 0.01


def test_a_completed_job_drops_the_attempt_failed_banner(page: Page, dev_server: Processes) -> None:
    job_id = create_job(dev_server, "demo.story",
                        {**QUICK, "delay_ms": 20, "fail": {"class": "transient", "times": 1}})["id"]
    open_job(page, dev_server, job_id)
    notice = page.get_by_test_id("restart-notice")
    # the retry waits a back-off of about a second: the banner says why meanwhile
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("transient")
    wait_finished(page)
    expect(page.get_by_test_id("status")).to_have_text("completed")
    expect(notice).to_be_hidden()
    page.reload()  # the replay of both attempts ends the same way
    wait_finished(page)
    expect(notice).to_be_hidden()
    expect(page.get_by_test_id("attempts")).to_contain_text("transient")


def test_retry_is_not_the_suggested_step_after_a_hopeless_error(page: Page, dev_server: Processes) -> None:
    hopeless = create_job(dev_server, "demo.story", {**QUICK, "fail": {"class": "policy", "times": 1}})["id"]
    wait_status(dev_server, hopeless, "failed")
    open_job(page, dev_server, hopeless)
    expect(page.get_by_test_id("error-retryable")).to_contain_text("unlikely to help")
    retry = page.get_by_test_id("retry")
    expect(retry).to_have_attribute("data-emphasis", "secondary")
    assert "primary" not in (retry.get_attribute("class") or "")

    canceled = create_job(dev_server, "demo.story", {**QUICK, "tokens_per_step": 500, "delay_ms": 100})["id"]
    with client(dev_server.base_url) as http:
        assert http.post(f"/v1/jobs/{canceled}/cancel").status_code in (200, 202)
    wait_status(dev_server, canceled, "canceled")
    open_job(page, dev_server, canceled)
    expect(page.get_by_test_id("retry")).to_have_attribute("data-emphasis", "primary")
    expect(page.get_by_test_id("retry")).to_have_class("primary")


def test_a_key_no_longer_accepted_signs_out_with_the_reason(
    page: Page, dev_server: Processes, console: Console,
) -> None:
    console.allow(r"status of 401 \(Unauthorized\)")
    sign_in(page, dev_server, "/jobs")
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    page.evaluate("localStorage.setItem('backlane.apiKey', 'a-revoked-key')")  # as if revoked server-side
    page.get_by_test_id("refresh").click()
    reason = page.get_by_test_id("sign-in-reason")
    expect(reason).to_contain_text("You were signed out")
    expect(reason).to_contain_text("expired or been revoked")
    expect(reason).to_contain_text("missing or invalid credentials")  # the server's own words
    assert page.url.endswith("#/jobs")
    page.get_by_label("API key").fill("key-ui-test")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()  # back where it was


def test_on_a_phone_the_output_stops_following_once_scrolled_up(
    new_page: Callable[..., Page], dev_server: Processes,
) -> None:
    page = new_page(PHONE)
    job_id = create_job(dev_server, "demo.story", {"topic": "tide mills", "steps": 2, "tokens_per_step": 400,
                                                   "delay_ms": 15})["id"]
    open_job(page, dev_server, job_id)
    output = page.get_by_test_id("output")
    page.wait_for_function("() => { const o = document.querySelector('[data-testid=output]');"
                           " return o.scrollHeight > o.clientHeight + 200; }", timeout=30_000)
    # while following, the newest text is in view
    assert output.evaluate("o => o.scrollHeight - o.scrollTop - o.clientHeight") < 40
    expect(page.get_by_test_id("output-follow")).to_be_hidden()

    page.get_by_test_id("output-start").click()  # the start, one tap away
    length = len(output.text_content() or "")
    page.wait_for_function(f"() => document.querySelector('[data-testid=output]').textContent.length > {length + 100}")
    assert output.evaluate("o => o.scrollTop") == 0  # more text came, the start stayed in view
    expect(page.get_by_test_id("output-follow")).to_be_visible()

    page.get_by_test_id("output-follow").click()
    length = len(output.text_content() or "")
    page.wait_for_function(f"() => document.querySelector('[data-testid=output]').textContent.length > {length + 100}")
    assert output.evaluate("o => o.scrollHeight - o.scrollTop - o.clientHeight") < 40
    expect(page.get_by_test_id("output-follow")).to_be_hidden()

    # a reader's own scroll up stops the following too
    output.evaluate("o => { o.scrollTop = 10; }")
    length = len(output.text_content() or "")
    page.wait_for_function(f"() => document.querySelector('[data-testid=output]').textContent.length > {length + 100}")
    assert output.evaluate("o => o.scrollTop") == 10
    with client(dev_server.base_url) as http:
        http.post(f"/v1/jobs/{job_id}/cancel")
