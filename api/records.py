"""The public job record as the API answers it: every field present, null when unknown, and an
absolute events link that works in a plain ``EventSource``."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import urlencode

from starlette.requests import Request

from shared.ids import is_job_id
from shared.schemas import JobRecord, Review, Timing, Usage
from shared.serialization import loads, now_ms, rfc3339
from shared.status import TERMINAL, Status

from .auth import new_events_token
from .backend import Backend
from .errors import NotFound


def _int(raw: dict[str, str], name: str) -> int | None:
    value = raw.get(name)
    return int(float(value)) if value not in (None, "") else None


def _json(raw: dict[str, str], name: str) -> Any:
    value = raw.get(name)
    return loads(value) if value else None


def timing(raw: dict[str, str], now: int | None = None) -> Timing:
    created, first, started, finished = (
        _int(raw, n) for n in ("created_at", "first_started_at", "started_at", "finished_at")
    )
    status, run_ms = raw.get("status"), None
    if status == Status.RUNNING and started is not None:
        run_ms = max(0, (now or now_ms()) - started)
        if raw.get("phase") == "apply":  # the apply step's run time adds to the handler's
            run_ms += _int(raw, "handler_run_ms") or 0
    elif status != Status.QUEUED:
        # closed by the scripts when the job left running: time in needs_review is not run time
        run_ms = _int(raw, "run_ms")
        if run_ms is None and started is not None and finished is not None:  # kept before run_ms was
            run_ms = max(0, finished - started)
    return {"queue_ms": first - created if first is not None and created is not None else None, "run_ms": run_ms}


def review(raw: dict[str, str]) -> Review:
    return {
        "required": raw.get("review_required") == "1",
        "state": raw.get("review_state") or None,
        "by": _json(raw, "review_by"),
        "at": raw.get("review_at") or None,
        "note": _json(raw, "review_note"),
        "action_hash": raw.get("review_action_hash") or None,
    }


def attempts(raw: dict[str, str]) -> list[dict[str, Any]]:
    """Each attempt's start and end as the scripts recorded them, oldest first."""
    history = []
    for n in range(1, (_int(raw, "attempt") or 0) + 1):
        entry: dict[str, Any] = _json(raw, f"attempt:{n}:start") or {"attempt": n}
        entry.update(_json(raw, f"attempt:{n}:end") or {})
        history.append(entry)
    return history


def webhook_state(raw: dict[str, str]) -> dict[str, Any] | None:
    if not raw.get("webhook_url"):
        return None
    return {
        "url": raw["webhook_url"],
        "delivered_through": raw.get("webhook_cursor") or None,
        "pending": raw.get("webhook_cursor") != raw.get("last_status_id"),
        "failures": _int(raw, "webhook_failures") or 0,
        "next_attempt_at": rfc3339(_int(raw, "webhook_next_at")),
    }


def to_record(raw: dict[str, str], events_url: str) -> JobRecord:
    usage = cast(Usage, _json(raw, "usage") or {"input_tokens": None, "output_tokens": None, "cached_tokens": None})
    status = raw["status"]
    return {
        "id": raw["id"],
        "type": raw["type"],
        "status": status,
        "attempt": _int(raw, "attempt") or 0,
        "max_attempts": _int(raw, "max_attempts") or 0,
        "created_at": rfc3339(_int(raw, "created_at")) or "",
        "started_at": rfc3339(_int(raw, "started_at")),
        "finished_at": rfc3339(_int(raw, "finished_at")) if status in TERMINAL else None,
        "last_heartbeat_at": rfc3339(_int(raw, "last_heartbeat_at")),
        # the worker's heartbeat sets it (its lease length): clients judge a stale heartbeat by it
        "lease_expires_at": rfc3339(_int(raw, "lease_expires_at")) if status == Status.RUNNING else None,
        "input": _json(raw, "input"),
        "metadata": _json(raw, "metadata"),
        "result": _json(raw, "result"),
        "error": _json(raw, "error"),
        "review": review(raw),
        "usage": usage,
        "timing": timing(raw),
        "last_seq": _int(raw, "last_seq") or 0,
        "retry_of": raw.get("retry_of") or None,
        "ready_at": rfc3339(_int(raw, "ready_at")) if status == Status.QUEUED else None,
        "deadline_at": rfc3339(_int(raw, "deadline_at")),
        "cancel_requested": raw.get("cancel_requested") == "1",
        "webhook_url": raw.get("webhook_url") or None,
        "webhook": webhook_state(raw),
        "action_hash": raw.get("action_hash") or None,
        "applied": _json(raw, "applied"),
        "phase": raw.get("phase") or None,
        "attempts": attempts(raw),
        "links": {"events": events_url},
    }


def job_id_param(request: Request) -> str:
    """The path's job id; anything that cannot be a job id is simply not found."""
    job_id: str = request.path_params["job_id"]
    if not is_job_id(job_id):
        raise NotFound("no such job")
    return job_id


async def load_owned(request: Request, b: Backend, owner: str) -> dict[str, str]:
    """The job's hash if ``owner`` may see it; another tenant's job is as unknown as a missing one."""
    raw = await b.store.get(owner, job_id_param(request))
    if raw is None:
        raise NotFound("no such job")
    return raw


async def job_record(request: Request, b: Backend, raw: dict[str, str]) -> JobRecord:
    token = new_events_token(b.settings, await b.secret(), raw["tenant"], raw["id"])
    url = f"{request.url_for('job_events', job_id=raw['id'])}?{urlencode({'token': token})}"
    return to_record(raw, url)
