"""Durable steps: ``result = await ctx.step(name, fn, *args, retry=None, timeout_s=None, **kwargs)``.

    ctx.step("outline", fn)        the n-th step of that name in the attempt: key "outline#n"
      ├─ an earlier attempt completed "outline#n" (the job's steps hash holds its result)
      │     └─ replay: span `replayed`, event `replayed`, the step's output emitted again;
      │        the stored result is returned and fn is not called
      └─ run: span `running`, event `started`
            ├─ try fn(*args, **kwargs) (async, or sync in a thread), each try within timeout_s
            │     └─ transient failure and tries left (retry=) → event `retrying`, back-off, try again
            ├─ failure → span `error`, event `failed`; the exception goes on and its class decides
            └─ result (must be JSON) → stored with the step's output, span `ok`, event `completed`:
               one fenced write (record.lua), so a result is stored only by the attempt holding the lease

Replay is by order: a handler that calls its steps in the same order on every attempt gets the
results of the completed ones back and runs the first one not completed for real. Every write goes
through the context's queue, in order with the output around it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from shared.serialization import loads, now_ms

from .errors import InternalError, TransientError, classify
from .leases import Record
from .spans import Span, attempt_span_id

if TYPE_CHECKING:
    from .context import JobContext

#: a step name is at most this long
MAX_NAME = 200
#: strict JSON: a dataclass, a datetime, a non-string key, … is refused rather than turned into
#: something else, so a replayed result is exactly what the step returned
_JSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS


@dataclass(frozen=True)
class Retry:
    """A step's own retries: up to ``tries`` tries in all, waiting ``backoff_s · 2^(n-1)`` (±25 %
    jitter, at most ``max_backoff_s``; a provider's Retry-After wins) after the n-th failed one.
    Only transient failures are tried again."""

    tries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if self.tries < 1 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("Retry needs tries ≥ 1 and non-negative back-off")

    def delay_s(self, failed_tries: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        base = min(self.max_backoff_s, self.backoff_s * 2 ** max(0, failed_tries - 1))
        return float(min(self.max_backoff_s, base * (1 + random.random() * 0.5 - 0.25)))


class StepTimeout(TransientError):
    """A try of a step ran past its ``timeout_s``."""


@dataclass
class Frame:
    """A step running in this task: model calls made in it belong to it, its output is kept with it."""

    key: str
    span_id: str
    parent: Frame | None
    output: list[str] = field(default_factory=list)

    def capture(self, text: str) -> None:
        frame: Frame | None = self
        while frame is not None:  # a step's output includes that of the steps inside it
            frame.output.append(text)
            frame = frame.parent


#: the innermost step running in the current task (asyncio copies it into the tasks a step starts)
current: contextvars.ContextVar[Frame | None] = contextvars.ContextVar("backlane_step", default=None)


def encode_result(name: str, value: Any) -> str:
    try:
        return orjson.dumps(value, option=_JSON_OPTIONS).decode()
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InternalError(f"step {name!r} returned a value that is not JSON ({exc}): a step's result is "
                            f"stored for later attempts, so it must be JSON (dicts, lists, str, numbers, "
                            f"bool, None)") from None


def _retry_policy(retry: Retry | int | None) -> Retry:
    if retry is None:
        return Retry(tries=1)
    if isinstance(retry, bool) or not isinstance(retry, int | Retry):
        raise TypeError("retry must be a Retry or a number of tries")
    return retry if isinstance(retry, Retry) else Retry(tries=retry)


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    target = fn.func if isinstance(fn, functools.partial) else fn
    if inspect.iscoroutinefunction(target):
        return await fn(*args, **kwargs)
    # a sync function runs in a thread: it must not stop the loop that keeps the lease alive
    value = await asyncio.to_thread(fn, *args, **kwargs)
    return await value if inspect.isawaitable(value) else value


class Steps:
    """The steps of one attempt: occurrences, the results earlier attempts stored, the spans."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.occurrences: dict[str, int] = {}
        self._stored: dict[str, dict[str, Any]] | None = None

    async def stored(self) -> dict[str, dict[str, Any]]:
        """The steps earlier attempts completed, read once (only this attempt may add to them now)."""
        if self._stored is None:
            raw = await self.ctx.read_steps()
            self._stored = {k[2:]: loads(v) for k, v in raw.items() if k.startswith("r:")}
        return self._stored

    def _key(self, name: str) -> str:
        if not isinstance(name, str) or not name or len(name) > MAX_NAME:
            raise ValueError(f"a step name is a non-empty string of at most {MAX_NAME} characters")
        n = self.occurrences[name] = self.occurrences.get(name, 0) + 1
        return f"{name}#{n}"

    async def run(self, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], *,
                  retry: Retry | int | None, timeout_s: float | None) -> Any:
        policy = _retry_policy(retry)
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError("timeout_s must be a positive number of seconds")
        key = self._key(name)
        occurrence = int(key.rpartition("#")[2])
        ctx, parent = self.ctx, current.get()
        parent_id = parent.span_id if parent else attempt_span_id(ctx.attempt)
        span = Span(id=f"{ctx.attempt}:step:{key}", parent_id=parent_id, kind="step", name=name,
                    attempt=ctx.attempt, start=now_ms(), attributes={"step.key": key, "step.occurrence": occurrence})
        done = (await self.stored()).get(key)
        if done is not None:
            return await self._replay(span, occurrence, done)
        await ctx.write(Record(span_id=span.id, span=span.to_json(),
                               events=[("step", {"name": name, "occurrence": occurrence, "state": "started"})]))
        tries, started = 0, time.monotonic()
        while True:
            tries += 1
            frame = Frame(key, span.id, parent)
            token = current.set(frame)
            try:
                value = await self._try(name, fn, args, kwargs, timeout_s)
                encoded = encode_result(name, value)
            except Exception as exc:
                failure = classify(exc)
                if failure.retryable and tries < policy.tries and not isinstance(exc, InternalError):
                    delay = policy.delay_s(tries, failure.retry_after)
                    span.attributes["step.tries"] = tries + 1
                    await ctx.write(Record(span_id=span.id, span=span.to_json(), events=[("step", {
                        "name": name, "occurrence": occurrence, "state": "retrying", "try": tries,
                        "retry_in_ms": int(delay * 1000), "error": failure.message[:500]})]))
                    await asyncio.sleep(delay)
                    continue
                duration = int((time.monotonic() - started) * 1000)
                span.end, span.status = now_ms(), "error"
                span.attributes.update({"error.class": failure.error_class, "error.message": failure.message[:500]})
                await ctx.write(Record(span_id=span.id, span=span.to_json(), events=[("step", {
                    "name": name, "occurrence": occurrence, "state": "failed", "duration_ms": duration,
                    "error": failure.message[:500]})]))
                ctx.span_ended(span)
                raise
            finally:
                current.reset(token)
            duration = int((time.monotonic() - started) * 1000)
            span.end, span.status = now_ms(), "ok"
            output = "".join(frame.output)
            stored = (f'{{"result":{encoded},"output":{orjson.dumps(output).decode()},'
                      f'"attempt":{ctx.attempt},"duration_ms":{duration}}}')
            await ctx.write(Record(step_field=f"r:{key}", step_value=stored, span_id=span.id, span=span.to_json(),
                                   events=[("step", {"name": name, "occurrence": occurrence, "state": "completed",
                                                     "duration_ms": duration})]))
            ctx.span_ended(span)
            return loads(encoded)

    async def _try(self, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                   timeout_s: float | None) -> Any:
        if timeout_s is None:
            return await _call(fn, args, kwargs)
        timeout = asyncio.timeout(timeout_s)
        try:
            async with timeout:
                return await _call(fn, args, kwargs)
        except TimeoutError:
            if timeout.expired():
                raise StepTimeout(f"step {name!r} ran longer than its timeout of {timeout_s:g} s") from None
            raise

    async def _replay(self, span: Span, occurrence: int, done: dict[str, Any]) -> Any:
        """An earlier attempt completed this step: its result and output, and no call."""
        ctx = self.ctx
        span.end, span.status = span.start, "replayed"
        span.attributes.update({"step.replayed_from_attempt": done.get("attempt"),
                                "step.duration_ms": done.get("duration_ms")})
        events: list[tuple[str, dict[str, Any]]] = [("step", {
            "name": span.name, "occurrence": occurrence, "state": "replayed",
            "duration_ms": done.get("duration_ms"), "from_attempt": done.get("attempt")})]
        await ctx.write(Record(span_id=span.id, span=span.to_json(), events=events))
        # the output goes the way all output goes, after the event (and into a step running around this one)
        await ctx.output(done.get("output") or "")
        ctx.span_ended(span)
        return done.get("result")
