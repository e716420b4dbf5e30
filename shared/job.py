"""The job as Redis keeps it: one typed view of the job hash, read once per load (``Job.from_hash``).

The scripts in ``lua/`` write the hash; everything else reads it through ``Job``. The field names of the
hash are documented in ``docs/protocol.md``; each attribute below says what it holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from .prices import usd
from .priority import DEFAULT_PRIORITY, Priority
from .schemas import AttemptUsage, ErrorInfo, Usage
from .serialization import loads
from .status import Status


def _int(raw: Mapping[str, str], name: str) -> int | None:
    value = raw.get(name)
    return int(float(value)) if value not in (None, "") else None


def _json(raw: Mapping[str, str], name: str) -> Any:
    value = raw.get(name)
    return loads(value) if value else None


def _text(raw: Mapping[str, str], name: str) -> str | None:
    return raw.get(name) or None


def _models(raw: Mapping[str, str], name: str) -> list[str]:
    return [m for m in (raw.get(name) or "").split(",") if m]


def _attempt_usage(raw: Mapping[str, str], n: int) -> AttemptUsage | None:
    p = f"usage:{n}:"
    calls = _int(raw, p + "calls")
    if not calls:
        return None
    priced = calls - (_int(raw, p + "unpriced_calls") or 0)
    repaid_calls = _int(raw, p + "repaid_calls")
    return {
        "attempt": n, "input_tokens": _int(raw, p + "input_tokens") or 0,
        "output_tokens": _int(raw, p + "output_tokens") or 0, "cached_tokens": _int(raw, p + "cached_tokens") or 0,
        "cost_usd": usd(_int(raw, p + "cost_nusd") or 0) if priced else None, "calls": calls,
        "unpriced_calls": calls - priced, "unpriced_models": _models(raw, p + "unpriced_models"),
        "repaid": {"calls": repaid_calls, "tokens": _int(raw, p + "repaid_tokens") or 0,
                   "cost_usd": usd(_int(raw, p + "repaid_cost_nusd"))} if repaid_calls else None,
    }


def usage_of(raw: Mapping[str, str], attempts: int) -> Usage | None:
    """The usage ``record.lua`` summed in the hash (``usage:FIELD``, ``usage:N:FIELD``); a job written
    before it keeps its attempt's usage as one JSON field, ``usage``."""
    calls = _int(raw, "usage:calls")
    if not calls:
        legacy = _json(raw, "usage")
        return cast(Usage, {**legacy, "cost_usd": None}) if legacy else None
    priced = calls - (_int(raw, "usage:unpriced_calls") or 0)
    per_attempt = [u for n in range(1, attempts + 1) if (u := _attempt_usage(raw, n)) is not None]
    return {
        "input_tokens": _int(raw, "usage:input_tokens") or 0, "output_tokens": _int(raw, "usage:output_tokens") or 0,
        "cached_tokens": _int(raw, "usage:cached_tokens") or 0,
        "cost_usd": usd(_int(raw, "usage:cost_nusd") or 0) if priced else None, "calls": calls,
        "unpriced_calls": calls - priced, "unpriced_models": _models(raw, "usage:unpriced_models"),
        "attempts": per_attempt,
    }


@dataclass(frozen=True)
class Job:
    id: str
    tenant: str
    type: str
    status: Status
    #: 0 before the first start; n for the n-th execution
    attempt: int
    max_attempts: int
    #: attempts handed back by a draining worker: they do not count against max_attempts
    released: int
    #: times in ms since the epoch (None until they happen)
    created_at: int | None
    first_started_at: int | None
    started_at: int | None
    finished_at: int | None
    last_heartbeat_at: int | None
    lease_expires_at: int | None
    #: the worker holding the running attempt (shared/liveness.py: its beats keep the lease)
    lease_owner: str | None
    #: when a queued job may start (back-off)
    ready_at: int | None
    #: by when it must have started, or been reviewed
    deadline_at: int | None
    #: the deadline as submitted (seconds from creation), so a manual retry gets the same
    deadline_s: float | None
    input: Any
    metadata: dict[str, Any] | None
    result: Any
    error: ErrorInfo | None
    usage: Usage | None
    #: seq of the newest event in the stream
    last_seq: int
    #: stream id of the newest status event, and of the terminal one once the job ended
    last_status_id: str | None
    terminal_id: str | None
    retry_of: str | None
    cancel_requested: bool
    #: "apply" once an approved job is queued or running for its apply step
    phase: str | None
    #: sha256 of the proposed result a reviewer approves
    action_hash: str | None
    #: what the apply step did after approval: ``{what, at, by}``
    applied: Any
    review_required: bool
    #: null (not reached), "pending", "approved", "rejected", "expired"
    review_state: str | None
    review_by: str | None
    review_at: str | None
    review_note: str | None
    #: the action_hash the decision was made on
    review_action_hash: str | None
    #: the handler's run time before review, and the run time of every run closed so far (ms)
    handler_run_ms: int | None
    run_ms: int | None
    webhook_url: str | None
    #: the stream id of the newest status event delivered to the webhook
    webhook_cursor: str | None
    webhook_failures: int
    webhook_next_at: int | None
    #: each attempt's start ``{attempt, worker, started_at}`` and end ``{ended_at, status, run_ms?, reason?,
    #: error?, retry_in_ms?}`` as the scripts recorded them, oldest first
    attempts: tuple[dict[str, Any], ...] = field(default=())
    #: its place in the queue: high, normal or low (shared/priority.py)
    priority: Priority = DEFAULT_PRIORITY
    #: what the job waits for ``{resource, reason, until, since}``: a running attempt in ``ctx.limit``,
    #: or a job queued until a paused resource admits calls again
    waiting_for: dict[str, Any] | None = None

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> Job:
        """The job of a hash the scripts wrote (``HGETALL`` of ``Keys.job``)."""
        attempt = _int(raw, "attempt") or 0
        history = []
        for n in range(1, attempt + 1):
            entry: dict[str, Any] = _json(raw, f"attempt:{n}:start") or {"attempt": n}
            entry.update(_json(raw, f"attempt:{n}:end") or {})
            history.append(entry)
        return cls(
            id=raw["id"],
            tenant=raw.get("tenant", ""),
            type=raw["type"],
            status=Status(raw["status"]),
            attempt=attempt,
            max_attempts=_int(raw, "max_attempts") or 0,
            released=_int(raw, "released") or 0,
            created_at=_int(raw, "created_at"),
            first_started_at=_int(raw, "first_started_at"),
            started_at=_int(raw, "started_at"),
            finished_at=_int(raw, "finished_at"),
            last_heartbeat_at=_int(raw, "last_heartbeat_at"),
            lease_expires_at=_int(raw, "lease_expires_at"),
            lease_owner=_text(raw, "lease_owner"),
            ready_at=_int(raw, "ready_at"),
            deadline_at=_int(raw, "deadline_at"),
            deadline_s=float(raw["deadline_s"]) if raw.get("deadline_s") else None,
            input=_json(raw, "input"),
            metadata=_json(raw, "metadata"),
            result=_json(raw, "result"),
            error=_json(raw, "error"),
            usage=usage_of(raw, attempt),
            last_seq=_int(raw, "last_seq") or 0,
            last_status_id=_text(raw, "last_status_id"),
            terminal_id=_text(raw, "terminal_id"),
            retry_of=_text(raw, "retry_of"),
            cancel_requested=raw.get("cancel_requested") == "1",
            phase=_text(raw, "phase"),
            action_hash=_text(raw, "action_hash"),
            applied=_json(raw, "applied"),
            review_required=raw.get("review_required") == "1",
            review_state=_text(raw, "review_state"),
            review_by=_json(raw, "review_by"),
            review_at=_text(raw, "review_at"),
            review_note=_json(raw, "review_note"),
            review_action_hash=_text(raw, "review_action_hash"),
            handler_run_ms=_int(raw, "handler_run_ms"),
            run_ms=_int(raw, "run_ms"),
            webhook_url=_text(raw, "webhook_url"),
            webhook_cursor=_text(raw, "webhook_cursor"),
            webhook_failures=_int(raw, "webhook_failures") or 0,
            webhook_next_at=_int(raw, "webhook_next_at"),
            attempts=tuple(history),
            waiting_for=_json(raw, "waiting_for"),
            priority=cast(Priority, raw.get("priority") or DEFAULT_PRIORITY),
        )

    @classmethod
    def from_flat(cls, flat: list[str]) -> Job:
        """The job of a script's ``HGETALL`` reply (field, value, field, value, …)."""
        return cls.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))

    @property
    def counted_attempts(self) -> int:
        """Attempts that count against max_attempts (a drain's hand-back does not)."""
        return self.attempt - self.released
