"""``Prefer: wait=N`` on POST /v1/jobs, against a real API process and a real worker process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from http_server import serve_in_process, worker_process

KEY = "key-wait"
QUICK = {"type": "demo.story", "input": {"topic": "otters", "steps": 1, "tokens_per_step": 3, "delay_ms": 0}}
SLOW = {"type": "demo.story", "input": {"topic": "sloths", "steps": 3, "tokens_per_step": 50, "delay_ms": 100}}


@pytest.fixture
def api(redis_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    env = {"BACKLANE_REDIS_URL": redis_url, "BACKLANE_API_KEYS": f"acme:{KEY}"}
    with worker_process(env, tmp_path / "worker.log"), serve_in_process(env) as url, httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
        yield client


def test_a_job_that_ends_within_the_wait_is_answered_finished(api: httpx.Client) -> None:
    response = api.post("/v1/jobs", json=QUICK, headers={"Prefer": "wait=20"})
    assert response.status_code == 200, response.text
    assert response.headers["preference-applied"] == "wait=20"
    record = response.json()
    assert record["status"] == "completed" and record["result"] is not None
    assert response.headers["location"].endswith(f"/v1/jobs/{record['id']}")


def test_a_job_still_running_after_the_wait_is_a_202(api: httpx.Client) -> None:
    started = time.monotonic()
    response = api.post("/v1/jobs", json=SLOW, headers={"Prefer": "wait=1"})
    waited = time.monotonic() - started
    assert response.status_code == 202, response.text
    assert response.headers["preference-applied"] == "wait=1"
    assert response.json()["status"] in ("queued", "running")
    assert 1.0 <= waited < 3.0
    api.post(f"/v1/jobs/{response.json()['id']}/cancel")


def test_without_the_header_a_create_is_still_201(api: httpx.Client) -> None:
    response = api.post("/v1/jobs", json=QUICK)
    assert response.status_code == 201
    assert "preference-applied" not in response.headers
    assert api.post("/v1/jobs", json=QUICK, headers={"Prefer": "respond-async"}).status_code == 201


def test_a_bad_wait_is_a_400_and_creates_nothing(api: httpx.Client) -> None:
    for prefer in ("wait=0", "wait=61", "wait=abc", "wait=1.5", "wait=", "wait=-3", "respond-async, wait=x"):
        response = api.post("/v1/jobs", json=QUICK, headers={"Prefer": prefer})
        assert response.status_code == 400, prefer
        assert "Prefer: wait must be a whole number of seconds from 1 to 60" in response.json()["error"]["message"]
    assert api.get("/v1/jobs").json()["jobs"] == []


def test_an_idempotent_resubmit_waits_for_the_same_job(api: httpx.Client) -> None:
    key = {"Idempotency-Key": "order-17"}
    first = api.post("/v1/jobs", json=SLOW, headers={**key, "Prefer": "wait=1"})
    assert first.status_code == 202
    job_id = first.json()["id"]
    api.post(f"/v1/jobs/{job_id}/cancel")
    again = api.post("/v1/jobs", json=SLOW, headers={**key, "Prefer": "wait=5"})
    assert again.status_code == 200, again.text  # the same job, and it has ended (canceled)
    assert again.json()["id"] == job_id and again.json()["status"] == "canceled"
    assert api.post("/v1/jobs", json=SLOW, headers=key).status_code == 200  # a plain replay, as before
    other_body = api.post("/v1/jobs", json=QUICK, headers={**key, "Prefer": "wait=5"})
    assert other_body.status_code == 409
