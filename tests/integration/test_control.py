"""The control layer through the HTTP API and a real worker: review, apply once, retries, deadlines, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from http_server import asgi_client
from redis.asyncio import Redis

from api.app import create_app
from compute.context import JobContext
from compute.errors import Failure
from compute.leases import Attempts
from compute.outcomes import Outcomes
from compute.registry import BUILTIN_MODULES, load
from compute.supervisor import Supervisor
from compute.worker import Worker
from shared.jobs import JobStore
from shared.jobtypes import DEMO_STORY, JobTypePolicy
from shared.serialization import loads, now_ms
from shared.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings, redis=redis)) as c:
        yield c


async def work(settings: Settings, redis: Redis) -> None:
    await Worker(settings, redis, load(BUILTIN_MODULES)).run(burst=True)


async def submit(client: httpx.AsyncClient, job_type: str, **input: Any) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json={"type": job_type, "input": input})
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


async def statuses(store: JobStore, job_id: str) -> list[str]:
    return [loads(d)["status"] for _, t, d in await store.read_events(job_id, None) if t == "status"]


async def test_concurrent_approvals_apply_the_side_effect_exactly_once(
    client: httpx.AsyncClient, settings: Settings, redis: Redis, store: JobStore
) -> None:
    job = await submit(client, "demo.review", action="refund order 42", target="alice", delay_ms=0)
    assert job["review"]["required"] is True
    await work(settings, redis)
    job = (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert job["status"] == "needs_review" and job["review"]["state"] == "pending" and job["action_hash"]
    assert job["result"]["proposal"] == "Proposed: refund order 42 on alice"

    answers = await asyncio.gather(*(
        client.post(f"/v1/jobs/{job['id']}/approve",
                    json={"by": f"reviewer-{i}", "note": "ok", "action_hash": job["action_hash"]})
        for i in range(12)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [409] * 11
    winner = next(a.json() for a in answers if a.status_code == 200)
    assert winner["status"] == "queued" and winner["phase"] == "apply" and winner["review"]["state"] == "approved"

    await work(settings, redis)
    done = (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert done["status"] == "completed"
    assert done["applied"]["what"] == {"action": "refund order 42", "target": "alice", "effect": "recorded on the job"}
    assert done["applied"]["by"] == winner["review"]["by"] and done["applied"]["at"]
    assert await statuses(store, job["id"]) == ["queued", "running", "needs_review", "queued", "running", "completed"]
    # a retried approval and a late cancel change nothing, and say why
    again = await client.post(f"/v1/jobs/{job['id']}/approve", json={"action_hash": job["action_hash"]})
    assert again.status_code == 409
    cancel = await client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancel.status_code == 409 and "completed" in cancel.json()["error"]["message"]


async def test_an_approval_for_another_action_is_refused(
    client: httpx.AsyncClient, settings: Settings, redis: Redis
) -> None:
    job = await submit(client, "demo.review", action="delete the repo", delay_ms=0)
    await work(settings, redis)
    wrong = await client.post(f"/v1/jobs/{job['id']}/approve", json={"action_hash": "0" * 64})
    assert wrong.status_code == 409 and "action_hash" in wrong.json()["error"]["message"]
    assert (await client.get(f"/v1/jobs/{job['id']}")).json()["status"] == "needs_review"


@pytest.mark.parametrize("send_hash", [True, False])
async def test_the_approved_action_hash_is_recorded_whether_or_not_it_was_sent(
    client: httpx.AsyncClient, settings: Settings, redis: Redis, send_hash: bool
) -> None:
    """Bug: the record did not say which proposal was approved. Fix: decide.lua records the
    action_hash decided on in review.action_hash; binding stays optional (a sent hash is checked)."""
    job = await submit(client, "demo.review", action="close ticket 7", delay_ms=0)
    await work(settings, redis)
    digest = (await client.get(f"/v1/jobs/{job['id']}")).json()["action_hash"]
    body = {"action_hash": digest} if send_hash else {}
    approved = await client.post(f"/v1/jobs/{job['id']}/approve", json=body)
    assert approved.status_code == 200 and approved.json()["review"]["action_hash"] == digest


async def test_reject_cancels_with_the_reviewer_s_note(
    client: httpx.AsyncClient, settings: Settings, redis: Redis
) -> None:
    job = await submit(client, "demo.review", action="email everyone", delay_ms=0)
    await work(settings, redis)
    job = (await client.get(f"/v1/jobs/{job['id']}")).json()
    rejected = await client.post(f"/v1/jobs/{job['id']}/reject", json={"note": "too broad", "by": "maria"})
    assert rejected.status_code == 200
    body = rejected.json()
    assert body["status"] == "canceled" and body["applied"] is None
    assert body["review"] == {"required": True, "state": "rejected", "by": "maria", "at": body["review"]["at"],
                              "note": "too broad", "action_hash": job["action_hash"]}


async def test_cancel_is_refused_once_the_side_effect_may_be_running(
    client: httpx.AsyncClient, settings: Settings, redis: Redis, store: JobStore
) -> None:
    job = await submit(client, "demo.review", action="pay invoice", delay_ms=0)
    await work(settings, redis)
    approved = await client.post(f"/v1/jobs/{job['id']}/approve", json={})
    assert approved.status_code == 200
    attempts = Attempts(store, "applier")
    (started,), _ = await attempts.take(["demo.review"], 1, 10_000)
    assert started.job_id == job["id"]
    refused = await client.post(f"/v1/jobs/{job['id']}/cancel")
    assert refused.status_code == 409 and "being applied" in refused.json()["error"]["message"]


async def test_transient_failure_retries_then_completes_with_history_and_metrics(
    client: httpx.AsyncClient, settings: Settings, redis: Redis
) -> None:
    job = await submit(client, "demo.story", topic="flaky", steps=1, tokens_per_step=3, delay_ms=0,
                       fail={"class": "transient", "times": 1, "message": "provider 503"})
    await work(settings, redis)  # burst waits out the ~1 s back-off of demo.story
    done = (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert done["status"] == "completed" and done["attempt"] == 2
    first, second = done["attempts"]
    assert first["status"] == "queued" and first["reason"] == "retry" and first["error"]["class"] == "transient"
    assert 750 <= first["retry_in_ms"] <= 1250 and second["status"] == "completed"
    metrics = (await client.get("/metrics")).text
    assert 'backlane_jobs_finished_total{status="completed",type="demo.story"} 1.0' in metrics
    assert 'backlane_retries_total{type="demo.story"} 1.0' in metrics
    assert 'backlane_job_run_seconds_count{type="demo.story"} 1.0' in metrics


async def test_a_failure_that_cannot_be_retried_says_why_and_a_manual_retry_links_back(
    client: httpx.AsyncClient, settings: Settings, redis: Redis
) -> None:
    job = await submit(client, "demo.story", topic="bad", delay_ms=0, fail={"class": "input", "times": 1})
    await work(settings, redis)
    failed = (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert failed["status"] == "failed" and failed["error"]["class"] == "input" and not failed["error"]["retryable"]
    retry = await client.post(f"/v1/jobs/{job['id']}/retry")
    assert retry.status_code == 201 and retry.json()["retry_of"] == job["id"]


async def test_a_job_not_started_before_its_deadline_expires(
    client: httpx.AsyncClient, settings: Settings, redis: Redis
) -> None:
    created = await client.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": "late"}, "deadline_s": 0.05})
    job = created.json()
    await asyncio.sleep(0.1)
    await Supervisor(settings, redis, webhooks=False).tick()
    expired = (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert expired["status"] == "expired" and expired["error"]["class"] == "deadline"
    retry = await client.post(f"/v1/jobs/{job['id']}/retry")  # an expired job can be run again
    assert retry.status_code == 201
    assert retry.json()["retry_of"] == job["id"] and retry.json()["status"] == "queued"


@pytest.mark.parametrize("rate", [0.0, 1.0])
async def test_a_sampled_review_policy_at_rate_0_or_1_is_deterministic(
    client: httpx.AsyncClient, store: JobStore, rate: float
) -> None:
    await store.register_types([JobTypePolicy(name="notes.tag", authority="low_risk_write",
                                              review_sample_rate=rate)])
    jobs = [(await client.post("/v1/jobs", json={"type": "notes.tag", "input": {}})).json() for _ in range(20)]
    assert {job["review"]["required"] for job in jobs} == {rate == 1.0}


async def test_a_queued_retry_shows_when_it_may_start(
    client: httpx.AsyncClient, settings: Settings, store: JobStore
) -> None:
    job = await submit(client, "demo.story", topic="later")
    attempts = Attempts(store, "w")
    (started,), _ = await attempts.take(["demo.story"], 1, settings.lease_ms)
    before = now_ms()
    await Outcomes(store).failed(JobContext(attempts, started, settings),
                                 Failure("transient", "provider 503", True, retry_after=60), DEMO_STORY)
    queued = (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert queued["status"] == "queued" and queued["ready_at"] is not None
    ready = datetime.fromisoformat(queued["ready_at"]).timestamp() * 1000
    assert before + 59_000 <= ready <= now_ms() + 60_000
