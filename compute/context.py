"""``JobContext``: a handler's only handle on the world.

Writes are fenced with the attempt's lease token. Output and progress are coalesced: while one
append is in flight, later events wait in a buffer and go together in the next call (one round
trip for many events, each still its own event with its own seq, in order). What steps and model
calls record (``compute/steps.py``, ``compute/usage.py``) waits in the same buffer, so it reaches
Redis in order with the output around it, each record in a fenced write of its own (``record.lua``).

    output / progress ──┐
    step / usage record ┴─▶ pending ─▶ flush loop: runs of events → append.lua, a record → record.lua

Through a Redis outage the flush loop keeps trying (``shared/ride_through.py``, up to
``BACKLANE_REDIS_OUTAGE_S``) while the handler runs on: its events wait in ``pending``, and a handler
that gets ``MAX_PENDING`` ahead waits for Redis. Every call names the attempt-local index of what it
writes, so a call whose reply was lost and is sent again writes nothing twice. The attempt ends only
when Redis refuses its token (``LeaseLost``) or stays away longer than the outage allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, cast

from shared.job import Job
from shared.serialization import now_ms
from shared.settings import Settings

from .leases import Attempts, CallUsage, LeaseLost, Record, Started
from .limits import Call, ResourceWait, limit
from .spans import Span, attempt_span_id
from .steps import Retry, Steps, current

if TYPE_CHECKING:
    import openai

    from shared.jobs import JobStore


MAX_BATCH = 500  # events in one append call
MAX_PENDING = 2000  # a handler that outruns Redis waits here instead of growing the buffer


def apply_key(job: Job) -> str:
    """The apply step's idempotency key for the system it changes: the same on every try of one
    approval (``<job id>:<action_hash>``)."""
    return f"{job.id}:{job.action_hash or ''}"


class JobContext:
    def __init__(self, attempts: Attempts, started: Started, settings: Settings) -> None:
        job = started.job
        self.job_id: str = started.job_id
        self.job_type: str = job.type
        self.attempt: int = started.attempt
        self.input: Any = job.input
        self.metadata: dict[str, Any] | None = job.metadata
        self.settings = settings
        #: set when this job is ending for good: a cancel was requested, or the type's timeout passed with
        #: no retry to follow. Stop soon (the task is cancelled too) and release upstream work.
        self.cancelled = asyncio.Event()
        #: the job as this attempt's start left it
        self.job = job
        #: the attempt runs the apply step of an approved job, not its handler
        self.apply_phase = job.phase == "apply"
        #: the apply step's key for the system it changes: the same on every try of this approval
        self.idempotency_key: str | None = apply_key(job) if self.apply_phase else None
        self.usage: dict[str, int | None] = {"input_tokens": None, "output_tokens": None, "cached_tokens": None}
        self._attempts = attempts
        self._token = started.token
        self._emitted = 0
        self._records = 0
        self._checkpoints = 0
        self._pending: list[tuple[str, dict[str, Any]] | Record] = []
        self._steps = Steps(self)
        self._calls = 0
        self._openai: openai.AsyncOpenAI | None = None
        #: called with each span as it ends (the OTLP export, when configured)
        self.on_span_end: Callable[[Span], None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        #: a resource this attempt found paused (or its breaker open) as a call failed: a retryable
        #: failure then hands the job back until then, uncounted (compute/limits.py)
        self.resource_wait: ResourceWait | None = None

    @property
    def token(self) -> int:
        return self._token

    @property
    def store(self) -> JobStore:
        """The job store (``shared/jobs.py``) this attempt writes through."""
        return self._attempts.store

    def limit(self, resource: str, *, tokens: int = 0) -> AbstractAsyncContextManager[Call]:
        """``async with ctx.limit("openai:gpt-4.1-mini", tokens=estimate) as call:`` waits until the
        resource's limits (BACKLANE_RESOURCES) admit one more call of about ``tokens``, across every
        worker; ``call.tokens = real`` settles the real count. A Retry-After raised inside pauses the
        resource for every worker (``compute/limits.py``)."""
        return limit(self, resource, tokens)

    async def note_waiting(self, waiting_for: str | None) -> None:
        """Sets (JSON) or clears (None) the job's ``waiting_for``; fenced."""
        await self._attempts.note_wait(self.job_id, self._token, waiting_for or "")

    async def output(self, text: str) -> None:
        if text:
            frame = current.get()
            if frame is not None:
                frame.capture(text)  # kept with the step, emitted again when a later attempt replays it
            await self._emit("output", {"text": text})

    async def progress(self, message: str, *, step: str | None = None, fraction: float | None = None) -> None:
        body: dict[str, Any] = {"message": message}
        if step is not None:
            body["step"] = step
        if fraction is not None:
            body["fraction"] = round(min(1.0, max(0.0, fraction)), 4)
        await self._emit("progress", body)

    async def load_checkpoint(self) -> Any | None:
        store = self._attempts.store
        return await self._attempts.ride.call(lambda: store.checkpoint(self.job_id), "checkpoint read")

    async def save_checkpoint(self, value: Any) -> None:
        await self.flush()
        self._checkpoints += 1
        await self._attempts.save_checkpoint(self.job_id, self._token, value, self._checkpoints)

    async def index_upstream(self, object_id: str) -> None:
        """Points ``Keys.openai_object(object_id)`` at this job for the retention: the API then finds
        the job of an incoming OpenAI webhook without asking the upstream (a hint; the checkpoint decides)."""
        store = self._attempts.store
        await self._attempts.ride.call(lambda: store.redis.set(
            store.keys.openai_object(object_id), self.job_id, px=store.retention_ms), "upstream index")

    async def step(self, name: str, fn: Callable[..., Any], *args: Any, retry: Retry | int | None = None,
                   timeout_s: float | None = None, **kwargs: Any) -> Any:
        """Runs ``fn(*args, **kwargs)`` (async, or sync in a thread) as one durable step and returns its
        result, which must be JSON. A later attempt of this job that reaches the same step (by name and
        occurrence) gets the stored result back and its output emitted again, without calling ``fn``.
        ``retry`` (a ``Retry`` or a number of tries) tries a transient failure again inside the attempt;
        ``timeout_s`` bounds each try (a try past it fails as transient). See ``compute/steps.py``."""
        return await self._steps.run(name, fn, args, kwargs, retry=retry, timeout_s=timeout_s)

    async def record_usage(
        self, *, model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0,
        latency_ms: int | None = None, request_id: str | None = None, batch: bool = False,
    ) -> None:
        """Records one model call (for a provider whose calls ``ctx.openai`` does not see): a span in the
        trace under the running step, its tokens and, when the model has a price, its cost. ``batch``:
        made through a Batch API (its discount applies)."""
        counts = {"input_tokens": input_tokens, "cached_tokens": cached_tokens, "output_tokens": output_tokens}
        for what, n in counts.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"{what} must be a non-negative int, got {n!r}")
        if not isinstance(model, str) or not model:
            raise ValueError("model must name the model")
        model = model.replace("|", "/")[:200]  # the /metrics counters are keyed by it, '|'-separated
        end = now_ms()
        frame = current.get()
        self._calls += 1
        cost = self.settings.prices.cost_nusd(model, input_tokens=input_tokens, cached_tokens=cached_tokens,
                                              output_tokens=output_tokens, batch=batch)
        attributes: dict[str, Any] = {"gen_ai.request.model": model, "gen_ai.usage.input_tokens": input_tokens,
                                      "gen_ai.usage.output_tokens": output_tokens,
                                      "gen_ai.usage.cached_tokens": cached_tokens, "priced": cost is not None}
        if latency_ms is not None:
            attributes["latency_ms"] = latency_ms
        if request_id:
            attributes["request_id"] = request_id
        if batch:
            attributes["batch"] = True
        span = Span(id=f"{self.attempt}:llm:{self._calls}",
                    parent_id=frame.span_id if frame else attempt_span_id(self.attempt), kind="llm", name=model,
                    attempt=self.attempt, start=end - (latency_ms or 0), end=end, status="ok",
                    attributes=attributes, usage=counts, cost_nusd=cost)
        usage = CallUsage(model=model, step=frame.key if frame else "-", input_tokens=input_tokens,
                          cached_tokens=cached_tokens, output_tokens=output_tokens, cost_nusd=cost)
        await self.write(Record(span_id=span.id, span=span.to_json(), usage=usage))
        self.span_ended(span)

    async def set_usage(
        self, *, input_tokens: int | None = None, output_tokens: int | None = None, cached_tokens: int | None = None
    ) -> None:
        """The attempt's usage so far, without a model (kept for handlers written before
        ``record_usage``): what grew since the last call is recorded as a call of model
        ``unspecified``, counted in tokens with no price."""
        delta: dict[str, int] = {}
        for name, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens),
                            ("cached_tokens", cached_tokens)):
            if value is not None:
                delta[name] = max(0, int(value) - (self.usage[name] or 0))
                self.usage[name] = value
        if any(delta.values()):
            await self.record_usage(model="unspecified", input_tokens=delta.get("input_tokens", 0),
                                    output_tokens=delta.get("output_tokens", 0),
                                    cached_tokens=delta.get("cached_tokens", 0))

    @property
    def openai(self) -> openai.AsyncOpenAI:
        """An OpenAI SDK client for this attempt, configured from the worker's settings (no SDK
        retries: use a step's ``retry=``, or ``with_options(max_retries=n)`` for reads); every call
        through it, streaming included, is recorded as a model call in the trace. Closed when the
        attempt ends."""
        if self._openai is None:
            from .usage import recording_client  # the SDK is imported by the jobs that use it

            self._openai = recording_client(self)
        return self._openai

    async def aclose(self) -> None:
        """Releases what the attempt opened (the OpenAI client)."""
        client, self._openai = self._openai, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    async def write(self, record: Record) -> None:
        """Queues one fenced record (a step's result, a span, a call's usage) in order with the output."""
        self._raise_if_failed()
        self._pending.append(record)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())

    async def read_steps(self) -> dict[str, str]:
        """The job's steps hash as earlier attempts left it."""
        store = self._attempts.store
        steps = await self._attempts.ride.call(lambda: store.redis.hgetall(store.keys.steps(self.job_id)), "steps read")
        return cast(dict[str, str], steps)

    def span_ended(self, span: Span) -> None:
        if self.on_span_end is not None:
            self.on_span_end(span)

    async def traced(self, kind: Any, name: str, call: Callable[[], Any]) -> Any:
        """Runs ``call()`` as one span of its own under the attempt (the apply step)."""
        span = Span(id=f"{self.attempt}:{kind}", parent_id=attempt_span_id(self.attempt), kind=kind, name=name,
                    attempt=self.attempt, start=now_ms())
        await self.write(Record(span_id=span.id, span=span.to_json()))
        try:
            value = await call()
        except BaseException as exc:
            span.end, span.status = now_ms(), "error"
            span.attributes["error.message"] = str(exc)[:500] or type(exc).__name__
            with contextlib.suppress(Exception):
                await self.write(Record(span_id=span.id, span=span.to_json()))
            self.span_ended(span)
            raise
        span.end, span.status = now_ms(), "ok"
        await self.write(Record(span_id=span.id, span=span.to_json()))
        self.span_ended(span)
        return value

    async def flush(self) -> None:
        """Waits until every event emitted so far is in Redis; raises LeaseLost when it never will be."""
        while True:
            self._raise_if_failed()
            if self._flusher is not None and not self._flusher.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._flusher)
                continue
            if not self._pending:
                self._raise_if_failed()
                return
            self._flusher = asyncio.create_task(self._flush_loop())

    def discard(self) -> None:
        """Drops what is not written yet (the attempt is over and may not write any more)."""
        self._pending.clear()
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    async def _emit(self, event_type: str, body: dict[str, Any]) -> None:
        self._raise_if_failed()
        self._pending.append((event_type, body))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())
        if len(self._pending) >= MAX_PENDING:
            await self.flush()

    async def _flush_loop(self) -> None:
        try:
            while self._pending:
                head = self._pending[0]
                if isinstance(head, Record):
                    self._emitted = await self._attempts.record(self.job_id, self._token, self._records, head)
                    self._records += 1
                    del self._pending[0]
                    continue
                batch: list[tuple[str, dict[str, Any]]] = []
                for item in self._pending[:MAX_BATCH]:
                    if isinstance(item, Record):
                        break
                    batch.append(item)
                self._emitted = await self._attempts.append(self.job_id, self._token, self._emitted, batch)
                del self._pending[: len(batch)]
        except LeaseLost as exc:
            self._error = exc
            self._pending.clear()
        except Exception as exc:  # Redis away for longer than the outage allowed: the attempt cannot go on
            self._error = exc


__all__ = ["JobContext", "LeaseLost", "Retry"]
