"""The wire format: the job record and the events, documented where they are defined."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from .priority import Priority
from .status import Status

ErrorClass = Literal["input", "transient", "policy", "worker_lost", "internal", "deadline"]


#: why a job failed: ``{class, message, retryable, attempt}`` (``class`` is a Python keyword, hence
#: this form); built by ``error_info`` only
ErrorInfo = TypedDict("ErrorInfo", {"class": ErrorClass, "message": str, "retryable": bool, "attempt": int})

#: a failure message is cut to this length
MAX_ERROR_MESSAGE = 2000


def error_info(error_class: ErrorClass, message: str, *, retryable: bool, attempt: int) -> ErrorInfo:
    """The error object of a job and of its status events: the one place it is built."""
    return {"class": error_class, "message": message[:MAX_ERROR_MESSAGE], "retryable": retryable, "attempt": attempt}


class Review(TypedDict):
    #: whether this job waits for a person before its result counts
    required: bool
    #: null (not reached), "pending", "approved", "rejected", "expired"
    state: str | None
    by: str | None
    at: str | None
    note: str | None
    #: the action_hash the decision was made on (recorded whether or not the reviewer sent it)
    action_hash: str | None


class Repaid(TypedDict):
    """Model calls an attempt made in a step an earlier attempt had already paid for (it did not
    complete there, so it ran again): what the restart cost twice."""

    calls: int
    tokens: int
    cost_usd: float | None


class AttemptUsage(TypedDict):
    attempt: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    #: null when none of its calls had a price
    cost_usd: float | None
    calls: int
    #: calls whose model has no price (counted in tokens only)
    unpriced_calls: int
    unpriced_models: list[str]
    #: null when the attempt paid for nothing twice
    repaid: Repaid | None


class Usage(TypedDict):
    """Summed over every attempt and step, failed and replayed ones included (a replayed step costs
    nothing new); null before any model call was recorded."""

    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None
    #: USD by the price table (shared/prices.py); null when no call had a price
    cost_usd: NotRequired[float | None]
    calls: NotRequired[int | None]
    unpriced_calls: NotRequired[int | None]
    #: models that have no price: their calls count in tokens, never in cost
    unpriced_models: NotRequired[list[str]]
    #: per attempt that recorded any call, oldest first
    attempts: NotRequired[list[AttemptUsage]]


class Timing(TypedDict):
    #: from creation to the first start, in ms (null until started)
    queue_ms: int | None
    #: time spent running, in ms, added up over every attempt (and, for an applied job, the apply
    #: step's runs), the current one up to now; time queued or in needs_review is not counted
    run_ms: int | None


class WebhookState(TypedDict):
    url: str
    #: the stream id of the newest status event delivered
    delivered_through: str | None
    #: whether a status event waits to be delivered
    pending: bool
    #: failed tries of the event now due
    failures: int
    #: when the next try is due (RFC 3339)
    next_attempt_at: str | None


class Links(TypedDict):
    #: the SSE stream, with a short-lived read-only token: works in a plain EventSource
    events: str


class WaitingFor(TypedDict):
    resource: str
    reason: str
    until: str | None
    since: str | None


class JobRecord(TypedDict):
    id: str
    type: str
    status: Status
    #: 0 before the first start; n for the n-th execution
    attempt: int
    max_attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    last_heartbeat_at: str | None
    #: while running: when the worker's lease runs out unless it heartbeats again (then the supervisor
    #: restarts the job); lease length = lease_expires_at - last_heartbeat_at
    lease_expires_at: str | None
    input: Any
    metadata: dict[str, Any] | None
    result: Any
    error: ErrorInfo | None
    review: Review
    usage: Usage
    timing: Timing
    #: seq of the newest event in the stream
    last_seq: int
    retry_of: str | None
    #: when a queued job may start (back-off), RFC 3339
    ready_at: str | None
    #: high, normal or low: higher starts first among jobs ready within minutes of each other
    priority: Priority
    deadline_at: str | None
    #: whether a cancel was asked for a running job that has not stopped yet
    cancel_requested: bool
    webhook_url: str | None
    #: delivery state of the job's webhooks (null without a webhook_url)
    webhook: WebhookState | None
    #: sha256 of the proposed result a reviewer approves; an approval may name it to bind itself to it
    action_hash: str | None
    #: what the apply step did after approval: {what, at, by}
    applied: Any
    #: "apply" once an approved job is queued or running for its apply step
    phase: str | None
    #: each attempt's start (worker, started_at) and end (status, ended_at, run_ms, reason, error, retry_in_ms)
    attempts: list[dict[str, Any]]
    #: what a queued or running job waits for: a named resource (``resource``), why (``reason``:
    #: ``requests``, ``tokens``, ``concurrency``, ``paused``, ``breaker``), ``until`` when it is
    #: expected to go on (RFC 3339, null when unknown) and ``since``; null when it waits for nothing
    waiting_for: WaitingFor | None
    links: Links


class JobPage(TypedDict):
    #: newest first
    jobs: list[JobRecord]
    #: pass it as ``cursor`` for the next page; null on the last one
    next_cursor: str | None


class JobCounts(TypedDict):
    #: the tenant's jobs per status
    counts: dict[str, int]
    total: int
    #: per type, then per status
    by_type: dict[str, dict[str, int]]


class MinuteCount(TypedDict):
    #: the minute's start (RFC 3339 UTC)
    minute: str
    #: the tenant's jobs that completed / failed in that minute
    completed: int
    failed: int


class RunTime(TypedDict):
    #: finished jobs of the type counted in the run-time histogram (every tenant's)
    runs: int
    #: run time (ms, every attempt added up) at the 50th and 95th percentile, interpolated within the
    #: histogram's buckets; null without runs, or the largest bound when the percentile lies beyond it
    p50_ms: float | None
    p95_ms: float | None


class Stats(TypedDict):
    #: oldest first, the current minute last
    per_minute: list[MinuteCount]
    #: the tenant's jobs per type now queued and running
    queue_by_type: dict[str, dict[str, int]]
    run_time_by_type: dict[str, RunTime]


class Deliveries(TypedDict):
    webhook: WebhookState | None
    #: the recent delivery attempts, newest first
    deliveries: list[dict[str, Any]]


class StatusEvent(TypedDict):
    type: Literal["status"]
    seq: int
    attempt: int
    status: str
    at: str
    reason: NotRequired[str]
    error: NotRequired[ErrorInfo]
    result: NotRequired[Any]


class OutputEvent(TypedDict):
    type: Literal["output"]
    seq: int
    attempt: int
    text: str


class ProgressEvent(TypedDict):
    type: Literal["progress"]
    seq: int
    attempt: int
    message: str
    step: NotRequired[str]
    fraction: NotRequired[float]


class StepEvent(TypedDict):
    type: Literal["step"]
    seq: int
    attempt: int
    name: str
    #: the step's n-th call of this name in the attempt (1, 2, …): a name repeated in a loop
    occurrence: int
    state: Literal["started", "completed", "failed", "retrying", "replayed"]
    #: completed, failed: how long it ran; replayed: how long it ran when it was completed
    duration_ms: NotRequired[int]
    #: failed, retrying: why
    error: NotRequired[str]
    #: retrying: the try that failed, and the wait before the next
    #: (``try`` is a Python keyword: read it as event["try"])
    retry_in_ms: NotRequired[int]
    #: replayed: the attempt that completed it
    from_attempt: NotRequired[int]


#: one entry of a job's stream, as stored in its ``d`` field and sent as SSE ``data``
Event = StatusEvent | OutputEvent | ProgressEvent | StepEvent
