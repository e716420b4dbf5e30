"""What a person does in the UI, as steps the tests share; and the API calls tests make to set the scene."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from playwright.sync_api import Page, expect
from ui_servers import Processes, client

JOB_URL = re.compile(r"#/jobs/([0-9a-f]{32})$")
FINISH_S = 60
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def sign_in(page: Page, server: Processes, route: str = "/new") -> None:
    """Opens the sign-in address `backlane dev` prints (the key in the fragment), then the given route."""
    page.goto(f"{server.sign_in_url}&{route}")


def start_from_form(page: Page, server: Processes, job_input: dict[str, Any], job_type: str = "demo.story") -> str:
    sign_in(page, server)
    page.get_by_label("Job type").select_option(job_type)
    page.get_by_label("Input (JSON)").fill(json.dumps(job_input))
    page.get_by_role("button", name="Start job").click()
    page.wait_for_url(JOB_URL)
    match = JOB_URL.search(page.url)
    assert match
    return match.group(1)


def open_job(page: Page, server: Processes, job_id: str) -> None:
    sign_in(page, server, f"/jobs/{job_id}")
    expect(page.get_by_test_id("job-id")).to_have_text(job_id)


def wait_finished(page: Page) -> None:
    """The view processed the terminal status event (all output before it is on screen)."""
    expect(page.get_by_test_id("output")).to_have_attribute("data-complete", "true", timeout=FINISH_S * 1000)


def screen_output(page: Page) -> str:
    return page.get_by_test_id("output").text_content() or ""


def wait_output_longer_than(page: Page, length: int, timeout_s: float = 20) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = screen_output(page)
        if len(text) > length:
            return text
        page.wait_for_timeout(50)
    raise AssertionError(f"the output did not grow past {length} characters within {timeout_s} s")


def create_job(server: Processes, job_type: str, job_input: dict[str, Any]) -> dict[str, Any]:
    with client(server.base_url) as http:
        response = http.post("/v1/jobs", json={"type": job_type, "input": job_input})
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]


def get_job(server: Processes, job_id: str) -> dict[str, Any]:
    with client(server.base_url) as http:
        response = http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


def wait_status(server: Processes, job_id: str, *statuses: str, timeout_s: float = FINISH_S) -> dict[str, Any]:
    """Polls the record (an external process does the work) until it reaches one of ``statuses``."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = get_job(server, job_id)
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is {job['status']}, not {statuses}, after {timeout_s} s")
        time.sleep(0.05)
