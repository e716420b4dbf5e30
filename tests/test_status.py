"""The one transition table, and proof that Redis enforces exactly it."""

from __future__ import annotations

import itertools

import pytest

from shared.jobs import JobStore, NewJob
from shared.scripts import render_status_table
from shared.serialization import now_ms, rfc3339
from shared.status import TERMINAL, TRANSITIONS, Status, can_transition

pytestmark = pytest.mark.anyio


def test_terminal_states_have_no_way_out() -> None:
    for status in TERMINAL:
        assert TRANSITIONS[status] == frozenset()
    assert not can_transition(Status.COMPLETED, Status.RUNNING)


def test_rendered_lua_table_lists_every_status() -> None:
    lua = render_status_table()
    for status in Status:
        assert f"  {status.value} = {{" in lua


async def _job_in(store: JobStore, status: Status) -> str:
    """A job driven to `status` through legal transitions only."""
    job_id = (await store.create(NewJob(tenant="t", type="demo.story", input={}, max_attempts=3))).job_id
    if status == Status.QUEUED:
        return job_id
    if status in (Status.CANCELED, Status.EXPIRED):
        assert (await store.transition(job_id, "demo.story", status.value)).ok
        return job_id
    k = store.keys.of_job(job_id)
    claimed, _ = await store.scripts.run("claim", [k.leases, k.queue("demo.story")], [now_ms(), 5000])
    assert claimed == job_id
    now = now_ms()
    await store.scripts.run("start", store.job_keys(job_id, "demo.story"),
                            [job_id, "w", now, rfc3339(now), 5000, 60000])
    if status != Status.RUNNING:
        assert (await store.transition(job_id, "demo.story", status.value)).ok
    return job_id


@pytest.mark.parametrize("current, target", list(itertools.product(Status, Status)))
async def test_redis_allows_exactly_the_table(store: JobStore, current: Status, target: Status) -> None:
    job_id = await _job_in(store, current)
    before = await store.read_events(job_id, None)
    result = await store.transition(job_id, "demo.story", target.value)
    after = await store.read_events(job_id, None)
    raw = await store.load(job_id)
    assert raw is not None
    if can_transition(current, target):
        assert result.outcome == "ok" and raw["status"] == target
        assert len(after) == len(before) + 1
    else:
        assert result.outcome == "invalid" and result.current == current
        assert raw["status"] == current and after == before
