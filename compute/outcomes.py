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

    async def finished(self, ctx: JobContext, value: Any, policy: JobTypePolicy) -> TransitionResult:
        fields = {"result": dumps(value), **_usage_fields(ctx)}
        if ctx.record.get("review_required") == "1":
            digest = action_hash(value)
            # kept on the job so that the supervisor, finding the apply step's worker lost, knows
            # whether running it again is safe (expire_lease.lua)
            once = {} if not policy.apply_idempotent else {"apply_idempotent": "1"}
            return await self._move(ctx, "needs_review", event={"result": value, "action_hash": digest},
                                    fields={**fields, "action_hash": digest, **once})
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

    @staticmethod
    def retried_after_deadline(ctx: JobContext, policy: JobTypePolicy, *, apply_phase: bool) -> bool:
        """Whether an attempt that runs past the type's timeout is followed by another: the rule
        ``failed`` applies to a ``deadline`` failure, known before the timeout fires."""
        if apply_phase and not policy.apply_idempotent:
            return False
        return policy.retry_on_deadline and _counted(ctx) < int(ctx.record["max_attempts"])

    async def failed(
        self, ctx: JobContext, failure: Failure, policy: JobTypePolicy, *, apply_phase: bool = False
    ) -> TransitionResult:
        if apply_phase and not policy.apply_idempotent:
            return await self.apply_interrupted(ctx, failure.error_class, f"the apply step failed ({failure.message})")
        counted = _counted(ctx)
        may_retry = failure.retryable or (failure.error_class == "deadline" and policy.retry_on_deadline)
        error = {"class": failure.error_class, "message": failure.message[:2000],
                 "retryable": may_retry, "attempt": ctx.attempt}
        if may_retry and counted < int(ctx.record["max_attempts"]):
            event: dict[str, Any] = {"reason": "retry", "error": error}
            retry_after, cap = failure.retry_after, self.store.settings.max_retry_after_s
            if retry_after is not None and retry_after > cap:
                # a provider's date far in the future must not park the job for years
                event["note"] = (f"the provider's Retry-After of {retry_after:.0f} s was clamped to "
                                 f"BACKLANE_MAX_RETRY_AFTER_S ({cap:g} s)")
                retry_after = cap
            delay_ms = int(backoff_s(policy, counted, retry_after) * 1000)
            event["retry_in_ms"] = delay_ms
            await self.store.redis.hincrby(self.store.keys.stats, f"retries|{ctx.job_type}", 1)
            return await self._move(
                ctx, "queued", ready_at_ms=now_ms() + delay_ms, event=event,
                fields={"last_error": dumps(error), **_usage_fields(ctx)},
            )
        return await self._move(ctx, "failed", event={"reason": failure.error_class, "error": error},
                                fields={"error": dumps(error), **_usage_fields(ctx)})

    async def apply_interrupted(self, ctx: JobContext, error_class: str, what: str) -> TransitionResult:
        """An apply step that is not idempotent failed or was cut off: it may have changed the world,
        so it is never run again on its own; a person checks (by the idempotency key) and decides."""
        message = (f"{what}; it may have taken effect — check before retrying "
                   f"(idempotency key {ctx.idempotency_key})")
        error = {"class": error_class, "message": message[:2000], "retryable": False, "attempt": ctx.attempt}
        return await self._move(ctx, "failed", event={"reason": "apply_interrupted", "error": error},
                                fields={"error": dumps(error), **_usage_fields(ctx)})


def _counted(ctx: JobContext) -> int:
    """Attempts that count against max_attempts: a drain's hand-back (``released``) does not."""
    return ctx.attempt - int(ctx.record.get("released") or 0)
