"""The job store and its Lua scripts against a real redis-server."""

from __future__ import annotations

import pytest

from shared.jobs import JobStore, NewJob
from shared.serialization import loads

pytestmark = pytest.mark.anyio


def new(**kw: object) -> NewJob:
    base: dict[str, object] = {"tenant": "acme", "type": "demo.story", "input": {"topic": "x"}, "max_attempts": 2}
    base.update(kw)
    return NewJob(**base)  # type: ignore[arg-type]


async def claim_and_start(store: JobStore, worker: str = "w1") -> tuple[str, int, int]:
    from shared.serialization import now_ms, rfc3339

    k = store.keys
    job_id, _ = await store.scripts.run("claim", [k.leases, k.queue("demo.story")], [now_ms(), 1000])
    assert job_id
    now = now_ms()
    reply = await store.scripts.run(
        "start", store.job_keys(job_id, "demo.story"), [job_id, worker, now, rfc3339(now), 1000, 60000]
    )
    assert reply[0] == "ok"
    return job_id, int(reply[1]), int(reply[2])


async def events(store: JobStore, job_id: str) -> list[dict[str, object]]:
    return [loads(d) for _, _, d in await store.read_events(job_id, None)]


async def test_create_queues_with_first_status_event(store: JobStore) -> None:
    created = await store.create(new())
    raw = await store.load(created.job_id)
    assert raw is not None and raw["status"] == "queued" and raw["attempt"] == "0"
    (event,) = await events(store, created.job_id)
    assert (event["type"], event["seq"], event["attempt"], event["status"]) == ("status", 1, 0, "queued")


async def test_idempotency_same_body_returns_same_job_other_body_conflicts(store: JobStore) -> None:
    first = await store.create(new(), "key-1")
    again = await store.create(new(), "key-1")
    other = await store.create(new(input={"topic": "y"}), "key-1")
    assert first.created and not again.created and again.job_id == first.job_id and again.same_request
    assert not other.created and not other.same_request
    # keys are scoped per tenant
    assert (await store.create(new(tenant="globex"), "key-1")).created


async def test_seq_is_consecutive_and_stale_token_is_fenced(store: JobStore) -> None:
    job_id = (await store.create(new())).job_id
    _, token, attempt = await claim_and_start(store)
    assert attempt == 1
    keys = [store.keys.job(job_id), store.keys.events(job_id), store.keys.stats]
    await store.scripts.run("append", keys, [token, 0, "output", '"text":"a"', "output", '"text":"b"'])
    with pytest.raises(Exception, match="STALE"):
        await store.scripts.run("append", keys, [token + 1, 2, "output", '"text":"zombie"'])
    evs = await events(store, job_id)
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    assert [e.get("text") for e in evs if e["type"] == "output"] == ["a", "b"]
    assert (await store.stats())["stale_writes"] == 1


async def test_invalid_transition_changes_nothing(store: JobStore) -> None:
    job_id = (await store.create(new())).job_id
    assert (await store.cancel(job_id, "demo.story")).outcome == "canceled"
    before = await events(store, job_id)
    result = await store.transition(job_id, "demo.story", "running")
    assert result.outcome == "invalid" and result.current == "canceled"
    assert await events(store, job_id) == before


async def test_a_resent_append_batch_writes_nothing_twice(store: JobStore) -> None:
    job_id = (await store.create(new())).job_id
    _, token, _ = await claim_and_start(store)
    keys = [store.keys.job(job_id), store.keys.events(job_id), store.keys.stats]
    batch = [token, 0, "output", '"text":"a"', "output", '"text":"b"']
    assert await store.scripts.run("append", keys, batch) == 2
    assert await store.scripts.run("append", keys, batch) == 2  # the same batch again: no-op
    assert await store.scripts.run("append", keys, [token, 1, "output", '"text":"b"', "output", '"text":"c"']) == 3
    with pytest.raises(Exception, match="GAP"):
        await store.scripts.run("append", keys, [token, 5, "output", '"text":"lost"'])
    texts = [loads(d).get("text") for _, _, d in await store.read_events(job_id, None)]
    assert texts == [None, None, "a", "b", "c"]
