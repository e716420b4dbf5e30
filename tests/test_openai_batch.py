"""The ``openai.batch`` handler against the fake upstream through the real SDK."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fake_openai import FakeOpenAI
from fake_openai.recording import Crash, RecordingContext

from compute.errors import InputError
from compute.types.openai_batch import openai_batch
from shared.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        server.controls.batch_request_delay_s = 0.03
        yield server


def context(fake: FakeOpenAI, ids: tuple[str, ...] = ("a", "b", "c"), **extra: Any) -> RecordingContext:
    settings = Settings.from_env({"BACKLANE_OPENAI_BASE_URL": fake.base_url, "BACKLANE_OPENAI_API_KEY": "t"})
    requests = [{"custom_id": cid, "body": {"model": "gpt-fake", "input": cid}} for cid in ids]
    return RecordingContext(
        input={"requests": requests, "poll_interval_s": 0.02, **extra}, settings=settings,
        job_type="openai.batch",
    )


async def run(ctx: RecordingContext) -> dict[str, Any]:
    return await openai_batch.handler(ctx)  # type: ignore[arg-type, no-any-return]


async def test_a_batch_runs_to_joined_results_with_progress_and_usage(fake: FakeOpenAI) -> None:
    fake.controls.batch_failures = {"b"}
    fake.controls.cached_tokens = 1024
    ctx = context(fake, metadata={"team": "x"})
    result = await run(ctx)
    (batch,) = fake.batches.values()
    assert result["batch_id"] == batch.id and result["status"] == "completed"
    assert result["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    assert [r["custom_id"] for r in result["results"]] == ["a", "b", "c"]
    a, b, c = result["results"]
    words = " ".join(f"w{i}" for i in range(12))
    assert (a["status_code"], a["output_text"]) == (200, f"Reply to a: {words}")
    assert a["body"]["object"] == "response" and c["output_text"].startswith("Reply to c")
    assert b["status_code"] is None and b["error"]["code"] == "server_error"
    assert ctx.usage == {"input_tokens": 2 * 2048, "output_tokens": 2 * 15, "cached_tokens": 2 * 1024}
    assert batch.body["metadata"] == {"team": "x", "job_id": "job-1"}
    fractions = [f for f in ctx.fractions if f is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(set(fractions)) >= 3
    assert ctx.store.value == {"file_id": batch.input_file.id, "batch_id": batch.id}


async def test_a_restart_reattaches_to_the_same_batch(fake: FakeOpenAI) -> None:
    first = context(fake)
    first.crash_on = {"progress": 2}
    with pytest.raises(Crash):
        await run(first)
    second = first.next_attempt()
    result = await run(second)
    assert fake.batch_create_calls == 1 and len(fake.files) == 2  # the input, and one output file
    assert result["status"] == "completed" and len(result["results"]) == 3
    assert second.progress_log[0].startswith("re-attaching to batch")


async def test_a_restart_between_create_and_checkpoint_finds_the_batch_by_its_file(fake: FakeOpenAI) -> None:
    first = context(fake)
    first.crash_on = {"save_checkpoint": 2}  # the batch exists upstream; its id never reached the checkpoint
    with pytest.raises(Crash):
        await run(first)
    assert "batch_id" not in first.store.value and fake.batch_create_calls == 1
    result = await run(first.next_attempt())
    assert fake.batch_create_calls == 1 and result["batch_id"] == next(iter(fake.batches))


async def test_cancelling_the_job_cancels_the_batch(fake: FakeOpenAI) -> None:
    fake.controls.batch_request_delay_s = 1.0
    ctx = context(fake)
    task = asyncio.create_task(run(ctx))
    await ctx.wait_calls("progress", 1)  # the batch exists upstream
    ctx.cancelled.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert next(iter(fake.batches.values())).status == "cancelled"


async def test_bad_input_and_a_failed_batch_are_input_errors(fake: FakeOpenAI) -> None:
    with pytest.raises(InputError, match="unique"):
        await run(context(fake, ids=("a", "a")))
    fake.controls.batch_invalid = "line 1: model not found"
    with pytest.raises(InputError, match="model not found"):
        await run(context(fake))
