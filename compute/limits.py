"""``ctx.limit(name, tokens=...)``: a call to a named resource goes when the resource admits it.

    async with ctx.limit("openai:gpt-4.1-mini", tokens=1200) as call:
        reply = await client.responses.create(...)
        call.tokens = reply.usage.total_tokens        # optional: the real count, settled after

    admit.lua ──refused──▶ a progress note and waiting_for (once) ─▶ sleep the wait ─▶ admit again
        │ admitted
        ▼
    the block ──returns──▶ settle.lua: ok, the real tokens (skipped when there is nothing to tell)
              ──raises───▶ settle.lua: a Retry-After pauses the resource for every worker; another
                           transient failure counts towards the breaker. If the resource now waits
                           (paused, breaker open), the context's ``resource_wait`` says until when:
                           the worker hands the attempt back until then, uncounted (outcomes.py).

A resource that no operator configured (``BACKLANE_RESOURCES``) has no limits: the block just runs.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.limiter import REASONS, Admission, Limiter
from shared.resources import ResourceLimit
from shared.serialization import dumps, now_ms, rfc3339

from .errors import classify

if TYPE_CHECKING:
    from .context import JobContext

_calls = itertools.count(1)


@dataclass(frozen=True)
class ResourceWait:
    """A resource the attempt cannot use before ``until_ms`` (a pause, an open breaker)."""

    resource: str
    until_ms: int
    reason: str

    def waiting_for(self, since_ms: int) -> dict[str, str | None]:
        return waiting_for(self.resource, self.reason, self.until_ms, since_ms)


def waiting_for(resource: str, reason: str, until_ms: int | None, since_ms: int) -> dict[str, str | None]:
    """The job record's ``waiting_for``."""
    return {"resource": resource, "reason": reason, "until": rfc3339(until_ms) if until_ms else None,
            "since": rfc3339(since_ms)}


@dataclass
class Call:
    """One call to a resource. Set ``tokens`` to the real count once known (it replaces the estimate);
    ``fail()`` says the call failed transiently without raising (an HTTP 429 or 5xx seen below a client
    that raises later)."""

    resource: str
    tokens: int | None = None
    failure: tuple[bool, float | None] | None = None
    _limiter: Limiter | None = None
    _spec: ResourceLimit | None = None
    member: str = ""

    def fail(self, *, retry_after: float | None = None) -> None:
        self.failure = (True, retry_after)

    async def settle_tokens(self, tokens: int) -> None:
        """The real count, known after the block ended (a stream's usage comes with its last event)."""
        if self._limiter is not None and self._spec is not None and self.member:
            await self._limiter.settle(self._spec, self.member, tokens=tokens)


@asynccontextmanager
async def limit(ctx: JobContext, resource: str, tokens: int = 0) -> AsyncIterator[Call]:
    call = Call(resource)
    spec = ctx.settings.resources.get(resource)
    if spec is None:
        yield call
        return
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"tokens must be a non-negative int, got {tokens!r}")
    limiter = ctx.store.limiter
    call_id = f"{ctx.job_id}:{ctx.attempt}:{next(_calls)}"
    admission = await _admitted(ctx, spec.name, lambda waited: limiter.admit(
        spec, call_id, tokens, ctx.job_id, waited))
    call._limiter, call._spec, call.member = limiter, spec, admission.member
    try:
        yield call
    except Exception as exc:
        failure = classify(exc)
        await _settle(ctx, call, admission, failure.retryable, failure.retry_after)
        raise
    except BaseException:  # cancelled: a probe that never finished lets another caller probe
        if admission.failures < 0:
            await asyncio.shield(limiter.settle(spec, admission.member, outcome="none"))
        raise
    if call.failure is not None:
        await _settle(ctx, call, admission, *call.failure)
        return
    ctx.resource_wait = None
    if admission.failures != 0 or call.tokens is not None:
        await limiter.settle(spec, admission.member, tokens=call.tokens, outcome="ok")


async def _settle(ctx: JobContext, call: Call, admission: Admission, retryable: bool,
                  retry_after: float | None) -> None:
    """A failed call: a Retry-After pauses the resource, another transient failure counts towards its
    breaker; the context learns when the resource admits calls again, if not now."""
    assert call._limiter is not None and call._spec is not None
    limiter, spec, now = call._limiter, call._spec, now_ms()
    if retryable and retry_after is not None:
        pause_s = min(retry_after, ctx.settings.max_retry_after_s)
        settled = await limiter.settle(spec, admission.member, tokens=call.tokens, outcome="pause",
                                       pause_until_ms=now + int(pause_s * 1000))
    elif retryable:
        settled = await limiter.settle(spec, admission.member, tokens=call.tokens, outcome="fail")
    else:
        if admission.failures < 0 or call.tokens is not None:
            await limiter.settle(spec, admission.member, tokens=call.tokens, outcome="none")
        return
    waits = settled.waits_until(now)
    if waits is not None:
        ctx.resource_wait = ResourceWait(spec.name, waits[0], waits[1])


async def _admitted(ctx: JobContext, resource: str, ask: Callable[[bool], Awaitable[Admission]]) -> Admission:
    """Asks until admitted; the first refusal is noted on the job (a progress event, ``waiting_for``),
    and the note cleared once admitted."""
    since: int | None = None
    while True:
        admission = await ask(since is not None)
        if admission.admitted:
            if since is not None:
                await ctx.note_waiting(None)
            return admission
        if since is None:
            since = now_ms()
            until = since + admission.wait_ms
            await ctx.progress(f"waiting for {resource}: {REASONS.get(admission.reason, admission.reason)}")
            await ctx.note_waiting(dumps(waiting_for(resource, admission.reason, until, since)))
        await asyncio.sleep(admission.wait_ms / 1000)
