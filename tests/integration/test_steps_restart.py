"""Durable steps across a real SIGKILL: real `backlane worker` and `backlane supervisor` processes."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from step_counting import full_text
from test_processes import Procs, procs, wait_for

from api.traces import build_trace
from shared.connection import connect
from shared.job import Job
from shared.jobs import JobStore, NewJob
from shared.serialization import loads
from shared.settings import Settings

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
__all__ = ["procs"]  # the fixture, imported for the tests below

HERE = Path(__file__).parent


async def test_a_worker_killed_during_step_3_of_4_is_not_called_again_for_steps_1_and_2(
        procs: Procs, redis_url: str) -> None:
    redis = connect(redis_url, 4)
    store = JobStore(redis, Settings(redis_url=redis_url))
    job_id = (await store.create(NewJob(tenant="acme", type="test.counted_steps", input={"delay_ms": 60},
                                        max_attempts=3))).job_id
    path = f"{procs.env.get('PYTHONPATH', '')}:{HERE}".strip(":")
    victim = procs.start("worker", "--import", "step_counting", PYTHONPATH=path)

    async def in_step_3() -> bool:
        evs = [loads(d) for _, _, d in await store.read_events(job_id, None, count=10_000)]
        return any(e["type"] == "output" and e["text"].startswith("s3w2") for e in evs)

    await wait_for(in_step_3, 30, "the first worker to be inside step 3")
    victim.send_signal(signal.SIGKILL)
    procs.start("supervisor")
    procs.start("worker", "--import", "step_counting", PYTHONPATH=path)

    async def done() -> bool:
        return (await store.load(job_id) or {}).get("status") == "completed"

    await wait_for(done, 40, "the job to complete on the second worker")
    calls = [int(await redis.get(f"test:calls:{job_id}:{i}") or 0) for i in range(1, 5)]
    assert calls == [1, 1, 2, 1]  # steps 1-2 were not called again; 3 ran again, 4 once
    evs = [loads(d) for _, _, d in await store.read_events(job_id, None, count=10_000)]
    newest = "".join(e["text"] for e in evs if e["type"] == "output" and e["attempt"] == 2)
    assert newest == full_text()
    steps = [(e["attempt"], e["occurrence"], e["state"]) for e in evs if e["type"] == "step"]
    assert steps == [(1, 1, "started"), (1, 1, "completed"), (1, 2, "started"), (1, 2, "completed"),
                     (1, 3, "started"), (2, 1, "replayed"), (2, 2, "replayed"), (2, 3, "started"),
                     (2, 3, "completed"), (2, 4, "started"), (2, 4, "completed")]
    trace = {k: loads(v) for k, v in (await redis.hgetall(store.keys.trace(job_id))).items()}
    assert trace["2:step:part#1"]["status"] == trace["2:step:part#2"]["status"] == "replayed"
    assert trace["1:step:part#3"]["status"] == "running"  # cut off by the kill
    assert trace["2:step:part#3"]["status"] == "ok"
    # the model call of each step run for real is paid; step 3's twice (attempt 1 was killed in it)
    raw = await store.load(job_id)
    assert raw is not None
    usage = Job.from_hash(raw).usage
    assert usage is not None and (usage["calls"], usage["input_tokens"]) == (5, 5000)
    assert [(a["attempt"], a["calls"]) for a in usage["attempts"]] == [(1, 3), (2, 2)]
    assert usage["attempts"][1]["repaid"] is not None and usage["attempts"][1]["repaid"]["calls"] == 1
    assert usage["cost_usd"] == pytest.approx(5 * 195_000 / 1e9)  # gpt-4o-mini, 800 + 200 cached in, 100 out
    spans = build_trace(Job.from_hash(raw), await redis.hgetall(store.keys.trace(job_id)))["spans"]
    replayed = [s["id"] for s in spans if s["status"] == "replayed"]
    assert replayed == ["2:step:part#1", "2:step:part#2"]
    cut = next(s for s in spans if s["id"] == "1:step:part#3")
    assert cut["status"] == "error" and cut["attributes"]["interrupted"] is True
    await redis.aclose()
