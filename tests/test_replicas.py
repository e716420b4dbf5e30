"""BACKLANE_REDIS_MIN_REPLICAS: a change is acknowledged only once WAIT counts that many replicas. The
test Redis (one server, or a Cluster of masters) has none, so every durable change falls short: the
change is made, and the caller hears it is not yet safe. With replicas: tests/integration/test_failover.py."""

from __future__ import annotations

import dataclasses

import pytest
from http_server import asgi_client

from api.app import create_app
from shared.jobs import JobStore, NewJob
from shared.replicas import NotReplicated
from shared.settings import Settings

pytestmark = pytest.mark.anyio


def wanting_a_replica(settings: Settings) -> Settings:
    return dataclasses.replace(settings, redis_min_replicas=1, redis_replica_wait_ms=50)


async def test_a_create_no_replica_confirmed_is_made_but_not_acknowledged(store: JobStore, settings: Settings) -> None:
    waiting = JobStore(store.redis, wanting_a_replica(settings))
    with pytest.raises(NotReplicated, match="confirmed by 0 of the 1 replica") as raised:
        await waiting.create(NewJob(tenant="acme", type="demo.story", input={}, max_attempts=3), "key-1")
    job_id = raised.value.reply[1]
    assert (await store.load(job_id) or {}).get("status") == "queued"  # on the master all the same
    # without WAIT, the same request finds that job
    again = await store.create(NewJob(tenant="acme", type="demo.story", input={}, max_attempts=3), "key-1")
    assert again.job_id == job_id and not again.created


async def test_a_worker_s_transition_stands_when_no_replica_confirms_it(store: JobStore, settings: Settings) -> None:
    created = await store.create(NewJob(tenant="acme", type="demo.story", input={}, max_attempts=3))
    waiting = JobStore(store.redis, wanting_a_replica(settings))
    moved = await waiting.transition(created.job_id, "demo.story", "canceled", event={"reason": "test"})
    assert moved.ok and (await store.load(created.job_id) or {}).get("status") == "canceled"


async def test_the_api_answers_503_with_retry_after_when_no_replica_confirms_a_create(settings: Settings) -> None:
    async with asgi_client(create_app(wanting_a_replica(settings))) as http:
        response = await http.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": "t"}},
                                   headers={"Idempotency-Key": "k"})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "replica" in response.json()["error"]["message"]
        assert "Idempotency-Key" in response.json()["error"]["message"]
    async with asgi_client(create_app(settings)) as http:  # the job is there: the retry finds it
        again = await http.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": "t"}},
                                headers={"Idempotency-Key": "k"})
        assert again.status_code == 200
