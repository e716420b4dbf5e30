"""The ``openai.responses`` handler against the fake upstream, through the real SDK, with a
recording context (the handler's decisions; flows through the real worker are in
``tests/integration/test_openai_worker.py``)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest
from fake_openai import FakeOpenAI, HttpFault, Outcome
from fake_openai.recording import Crash, RecordingContext

from compute.errors import InputError, InternalError, PolicyError, TransientError
from compute.types._openai_client import configuration_problem
from compute.types.openai_responses import openai_responses
from shared.settings import Settings

pytestmark = pytest.mark.anyio

EXPECTED = "Reply to hello: " + " ".join(f"w{i}" for i in range(12))


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def settings_for(fake: FakeOpenAI, **env: str) -> Settings:
    base = {"BACKLANE_OPENAI_BASE_URL": fake.base_url, "BACKLANE_OPENAI_API_KEY": "test"}
    return Settings.from_env({**base, **{f"BACKLANE_{k.upper()}": v for k, v in env.items()}})


def context(fake: FakeOpenAI, prompt: str = "hello", **env: str) -> RecordingContext:
    return RecordingContext(input={"model": "gpt-fake", "input": prompt}, settings=settings_for(fake, **env))


async def run(ctx: RecordingContext) -> dict[str, object]:
    return await openai_responses.handler(ctx)  # type: ignore[arg-type, no-any-return]


async def test_streams_tokens_records_usage_and_checkpoints(fake: FakeOpenAI) -> None:
    fake.controls.cached_tokens = 1920
    ctx = context(fake)
    result = await run(ctx)
    resp = fake.only_response()
    assert result == {
        "response_id": resp.id, "output_text": EXPECTED, "model": "gpt-fake", "status": "completed",
    }
    assert ctx.text == EXPECTED and len(ctx.outputs) == 15
    assert ctx.usage == {"input_tokens": 2048, "output_tokens": 15, "cached_tokens": 1920}
    body = fake.create_bodies[0]
    assert (body["background"], body["stream"], body["store"]) == (True, True, True)
    assert body["metadata"] == {"job_id": "job-1"}
    assert body["prompt_cache_key"] == "backlane:openai.responses"
    assert ctx.store.value["response_id"] == resp.id and ctx.store.value["text"]
    assert ctx.store.saves >= 1 + 15 // 5
    assert "OpenAI response in_progress" in ctx.progress_log


async def test_input_fields_pass_through_and_the_cache_key_is_overridable(fake: FakeOpenAI) -> None:
    ctx = context(fake)
    ctx.input = {**ctx.input, "prompt_cache_key": "mine", "instructions": "be brief", "max_output_tokens": 3,
                 "temperature": 0.2, "metadata": {"team": "a"}}
    result = await run(ctx)
    body = fake.create_bodies[0]
    assert (body["prompt_cache_key"], body["instructions"], body["temperature"]) == ("mine", "be brief", 0.2)
    assert body["metadata"] == {"team": "a", "job_id": "job-1"}
    assert result["output_text"] == "Reply to hello: w0 w1 w2"


@pytest.mark.parametrize("mode", ["abort", "eof"])
async def test_a_cut_stream_resumes_with_starting_after_in_the_same_attempt(
    fake: FakeOpenAI, mode: str,
) -> None:
    fake.controls.drops = [8, 4]
    fake.controls.drop_mode = mode  # type: ignore[assignment]
    ctx = context(fake)
    result = await run(ctx)
    assert fake.create_calls == 1 and fake.resume_after == [7, 11]
    assert ctx.text == result["output_text"] == EXPECTED
    assert sum("resuming" in m for m in ctx.progress_log) == 2


async def test_a_restarted_attempt_resumes_without_a_second_create(fake: FakeOpenAI) -> None:
    fake.controls.token_delay_s = 0.01
    first = context(fake)
    first.crash_on = {"output": 9}  # dies after 8 deltas; the checkpoint holds 5 of them
    with pytest.raises(Crash):
        await run(first)
    saved = dict(first.store.value)
    second = first.next_attempt()
    result = await run(second)
    assert fake.create_calls == 1 and fake.resume_after == [saved["cursor"]]
    assert second.outputs[0] == saved["text"]  # the kept text first, then only what follows
    assert second.text == result["output_text"] == EXPECTED
    assert any("resuming OpenAI response" in m for m in second.progress_log)


async def test_a_response_that_finished_while_no_worker_ran_is_caught_up(fake: FakeOpenAI) -> None:
    first = context(fake)
    first.crash_on = {"output": 3}
    with pytest.raises(Crash):
        await run(first)
    fake.wait_for(lambda: fake.only_response().finished)
    second = first.next_attempt()
    assert (await run(second))["output_text"] == second.text == EXPECTED
    assert fake.create_calls == 1


async def test_a_stream_that_keeps_ending_early_falls_back_to_polling(fake: FakeOpenAI) -> None:
    fake.controls.drops = [7, 0, 0, 0, 0]
    fake.controls.drop_mode = "eof"
    ctx = context(fake)
    assert (await run(ctx))["output_text"] == ctx.text == EXPECTED
    assert fake.create_calls == 1 and fake.resume_after == [6, 6, 6, 6]  # then polling took over


async def test_rate_limit_is_transient_with_retry_after(fake: FakeOpenAI) -> None:
    fake.controls.create_faults = [
        HttpFault(429, code="rate_limit_exceeded", retry_after="7"), HttpFault(502),
    ]
    with pytest.raises(TransientError) as limited:
        await run(context(fake))
    assert limited.value.retry_after == 7
    with pytest.raises(TransientError):
        await run(context(fake))
    assert fake.create_calls == 2  # no SDK retries behind our back


@pytest.mark.parametrize(
    ("outcome", "error", "words"),
    [
        (Outcome("failed", error_code="server_error"), TransientError, "failed"),
        (Outcome("failed", error_code="invalid_prompt"), PolicyError, "invalid_prompt"),
        (Outcome("content_filter"), PolicyError, "content filter"),
        (Outcome("refusal"), PolicyError, "refused"),
    ],
)
async def test_failed_responses_map_to_failure_classes(
    fake: FakeOpenAI, outcome: Outcome, error: type[Exception], words: str,
) -> None:
    fake.controls.outcomes = [outcome]
    ctx = context(fake)
    with pytest.raises(error, match=words):
        await run(ctx)


async def test_bad_requests_are_input_errors(fake: FakeOpenAI) -> None:
    fake.controls.context_window_chars = 20
    with pytest.raises(InputError, match="context_length_exceeded"):
        await run(context(fake, prompt="x" * 100))
    with pytest.raises(InputError, match="set by Backlane"):
        ctx = context(fake)
        ctx.input = {**ctx.input, "stream": False}
        await run(ctx)


async def test_max_output_tokens_stands_as_an_incomplete_result(fake: FakeOpenAI) -> None:
    fake.controls.outcomes = [Outcome("max_output_tokens", stop_after=4)]
    ctx = context(fake)
    result = await run(ctx)
    assert result["status"] == "incomplete" and result["output_text"] == ctx.text == "Reply to hello: w0 "


async def test_cancelling_the_job_cancels_the_upstream_response(fake: FakeOpenAI) -> None:
    fake.controls.token_delay_s = 0.05
    ctx = context(fake)
    task = asyncio.create_task(run(ctx))
    await ctx.wait_calls("output", 2)
    ctx.cancelled.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    resp = fake.only_response()
    assert fake.cancel_calls == [resp.id] and resp.status == "cancelled"


async def test_a_worker_shutting_down_leaves_the_upstream_response_running(fake: FakeOpenAI) -> None:
    fake.controls.token_delay_s = 0.02
    ctx = context(fake)
    task = asyncio.create_task(run(ctx))
    await ctx.wait_calls("output", 6)
    task.cancel()  # cancelled without a cancel of the job: the worker is draining
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.cancel_calls == []
    second = ctx.next_attempt()
    assert (await run(second))["output_text"] == second.text == EXPECTED
    assert fake.create_calls == 1


async def test_a_response_stuck_in_queued_is_cancelled_and_submitted_again(fake: FakeOpenAI) -> None:
    fake.controls.outcomes = [Outcome("stuck_queued")]
    ctx = context(fake, openai_queued_timeout_s="0.3")
    result = await run(ctx)
    stuck, fresh = fake.responses.values()
    assert fake.create_calls == 2 and fake.cancel_calls == [stuck.id] and stuck.status == "cancelled"
    assert result["response_id"] == fresh.id and ctx.text == EXPECTED
    assert any("stuck in queued" in m for m in ctx.progress_log)


async def test_without_background_mode_a_restart_calls_again_and_says_so(fake: FakeOpenAI) -> None:
    first = context(fake, openai_background="off")
    first.crash_on = {"output": 4}
    with pytest.raises(Crash):
        await run(first)
    assert "background" not in fake.create_bodies[0]
    second = first.next_attempt()
    assert (await run(second))["output_text"] == second.text == EXPECTED
    assert fake.create_calls == 2
    assert any("calls it again" in m for m in second.progress_log)


async def test_auto_falls_back_when_the_upstream_refuses_background(fake: FakeOpenAI) -> None:
    fake.controls.supports_background = False
    ctx = context(fake)
    assert (await run(ctx))["output_text"] == EXPECTED
    assert [b.get("background") for b in fake.create_bodies] == [True, None]
    assert any("no background mode" in m for m in ctx.progress_log)
    fake.create_bodies.clear()
    with pytest.raises(InputError, match="refused background"):
        await run(context(fake, openai_background="on"))


async def test_a_response_gone_during_a_resume_in_the_first_attempt_is_transient(fake: FakeOpenAI) -> None:
    """Bug: an upstream 404 while resuming a cut stream in the first attempt failed the job as
    ``internal``. Cause: ``background()`` caught only StuckQueued, so ResponseGone escaped to the
    worker's classifier. Fix: it takes the ``gone()`` path, as ``resume()`` does: the checkpoint
    forgets the response and the attempt fails as transient, so the next one calls again."""
    fake.controls.drops = [5]
    fake.controls.retrieve_faults = [
        HttpFault(404, message="Response with id 'resp_x' not found.", type="invalid_request_error"),
    ]
    ctx = context(fake)
    with pytest.raises(TransientError, match="gone upstream"):
        await run(ctx)
    lost = fake.only_response().id
    assert ctx.store.value["response_id"] is None and ctx.store.value["replaced"] == [lost]
    second = ctx.next_attempt()
    assert (await run(second))["output_text"] == second.text == EXPECTED
    assert fake.create_calls == 2


@pytest.mark.parametrize(("code", "error"), [("server_error", TransientError), ("invalid_prompt", PolicyError)])
async def test_an_error_event_in_the_stream_ends_the_run_by_its_code(
    fake: FakeOpenAI, code: str, error: type[Exception],
) -> None:
    fake.controls.outcomes = [Outcome("stream_error", error_code=code)]
    ctx = context(fake)
    with pytest.raises(error, match=code):
        await run(ctx)
    assert ctx.text == "Reply to " and fake.create_calls == 1  # the two deltas before the error
    assert fake.resume_after == []  # the poll after the error event found the response final


async def test_retry_after_ms_wins_over_retry_after(fake: FakeOpenAI) -> None:
    fake.controls.create_faults = [
        HttpFault(429, code="rate_limit_exceeded", retry_after="7", retry_after_ms="1500", type="requests"),
        HttpFault(503, retry_after_ms="250"),
    ]
    with pytest.raises(TransientError) as limited:
        await run(context(fake))
    assert limited.value.retry_after == 1.5
    with pytest.raises(TransientError) as unavailable:
        await run(context(fake))
    assert unavailable.value.retry_after == 0.25


async def test_insufficient_quota_is_policy_not_a_retry(fake: FakeOpenAI) -> None:
    """A 429 with code insufficient_quota is a billing limit: retrying only burns attempts."""
    fake.controls.create_faults = [HttpFault(
        429, code="insufficient_quota", type="insufficient_quota", retry_after="1",
        message="You exceeded your current quota, please check your plan and billing details.",
    )]
    with pytest.raises(PolicyError, match="insufficient_quota") as refused:
        await run(context(fake))
    assert refused.value.retryable is False and fake.create_calls == 1


@pytest.mark.parametrize(("mode", "words"), [("abort", "stream cut"), ("eof", "without a final event")])
async def test_without_background_mode_a_cut_stream_is_transient_and_the_restart_calls_again(
    fake: FakeOpenAI, mode: str, words: str,
) -> None:
    fake.controls.drops = [6]
    fake.controls.drop_mode = mode  # type: ignore[assignment]
    first = context(fake, openai_background="off")
    with pytest.raises(TransientError, match=words):
        await run(first)
    assert fake.resume_after == [] and first.store.value["mode"] == "plain"
    second = first.next_attempt()
    assert (await run(second))["output_text"] == second.text == EXPECTED
    assert fake.create_calls == 2 and any("calls it again" in m for m in second.progress_log)


async def test_the_default_prompt_cache_key_names_the_type_and_the_tenant(fake: FakeOpenAI) -> None:
    """Bug: the tenant never reached the default ``prompt_cache_key``. Cause: it was read with
    ``getattr(ctx, "tenant", None)``, an attribute JobContext does not have. Fix: the tenant
    comes from the job record."""
    ctx = context(fake)
    ctx.job = dataclasses.replace(ctx.job, tenant="acme")
    await run(ctx)
    assert fake.create_bodies[0]["prompt_cache_key"] == "backlane:openai.responses:acme"


async def test_reopening_a_stream_after_a_429_waits_out_its_retry_after(fake: FakeOpenAI) -> None:
    """Bug: a 429 on reopening a cut stream was retried after the idle back-off (0.2 s), not after
    the provider's Retry-After. Cause: ``follow()`` dropped the error's retry_after. Fix: it waits
    the longer of the two, and a Retry-After past MAX_INLINE_WAIT_S fails the attempt as transient
    with it (the job's back-off honours it) instead of holding the worker."""
    fake.controls.drops = [5]
    fake.controls.retrieve_faults = [HttpFault(429, code="rate_limit_exceeded", retry_after_ms="600", type="requests")]
    ctx = context(fake)
    assert (await run(ctx))["output_text"] == ctx.text == EXPECTED
    limited, resumed = fake.retrieve_at[:2]
    assert resumed - limited >= 0.6 and fake.resume_after == [4] and fake.create_calls == 1

    fake.controls.drops = [5]
    fake.controls.retrieve_faults = [HttpFault(429, code="rate_limit_exceeded", retry_after="120", type="requests")]
    second = context(fake)
    with pytest.raises(TransientError) as long_wait:
        await run(second)
    assert long_wait.value.retry_after == 120 and second.store.value["response_id"] is not None


async def test_missing_credentials_are_the_deployments_problem_named_at_start_and_in_the_job(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bug: a worker without an OpenAI key failed each job as ``input`` (the user's fault) with the
    SDK's message. It is ``internal`` and names the setting, and the worker says so as it starts."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    without = Settings.from_env({"BACKLANE_OPENAI_BASE_URL": fake.base_url})
    assert without.openai_api_key is None
    problem = configuration_problem(without)
    assert problem is not None and "BACKLANE_OPENAI_API_KEY" in problem
    assert configuration_problem(settings_for(fake)) is None
    ctx = RecordingContext(input={"model": "gpt-fake", "input": "hello"}, settings=without)
    with pytest.raises(InternalError, match="BACKLANE_OPENAI_API_KEY") as failed:
        await run(ctx)
    assert failed.value.error_class == "internal" and fake.create_bodies == []
