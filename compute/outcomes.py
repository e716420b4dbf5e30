"""How an attempt's end becomes a status change: complete, review, applied, retry, or fail.

Each is one fenced ``transition``; if the attempt lost its lease meanwhile, Redis refuses it.
"""

from __future__ import annotations

import hashlib
import logging
import random
from typing import Any

import orjson

from shared.jobs import JobStore, TransitionResult
from shared.jobtypes import JobTypePolicy
from shared.serialization import dumps, loads, now_ms, rfc3339

from .context import JobContext
from .errors import Failure

log = logging.getLogger("backlane.worker")


def action_hash(result: Any) -> str:
    """The hash a reviewer's approval is bound to: sha256 of the proposed result, canonical JSON."""
    return hashlib.sha256(orjson.dumps(result, option=orjson.OPT_SORT_KEYS)).hexdigest()


def backoff_s(
    policy: JobTypePolicy, attempt: int, retry_after: float | None, rng: random.Random | None = None
) -> float:
    """base · 2^(n-1) with ±25 % jitter, capped; a provider's Retry-After wins."""
    if retry_after is not None:
        return retry_after
    base = min(policy.retry_cap_s, policy.retry_base_s * 2 ** max(0, attempt - 1))
    jitter: float = (rng or random).random() * 0.5 - 0.25
    return float(min(policy.retry_cap_s, base * (1 + jitter)))


def _usage_fields(ctx: JobContext) -> dict[str, Any]:
    return {"usage": dumps(ctx.usage)} if any(v is not None for v in ctx.usage.values()) else {}


class Outcomes:
    def __init__(self, store: JobStore) -> None:
        self.store = store

    async def _move(self, ctx: JobContext, target: str, **kw: Any) -> TransitionResult:
        result = await self.store.transition(ctx.job_id, ctx.job_type, target, token=ctx.token, **kw)
        if result.ok and any(v is not None for v in ctx.usage.values()):
            # tokens by type for /metrics (the cached-token ratio): what this attempt consumed
            pipe = self.store.redis.pipeline(transaction=False)
            for kind, value in ctx.usage.items():
                if value:
                    pipe.hincrby(self.store.keys.counts, f"tokens|{ctx.job_type}|{kind}", int(value))
            await pipe.execute()
        if not result.ok:
            log.warning("job %s attempt %d: %s refused (%s, now %s)", ctx.job_id, ctx.attempt, target,
                        result.outcome, result.current)
        return result

    async def finished(self, ctx: JobContext, value: Any) -> TransitionResult:
        fields = {"result": dumps(value), **_usage_fields(ctx)}
        if ctx.record.get("review_required") == "1":
            digest = action_hash(value)
            return await self._move(ctx, "needs_review", event={"result": value, "action_hash": digest},
                                    fields={**fields, "action_hash": digest})
        return await self._move(ctx, "completed", event={"result": value}, fields=fields)

    async def applied(self, ctx: JobContext, value: Any) -> TransitionResult:
        """The apply step ran after approval: the job is done and says what was applied, when, by whom."""
        by = loads(ctx.record["review_by"]) if ctx.record.get("review_by") else None
        applied = {"what": value, "at": rfc3339(now_ms()), "by": by}
        result = loads(ctx.record["result"]) if ctx.record.get("result") else None
        return await self._move(ctx, "completed", event={"reason": "applied", "applied": applied, "result": result},
                                fields={"applied": dumps(applied)})

    async def canceled(self, ctx: JobContext) -> TransitionResult:
        return await self._move(ctx, "canceled", event={"reason": "canceled by request"})

    async def handed_back(self, ctx: JobContext) -> TransitionResult:
        """A draining worker gives the job back; the attempt does not count against max_attempts."""
        return await self._move(ctx, "queued", event={"reason": "worker_shutdown"}, fields={"+released": 1})

    async def failed(self, ctx: JobContext, failure: Failure, policy: JobTypePolicy) -> TransitionResult:
        record = ctx.record
        counted = ctx.attempt - int(record.get("released") or 0)
        may_retry = failure.retryable or (failure.error_class == "deadline" and policy.retry_on_deadline)
        error = {"class": failure.error_class, "message": failure.message[:2000],
                 "retryable": may_retry, "attempt": ctx.attempt}
        if may_retry and counted < int(record["max_attempts"]):
            delay = backoff_s(policy, counted, failure.retry_after)
            delay_ms = int(delay * 1000)
            await self.store.redis.hincrby(self.store.keys.stats, f"retries|{ctx.job_type}", 1)
            return await self._move(
                ctx, "queued", ready_at_ms=now_ms() + delay_ms,
                event={"reason": "retry", "error": error, "retry_in_ms": delay_ms},
                fields={"last_error": dumps(error), **_usage_fields(ctx)},
            )
        return await self._move(ctx, "failed", event={"reason": failure.error_class, "error": error},
                                fields={"error": dumps(error), **_usage_fields(ctx)})
