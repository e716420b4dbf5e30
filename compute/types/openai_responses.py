"""The ``openai.responses`` job type: one Responses call to any OpenAI-compatible endpoint.

The call runs as one durable step (``response``), whose span holds the model call. Where the upstream
has background mode, the call is created once with ``background=True,
stream=True, store=True`` and no SDK retries; the response id and the cursor are checkpointed as
events arrive, so a restarted attempt re-emits the text it has and resumes the same upstream
response (``_openai_stream``) instead of paying for a second one. Without background mode a
restart has to call again, and says so in the stream. Each create goes through ``ctx.limit`` of the
resource ``openai:<model>`` (when ``BACKLANE_RESOURCES`` names it): the call waits for its requests
and tokens, and a 429 with Retry-After pauses the model for every worker (``compute/limits.py``).

Input: ``{model, input, instructions?, max_output_tokens?, prompt_cache_key?, metadata?, ...}``;
every other field is passed through to the upstream as is.
Result: ``{"response_id", "output_text", "model", "status"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, NoReturn

import openai

from compute.errors import InputError, TransientError
from compute.limits import Call
from compute.registry import job_type
from shared.jobtypes import OPENAI_RESPONSES
from shared.serialization import dumps

from ._openai_client import make_client
from ._openai_errors import BackgroundRefused, from_api_error, from_response, refuses_background
from ._openai_stream import Follower, ResponseGone, RunState, StuckQueued

if TYPE_CHECKING:
    from compute.context import JobContext

#: fields Backlane decides itself; an input that sets them is refused rather than silently overridden
RESERVED = frozenset({"background", "stream", "store", "stream_options"})
#: replacements of a response stuck in queued within one attempt; one more stuck response fails
#: the attempt as transient, and the next attempt (after the type's back-off) counts afresh
MAX_RESUBMITS = 2
#: replaced response ids a checkpoint remembers (bounded: max_attempts may be large)
REPLACED_KEPT = 32


def estimate_tokens(body: dict[str, Any]) -> int:
    """What a call may use before its usage is known: about 4 characters of JSON per input token, plus
    the output cap it asks for."""
    cap = body.get("max_output_tokens")
    return len(dumps(body.get("input"))) // 4 + (cap if isinstance(cap, int) and cap > 0 else 0)


def request_body(ctx: JobContext) -> dict[str, Any]:
    raw = ctx.input
    if not isinstance(raw, dict) or not raw.get("model") or "input" not in raw:
        raise InputError("input needs 'model' and 'input'")
    if bad := sorted(RESERVED & raw.keys()):
        raise InputError(f"these fields are set by Backlane and cannot be given: {', '.join(bad)}")
    body = dict(raw)
    tenant = ctx.job.tenant
    # a stable key routes every job of one type and tenant to the same prompt cache (and no two
    # tenants to one: a shared cache would let one tenant's timing hint at another's prompts)
    body.setdefault("prompt_cache_key", f"backlane:{ctx.job_type}" + (f":{tenant}" if tenant else ""))
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InputError("metadata must be an object of strings")
    body["metadata"] = {**metadata, "job_id": ctx.job_id}
    return body


class ResponseRun:
    def __init__(
        self, ctx: JobContext, client: openai.AsyncOpenAI, body: dict[str, Any], state: RunState,
    ) -> None:
        self.ctx = ctx
        self.client = client
        self.body = body
        self.follower = Follower(ctx, client, state, queued_timeout_s=ctx.settings.openai_queued_timeout_s)
        #: responses stuck in queued that this attempt replaced
        self.resubmits = 0
        #: the admitted call of the newest create (``openai:<model>``): its tokens are settled from the usage
        self.call: Call | None = None

    @property
    def state(self) -> RunState:
        return self.follower.state

    async def create(self, **extra: Any) -> openai.AsyncStream[Any]:
        model, prompt = self.body["model"], self.body["input"]
        rest = {k: v for k, v in self.body.items() if k not in ("model", "input")}
        try:
            # the model's resource admits the call (its requests and tokens, for every worker); a 429 or 5xx
            # raised here counts for its pause and breaker (compute/limits.py)
            async with self.ctx.limit(f"openai:{model}", tokens=estimate_tokens(self.body)) as self.call:
                stream: openai.AsyncStream[Any] = await self.client.responses.create(
                    model=model, input=prompt, stream=True, extra_body={**rest, **extra},
                )
        except openai.APIStatusError as exc:
            if extra.get("background") and refuses_background(exc):
                raise BackgroundRefused(exc.message) from exc
            raise
        return stream

    async def main(self) -> dict[str, Any]:
        try:
            return await self._main()
        except asyncio.CancelledError:
            # a cancel of the job stops the upstream response; a worker shutting down does not:
            # the next attempt resumes it
            if self.ctx.cancelled.is_set():
                await self.cancel_upstream()
            raise
        except openai.APIError as exc:
            raise from_api_error(exc) from exc

    async def _main(self) -> dict[str, Any]:
        state, mode = self.state, self.ctx.settings.openai_background
        if state.mode == "plain":  # an earlier attempt called without background mode
            return await self.plain(restarted=True)
        if state.response_id is not None:
            return await self.resume()
        if mode == "off":
            return await self.plain(restarted=False)
        try:
            return await self.background()
        except BackgroundRefused as exc:
            if mode == "on":
                raise InputError(f"the upstream refused background mode: {exc}") from None
            await self.ctx.progress(
                "the upstream has no background mode: streaming without it", step="upstream"
            )
            return await self.plain(restarted=False)

    async def background(self) -> dict[str, Any]:
        while True:
            stream = await self.create(background=True, store=True)
            self.state.created_ms = int(time.time() * 1000)
            try:
                return await self.finish(await self.follower.follow(stream))
            except StuckQueued:
                await self.resubmit()
            except ResponseGone:  # a resume or poll after a cut found it deleted or expired
                return await self.gone()

    async def resume(self) -> dict[str, Any]:
        state = self.state
        await self.ctx.progress(
            f"resuming OpenAI response {state.response_id} after event {state.cursor}", step="upstream"
        )
        stream: openai.AsyncStream[Any] | None = None
        try:
            stream = await self.follower.open_resume()
        except ResponseGone:
            return await self.gone()
        except (openai.APIConnectionError, openai.InternalServerError):
            stream = None  # follow() retries the resume
        if state.text:
            await self.ctx.output(state.text)  # the newest attempt's output is always complete
        try:
            return await self.finish(await self.follower.follow(stream))
        except StuckQueued:
            await self.resubmit()
            return await self.background()
        except ResponseGone:
            return await self.gone()

    def forget(self) -> RunState:
        """A fresh state that no longer names the current response but remembers it as replaced."""
        old = self.state
        replaced = [*old.replaced, old.response_id] if old.response_id else old.replaced
        return RunState(replaced=replaced[-REPLACED_KEPT:])

    async def resubmit(self) -> None:
        """Replaces a response stuck in queued. The checkpoint stops naming it *before* it is
        cancelled: otherwise a restart would resume the cancelled response, and the
        ``response.cancelled`` webhook of our own cancel would read as a cancel of the job."""
        stuck = self.state.response_id
        waited = time.time() - self.state.created_ms / 1000
        self.follower.state = self.forget()
        await self.follower.save()
        await self.cancel_upstream(stuck)
        self.resubmits += 1
        if self.resubmits > MAX_RESUBMITS:
            raise TransientError(
                f"OpenAI responses stuck in queued {self.resubmits} times in a row (the last, {stuck}, "
                f"for {waited:.0f} s): cancelled; the next attempt submits again"
            )
        await self.ctx.progress(
            f"OpenAI response {stuck} stuck in queued for {waited:.0f} s: cancelled, submitting again",
            step="upstream",
        )

    async def gone(self) -> NoReturn:
        """The upstream forgot the response: start clean on the next attempt (its output starts over)."""
        lost = self.state.response_id
        self.follower.state = self.forget()
        await self.follower.save()
        raise TransientError(f"OpenAI response {lost} is gone upstream; the next attempt calls again")

    async def plain(self, *, restarted: bool) -> dict[str, Any]:
        if restarted:
            await self.ctx.progress(
                "the upstream has no background mode, so this attempt calls it again from the start",
                step="upstream",
            )
        self.follower.state = RunState(mode="plain")
        await self.ctx.save_checkpoint(self.state.to_json())  # a restart knows it cannot resume
        try:
            final = await self.follower.consume(await self.create())
        except openai.APIConnectionError as exc:
            raise TransientError(f"OpenAI stream cut without background mode: {exc.message}") from exc
        if final is None:
            raise TransientError("OpenAI stream ended without a final event (no background mode to resume)")
        self.state.response_id = final.id
        await self.ctx.save_checkpoint(self.state.to_json())
        return await self.finish(final)

    async def finish(self, final: Any) -> dict[str, Any]:
        full = final.output_text
        if full and full.startswith(self.state.text) and len(full) > len(self.state.text):
            # the stream missed the end (the final answer came from a poll): emit what is left
            await self.ctx.output(full[len(self.state.text):])
            self.state.text = full
        usage = final.usage
        if usage is not None:
            details = usage.input_tokens_details
            await self.ctx.record_usage(
                model=final.model or self.body["model"], input_tokens=usage.input_tokens or 0,
                output_tokens=usage.output_tokens or 0,
                cached_tokens=(details.cached_tokens or 0) if details is not None else 0, request_id=final.id,
            )
            if self.call is not None:
                await self.call.settle_tokens((usage.input_tokens or 0) + (usage.output_tokens or 0))
        await self.follower.set_status(final.status)
        if (failure := from_response(final)) is not None:
            raise failure
        return {
            "response_id": final.id, "output_text": full or self.state.text, "model": final.model,
            "status": final.status,
        }

    async def cancel_upstream(self, response_id: str | None = None) -> None:
        """Best effort: a cancel that fails leaves a response that finishes on its own, unread.
        ``response_id``: one the checkpoint no longer names (default: the current one)."""
        response_id = response_id or self.state.response_id
        if response_id is None or self.state.mode != "background":
            return
        with contextlib.suppress(openai.APIError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.client.responses.cancel(response_id)), 5.0)


@job_type("openai.responses", policy=OPENAI_RESPONSES)
async def openai_responses(ctx: JobContext) -> dict[str, Any]:
    """One OpenAI Responses call, streamed; resumes the same upstream response after a restart."""
    body = request_body(ctx)
    state = RunState.from_json(await ctx.load_checkpoint()) or RunState()
    async with make_client(ctx.settings) as client:
        # one durable step: once it completed, a later attempt (the job's end was lost) gets its result
        # back; until then, the checkpoint resumes the same upstream response inside it
        result: dict[str, Any] = await ctx.step("response", ResponseRun(ctx, client, body, state).main)
        return result
