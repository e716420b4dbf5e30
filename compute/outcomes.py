"""How an attempt's end becomes a status change: complete, review, applied, retry, or fail.

Each is one fenced ``transition``; if the attempt lost its lease meanwhile, Redis refuses it. Each
waits out a Redis outage however long it lasts (``shared/ride_through.py``): the attempt is over, and
while its worker beats nobody else may record how it ended. A change sent again after its reply was
lost finds it made and is refused (the job is no longer ``running`` under this token). Each change
that happened, and each refusal, is one log line (``shared/logs.py``: ``job.completed``, …).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from typing import Any

import orjson

from shared.jobs import JobStore, Outcome, TransitionResult
from shared.jobtypes import JobTypePolicy
from shared.logs import job_event
from shared.ride_through import RideThrough
from shared.schemas import ErrorClass, ErrorInfo, error_info
from shared.serialization import dumps, now_ms, rfc3339

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


def apply_at_most_once(ctx: JobContext, policy: JobTypePolicy) -> bool:
    """Whether the attempt runs an apply step that must not run twice: a failure, a timeout or a lost
    worker during it fails the job for a person to check instead of retrying. The finished handler
    records the type's choice on the job, so the supervisor's expire_lease.lua applies the same rule."""
    return ctx.apply_phase and not policy.apply_idempotent


#: the log event of each ending, by the status it moves to (for queued, by its reason)
EVENTS = {"completed": "job.completed", "needs_review": "job.needs_review", "failed": "job.failed",
          "canceled": "job.canceled", "retry": "job.retried", "worker_shutdown": "job.handed_back"}
MESSAGES = {"job.completed": "job completed", "job.needs_review": "job waits for review",
            "job.failed": "job failed", "job.canceled": "job canceled", "job.retried": "job failed; retried",
            "job.handed_back": "job handed back (the worker drains)"}


class Outcomes:
    def __init__(self, store: JobStore, worker_id: str | None = None, ride: RideThrough | None = None) -> None:
        self.store = store
        self.worker_id = worker_id
        self.ride = ride or RideThrough(store.settings.redis_outage_s)

    async def _move(self, ctx: JobContext, target: str, *, fields: dict[str, Any] | None = None,
                    **kw: Any) -> TransitionResult:
        tries = 0

        async def send() -> TransitionResult:
            nonlocal tries
            tries += 1
            return await self.store.transition(ctx.job_id, ctx.job_type, target, token=ctx.token, fields=fields, **kw)

        result = await self.ride.call(send, f"{target} transition", patience_s=math.inf)
        if not result.ok and tries > 1 and result.current == target:
            # sent again after a reply lost in an outage: the first one made the change
            log.info("job %s attempt %d: already %s (sent again after an outage)", ctx.job_id, ctx.attempt, target)
        else:
            self._log(ctx, target, result, kw.get("event") or {})
        return result

    def _log(self, ctx: JobContext, target: str, result: TransitionResult, event: dict[str, Any]) -> None:
        who: dict[str, Any] = {"job_id": ctx.job_id, "job_type": ctx.job_type, "tenant": ctx.job.tenant,
                               "attempt": ctx.attempt, "worker": self.worker_id}
        if result.outcome == Outcome.STALE:
            job_event(log, "job.stale_write", f"job {target} refused: this attempt no longer holds the job",
                      level=logging.WARNING, status=result.current, **who)
        elif not result.ok:
            job_event(log, "job.refused", f"job {target} refused ({result.outcome})", level=logging.WARNING,
                      status=result.current, **who)
        elif name := EVENTS.get(event.get("reason", "") if target == "queued" else target):
            error = event.get("error") or {}
            job_event(log, name, MESSAGES[name], level=logging.WARNING if target == "failed" else logging.INFO,
                      reason=event.get("reason"), error_class=error.get("class"), error=error.get("message"),
                      retry_in_ms=event.get("retry_in_ms"), **who)

    async def finished(self, ctx: JobContext, value: Any, policy: JobTypePolicy) -> TransitionResult:
        fields = {"result": dumps(value)}
        if ctx.job.review_required:
            digest = action_hash(value)
            # kept on the job so that the supervisor, finding the apply step's worker lost, knows
            # whether running it again is safe (expire_lease.lua)
            once = {} if not policy.apply_idempotent else {"apply_idempotent": "1"}
            return await self._move(ctx, "needs_review", event={"result": value, "action_hash": digest},
                                    fields={**fields, "action_hash": digest, **once})
        return await self._move(ctx, "completed", event={"result": value}, fields=fields)

    async def applied(self, ctx: JobContext, value: Any) -> TransitionResult:
        """The apply step ran after approval: the job is done and says what was applied, when, by whom."""
        applied = {"what": value, "at": rfc3339(now_ms()), "by": ctx.job.review_by}
        event = {"reason": "applied", "applied": applied, "result": ctx.job.result}
        return await self._move(ctx, "completed", event=event,
                                fields={"applied": dumps(applied)})

    async def canceled(self, ctx: JobContext) -> TransitionResult:
        return await self._move(ctx, "canceled", event={"reason": "canceled by request"})

    async def handed_back(self, ctx: JobContext) -> TransitionResult:
        """A draining worker gives the job back; the attempt does not count against max_attempts."""
        return await self._move(ctx, "queued", event={"reason": "worker_shutdown"}, fields={"+released": 1})

    @staticmethod
    def retried_after_deadline(ctx: JobContext, policy: JobTypePolicy) -> bool:
        """Whether an attempt that runs past the type's timeout is followed by another: the rule
        ``failed`` applies to a ``deadline`` failure, known before the timeout fires."""
        if apply_at_most_once(ctx, policy):
            return False
        return policy.retry_on_deadline and ctx.job.counted_attempts < ctx.job.max_attempts

    async def failed(
        self, ctx: JobContext, failure: Failure, policy: JobTypePolicy) -> TransitionResult:
        if apply_at_most_once(ctx, policy):
            return await self.apply_interrupted(ctx, failure.error_class, f"the apply step failed ({failure.message})")
        if ctx.resource_wait is not None and failure.retryable:
            return await self.waits_for_resource(ctx, failure)
        counted = ctx.job.counted_attempts
        may_retry = failure.retryable or (failure.error_class == "deadline" and policy.retry_on_deadline)
        error = error_info(failure.error_class, failure.message, retryable=may_retry, attempt=ctx.attempt)
        if may_retry and counted < ctx.job.max_attempts:
            event: dict[str, Any] = {"reason": "retry", "error": error}
            retry_after, cap = failure.retry_after, self.store.settings.max_retry_after_s
            if retry_after is not None and retry_after > cap:
                # a provider's date far in the future must not park the job for years
                event["note"] = (f"the provider's Retry-After of {retry_after:.0f} s was clamped to "
                                 f"BACKLANE_MAX_RETRY_AFTER_S ({cap:g} s)")
                retry_after = cap
            delay_ms = int(backoff_s(policy, counted, retry_after) * 1000)
            event["retry_in_ms"] = delay_ms
            return await self._move(
                ctx, "queued", ready_at_ms=now_ms() + delay_ms, event=event,
                fields={"last_error": dumps(error), f"stats:retries|{ctx.job_type}": 1},
            )
        return await self._move(ctx, "failed", event={"reason": failure.error_class, "error": error},
                                fields={"error": dumps(error)})

    async def waits_for_resource(self, ctx: JobContext, failure: Failure) -> TransitionResult:
        """A call failed and left its resource paused (a Retry-After) or its breaker open: the job goes
        back to its queue until the resource admits calls again, with ``waiting_for``, and the attempt
        does not count against max_attempts (``released``, as a drain's hand-back)."""
        wait = ctx.resource_wait
        assert wait is not None
        now = now_ms()
        waiting = wait.waiting_for(now)
        error = error_info(failure.error_class, failure.message, retryable=True, attempt=ctx.attempt)
        event = {"reason": "waiting_for_resource", "waiting_for": waiting, "error": error,
                 "retry_in_ms": max(0, wait.until_ms - now)}
        return await self._move(ctx, "queued", ready_at_ms=max(now, wait.until_ms), event=event,
                                fields={"+released": 1, "waiting_for": dumps(waiting),
                                        "last_error": dumps(error)})

    async def apply_interrupted(self, ctx: JobContext, error_class: ErrorClass, what: str) -> TransitionResult:
        """An apply step that is not idempotent failed or was cut off: it may have changed the world,
        so it is never run again on its own; a person checks (by the idempotency key) and decides."""
        error = apply_interrupted_error(error_class, what, ctx.idempotency_key or "", ctx.attempt)
        return await self._move(ctx, "failed", event={"reason": "apply_interrupted", "error": error},
                                fields={"error": dumps(error)})


def apply_interrupted_error(error_class: ErrorClass, what: str, idempotency_key: str, attempt: int) -> ErrorInfo:
    """The error of an apply step that failed or was cut off (by a failure here, a drain, or a lost
    worker: the supervisor passes it pre-built to expire_lease.lua)."""
    message = f"{what}; it may have taken effect — check before retrying (idempotency key {idempotency_key})"
    return error_info(error_class, message, retryable=False, attempt=attempt)
