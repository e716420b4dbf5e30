"""The public job record as the API answers it: every field present, null when unknown, and an
absolute events link that works in a plain ``EventSource``."""

from __future__ import annotations

from dataclasses import replace
from typing import cast
from urllib.parse import quote_plus

from starlette.requests import Request

from shared.ids import is_job_id
from shared.job import Job
from shared.schemas import JobRecord, Review, Timing, Usage, WaitingFor, WebhookState
from shared.serialization import now_ms, rfc3339
from shared.status import TERMINAL, Status

from .auth import new_events_token
from .backend import Backend
from .errors import NotFound

NO_USAGE: Usage = {"input_tokens": None, "output_tokens": None, "cached_tokens": None, "cost_usd": None,
                   "calls": None, "unpriced_calls": None, "unpriced_models": [], "attempts": []}
#: the paths of a job and of its events (their routes are declared with these)
JOB_PATH = "/v1/jobs/{job_id}"
EVENTS_PATH = JOB_PATH + "/events"


def absolute_url(request: Request, path: str) -> str:
    """What ``request.url_for`` answers for the route at ``path`` (its parameters filled in): the
    request's scheme and host, its root path (a Mount's prefix included), then the path. url_for walks
    every route to find the path, about 25 µs a link; a job record needs one or two."""
    base = request.base_url
    root = request.scope.get("root_path", "").replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    return f"{'https' if base.is_secure else 'http'}://{base.netloc}{root.rstrip('/')}{path}"


def timing(job: Job, now: int | None = None) -> Timing:
    run_ms = None
    if job.status == Status.RUNNING and job.started_at is not None:
        # the runs closed so far (earlier attempts, the handler's before an apply step) and this one
        run_ms = (job.run_ms or 0) + max(0, (now or now_ms()) - job.started_at)
    elif job.status == Status.QUEUED:
        run_ms = job.run_ms  # a restart or a retry waits: what ran before still counts
    else:
        # closed by the scripts when the job left running: time in needs_review is not run time
        run_ms = job.run_ms
        if run_ms is None and job.started_at is not None and job.finished_at is not None:  # kept before run_ms was
            run_ms = max(0, job.finished_at - job.started_at)
    first, created = job.first_started_at, job.created_at
    return {"queue_ms": first - created if first is not None and created is not None else None, "run_ms": run_ms}


def review(job: Job) -> Review:
    return {
        "required": job.review_required,
        "state": job.review_state,
        "by": job.review_by,
        "at": job.review_at,
        "note": job.review_note,
        "action_hash": job.review_action_hash,
    }


def webhook_state(job: Job) -> WebhookState | None:
    if not job.webhook_url:
        return None
    return {
        "url": job.webhook_url,
        "delivered_through": job.webhook_cursor,
        "pending": job.webhook_cursor != job.last_status_id,
        "failures": job.webhook_failures,
        "next_attempt_at": rfc3339(job.webhook_next_at),
    }


def to_record(job: Job, events_url: str) -> JobRecord:
    status = job.status
    return {
        "id": job.id,
        "type": job.type,
        "status": status,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "created_at": rfc3339(job.created_at) or "",
        "started_at": rfc3339(job.started_at),
        "finished_at": rfc3339(job.finished_at) if status in TERMINAL else None,
        "last_heartbeat_at": rfc3339(job.last_heartbeat_at),
        # the worker's heartbeat sets it (its lease length): clients judge a stale heartbeat by it
        "lease_expires_at": rfc3339(job.lease_expires_at) if status == Status.RUNNING else None,
        "input": job.input,
        "metadata": job.metadata,
        "result": job.result,
        "error": job.error,
        "review": review(job),
        "usage": {**NO_USAGE, **job.usage} if job.usage else NO_USAGE,
        "timing": timing(job),
        "last_seq": job.last_seq,
        "retry_of": job.retry_of,
        "ready_at": rfc3339(job.ready_at) if status == Status.QUEUED else None,
        "priority": job.priority,
        "deadline_at": rfc3339(job.deadline_at),
        "cancel_requested": job.cancel_requested,
        "webhook_url": job.webhook_url,
        "webhook": webhook_state(job),
        "action_hash": job.action_hash,
        "applied": job.applied,
        "phase": job.phase,
        "attempts": list(job.attempts),
        "waiting_for": cast(WaitingFor, job.waiting_for) if status in (Status.QUEUED, Status.RUNNING) else None,
        "links": {"events": events_url},
    }


def job_id_param(request: Request) -> str:
    """The path's job id; anything that cannot be a job id is simply not found."""
    job_id: str = request.path_params["job_id"]
    if not is_job_id(job_id):
        raise NotFound("no such job")
    return job_id


async def load_owned(request: Request, b: Backend, owner: str) -> Job:
    """The job if ``owner`` may see it; another tenant's job is as unknown as a missing one."""
    job = await b.store.get(owner, job_id_param(request))
    if job is None:
        raise NotFound("no such job")
    return job


async def job_records(request: Request, b: Backend, jobs: list[Job]) -> list[JobRecord]:
    """The records of ``jobs``: one read of their workers' beats for all the running ones."""
    secret, records = await b.secret(), []
    for job, until in zip(jobs, await b.store.workers.alive_until(jobs), strict=True):
        if until is not None:
            # a lease its worker's beats keep (shared/liveness.py): the worker's last beat is the job's
            job = replace(job, lease_expires_at=until, last_heartbeat_at=until - b.settings.lease_ms)
        token = new_events_token(b.settings, secret, job.tenant, job.id)
        url = absolute_url(request, EVENTS_PATH.format(job_id=job.id))
        records.append(to_record(job, f"{url}?token={quote_plus(token)}"))
    return records


async def job_record(request: Request, b: Backend, job: Job) -> JobRecord:
    return (await job_records(request, b, [job]))[0]
