"""The job routes: create, read, list, counts, cancel, review, retry, deliveries."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.jobs import NewJob, Outcome
from shared.jobtypes import JobTypePolicy
from shared.listing import SCAN_LIMIT
from shared.logs import job_event
from shared.resources import resolve
from shared.schemas import Deliveries, JobCounts, JobPage, JobRecord
from shared.status import TERMINAL, Status
from shared.webhook_targets import RefusedTarget, checked_addresses

from ..auth import tenant
from ..backend import Backend, backend
from ..bodies import read_json
from ..errors import BadRequest, Conflict, InvalidFields, NotFound
from ..operations import AUTHED, Operation, documented, reply
from ..prefer import wait_for_end, wait_preference
from ..ratelimit import create_within_rate
from ..records import JOB_PATH, absolute_url, job_record, job_records, load_owned, webhook_state
from ..responses import JSONResponse
from ..validation import (
    CREATE_BODY,
    LIST_QUERY,
    METADATA_QUERY_DOC,
    check_input,
    parse_create,
    parse_list,
    schema_error,
)
from ..workers import unserved_warning

log = logging.getLogger("backlane.api")
RETRYABLE = frozenset({Status.FAILED, Status.CANCELED, Status.EXPIRED})
MAX_NOTE = 2000
MAX_IDEMPOTENCY_KEY = 255

REVIEW_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "note": {"type": ["string", "null"], "maxLength": MAX_NOTE, "description": "kept with the decision"},
        "by": {"type": "string", "minLength": 1, "maxLength": 200,
               "description": "who decided (default: the tenant)"},
        "action_hash": {"type": ["string", "null"],
                        "description": "the job's action_hash as the reviewer saw it: a mismatch is a 409"},
    },
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "the same key and body again answer the same job (200); the same key with another "
                   "body is a 409. Keys are scoped to the tenant.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
}
LOCATION = {"Location": "the job's URL"}
TAG = "jobs"
JOB_REPLY = reply("the job record", JobRecord)

PREFER = {
    "name": "Prefer", "in": "header", "required": False,
    "description": "`wait=N` (N whole seconds, 1 to BACKLANE_MAX_WAIT_S, default 60): answer 200 with the finished "
                   "job if it ends within N s, else 202 with the job as it is; other preferences are ignored",
    "schema": {"type": "string"},
}
APPLIED = {"Preference-Applied": "`wait=N` when the answer honoured Prefer: wait"}
CREATE = Operation(
    "Create a job", TAG,
    "The job is durable once this answers; a worker serving its type runs it.",
    parameters=(IDEMPOTENCY_KEY, PREFER), body=CREATE_BODY,
    replies={201: reply("created", JobRecord, **LOCATION),
             200: reply("an Idempotency-Key replay: the job it created; with Prefer: wait, the job ended within "
                        "the wait", JobRecord, **LOCATION, **APPLIED),
             202: reply("with Prefer: wait, the job had not ended within the wait", JobRecord, **LOCATION,
                        **APPLIED)},
    errors={400: "malformed JSON, Idempotency-Key or Prefer: wait", 401: "",
            404: "an Idempotency-Key replay whose job has passed its retention",
            409: "the Idempotency-Key was used with another body", 413: "", 415: "",
            422: "a field, or the input against its type's input_schema, is not acceptable; or an unknown type",
            429: "over BACKLANE_CREATE_RATE_PER_MIN, or BACKLANE_MAX_QUEUED_PER_TENANT jobs of the type queued",
            503: ""},
)
LIST = Operation(
    "List jobs", TAG,
    "The tenant's jobs, newest first, a page at a time; `id_prefix` and `metadata.<key>` search them. A "
    f"request looks at no more than {SCAN_LIMIT} index entries: a search that has not filled its page by "
    "then answers with what it found and a `next_cursor` that continues it.",
    parameters=(*(p.openapi() for p in LIST_QUERY), METADATA_QUERY_DOC),
    replies={200: reply("a page of job records", JobPage)},
    errors={400: "a malformed cursor", 401: "",
            422: "a bad status, limit, id_prefix or metadata.<key> parameter", 503: ""},
)
COUNTS = Operation("Count jobs by status and type", TAG, replies={200: reply("the counts", JobCounts)},
                   errors=AUTHED)
GET = Operation("Read a job", TAG, replies={200: JOB_REPLY}, errors=(401, 404, 503))
DELETE = Operation(
    "Delete a finished job", TAG,
    "Purges the job's record, event stream, checkpoint, webhook deliveries and its place in the listing; "
    "then it is unknown (404) everywhere. Finished jobs otherwise go after their type's retention_s, else "
    "BACKLANE_RETENTION_S.",
    replies={204: reply("deleted")},
    errors={401: "", 404: "", 409: "the job has not finished: cancel it first", 503: ""},
)
CANCEL = Operation(
    "Cancel a job", TAG,
    "A queued or needs_review job is canceled at once (200); a running one is told and stops promptly "
    "(202, the record shows cancel_requested).",
    replies={200: reply("canceled", JobRecord), 202: reply("the worker was told to stop", JobRecord)},
    errors={401: "", 404: "", 409: "the job already ended, or its approved side effect is being applied",
            503: ""},
)
DELIVERIES = Operation("Read a job's webhook deliveries", TAG,
                       replies={200: reply("delivery state and recent attempts", Deliveries)},
                       errors=(401, 404, 503))


def _review_op(verb: str) -> Operation:
    return Operation(
        f"{verb.capitalize()} a job in review", TAG, f"Only a job in needs_review can be {verb}d; one decision wins.",
        body=REVIEW_BODY, body_required=False, replies={200: reply("the job after the decision", JobRecord)},
        errors={400: "", 401: "", 404: "", 409: "the job is not in needs_review, or action_hash does not match",
                413: "", 415: "", 422: "", 503: ""},
    )


RETRY = Operation(
    "Retry a finished job", TAG, "Creates a new job with the same input and retry_of set (failed, canceled or "
    "expired jobs only).",
    parameters=(IDEMPOTENCY_KEY,),
    replies={201: reply("the new job", JobRecord, **LOCATION),
             200: reply("an Idempotency-Key replay: the job it created", JobRecord, **LOCATION)},
    errors={400: "", 401: "", 404: "", 409: "the job is not failed, canceled or expired; or an Idempotency-Key "
            "reused with another request", 422: "its webhook URL is no longer allowed",
            429: "over BACKLANE_CREATE_RATE_PER_MIN, or BACKLANE_MAX_QUEUED_PER_TENANT jobs of the type queued",
            503: ""},
)


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters")
    return key


async def _policy(b: Backend, job_type: str) -> JobTypePolicy:
    policy = await b.types.get(job_type)
    if policy is None:
        known = ", ".join(sorted(await b.types.all())) or "none"
        raise InvalidFields(f"unknown job type {job_type!r} (known: {known})")
    return policy


def _signed_webhook_url(b: Backend, owner: str, url: str | None) -> str | None:
    """Every delivery is signed: a job may only name a webhook URL when its tenant has a secret."""
    if url and b.settings.webhook_secret(owner) is None:
        raise InvalidFields(
            f"webhook_url needs a signing secret for tenant {owner!r}: set BACKLANE_WEBHOOK_SECRETS="
            f"{owner}:whsec_... (or BACKLANE_WEBHOOK_SECRET for every tenant) on the server"
        )
    return url


async def _public_target(b: Backend, url: str | None) -> None:
    """A webhook URL a client names must reach a public address (shared/webhook_targets.py); the
    supervisor checks again before each delivery, as the name may resolve elsewhere by then."""
    if url and not b.settings.webhook_allow_private:
        try:
            await checked_addresses(url)
        except RefusedTarget as exc:
            raise InvalidFields(str(exc), param="webhook_url") from None


async def _create(request: Request, b: Backend, new: NewJob, wait_s: int | None = None) -> JSONResponse:
    """Creates (or, for a repeated Idempotency-Key with the same body, finds) the job; with ``wait_s``
    (``Prefer: wait=N``), answers once it has ended or after that long (api/prefer.py)."""
    created = await create_within_rate(b.store, new, _idempotency_key(request), b.settings.create_rate_per_min)
    if not created.same_request:
        raise Conflict("this Idempotency-Key was already used with another request body")
    job = created.job or await b.store.get(new.tenant, created.job_id)
    if job is None:  # only when an idempotent replay outlived its job's retention
        raise NotFound("the job created with this Idempotency-Key no longer exists")
    warnings = None
    if created.created:
        job_event(log, "job.created", "job created", job_id=job.id, job_type=job.type, tenant=job.tenant,
                  attempt=job.attempt, retry_of=job.retry_of)
        if await b.workers.unserved([job.type]):
            warnings = [unserved_warning(job.type)]
    headers = {"Location": absolute_url(request, JOB_PATH.format(job_id=created.job_id))}
    status = 201 if created.created else 200
    if wait_s is not None:
        job = await wait_for_end(b, job, wait_s)
        status = 200 if job.status in TERMINAL else 202
        headers["Preference-Applied"] = f"wait={wait_s}"
    record: dict[str, Any] = {**await job_record(request, b, job)}
    if warnings:
        record["warnings"] = warnings
    return JSONResponse(record, status_code=status, headers=headers)


async def create_job(request: Request) -> JSONResponse:
    b = backend(request)
    owner = tenant(request, b.settings)
    wait_s = wait_preference(request.headers.get("prefer"), b.settings.max_wait_s)
    req = parse_create(await read_json(request, b.settings.max_body_bytes))
    policy = await _policy(b, req.type)
    check_input(policy, req.input)
    await _public_target(b, req.webhook_url)
    new = NewJob(
        tenant=owner,
        type=req.type,
        input=req.input,
        max_attempts=req.max_attempts or policy.max_attempts,
        metadata=req.metadata,
        webhook_url=_signed_webhook_url(b, owner, req.webhook_url or b.settings.tenant_webhook_urls.get(owner)),
        deadline_s=req.deadline_s,
        review_required=policy.draw_review(),
        review_window_s=policy.review_window_s,
        retention_s=policy.retention_s,
        uses=resolve(policy.uses, req.input),
        priority=req.priority or policy.priority,
    )
    return await _create(request, b, new, wait_s)


async def get_job(request: Request) -> JSONResponse:
    b = backend(request)
    job = await load_owned(request, b, tenant(request, b.settings))
    return JSONResponse(await job_record(request, b, job))


async def delete_job(request: Request) -> Response:
    """Purges a finished job: its record, stream and everything kept for it (``shared/lua/purge.lua``)."""
    b = backend(request)
    owner = tenant(request, b.settings)
    job = await load_owned(request, b, owner)
    result = await b.store.purge(owner, job.id, job.type)
    if result.outcome == Outcome.INVALID:
        raise Conflict(f"the job is {result.current}: cancel it first (POST /v1/jobs/{job.id}/cancel), then "
                       "delete it once it has ended")
    if result.outcome == Outcome.MISSING:
        raise NotFound("no such job")
    return Response(status_code=204)


@documented(get=GET, delete=DELETE)
async def job(request: Request) -> Response:
    # one route for both methods, so a wrong method gets 405 with the full Allow header
    return await (get_job(request) if request.method == "GET" else delete_job(request))


async def list_jobs(request: Request) -> JSONResponse:
    b = backend(request)
    owner = tenant(request, b.settings)
    query = parse_list(request.query_params)  # a malformed cursor is a 400 there
    page = await b.store.list_jobs(owner, status=query.status, job_type=query.type, cursor=query.cursor,
                                   limit=query.limit, id_prefix=query.id_prefix, metadata=query.metadata)
    jobs = await job_records(request, b, page.jobs)
    return JSONResponse({"jobs": jobs, "next_cursor": page.next_cursor})


@documented(get=COUNTS)
async def job_counts(request: Request) -> JSONResponse:
    """The tenant's jobs per status (``counts``, ``total``) and per type and status (``by_type``), and what
    each type's model calls ever used (``usage_by_type``: ``{type: {calls, tokens, cost_usd}}``): counts
    the scripts keep as they move jobs, so this is two Redis reads however many jobs there are."""
    b = backend(request)
    owner = tenant(request, b.settings)
    by_type = await b.store.tenant_counts(owner)
    counts = {status.value: sum(c[status.value] for c in by_type.values()) for status in Status}
    return JSONResponse({"counts": counts, "total": sum(counts.values()), "by_type": by_type,
                         "usage_by_type": await b.store.tenant_usage(owner)})


@documented(post=CANCEL)
async def cancel_job(request: Request) -> JSONResponse:
    b = backend(request)
    job = await load_owned(request, b, tenant(request, b.settings))
    result = await b.store.cancel(job.id, job.type)
    if result.outcome == Outcome.INVALID and result.current == "applying":
        raise Conflict("the approved side effect is being applied and cannot be stopped half-way")
    if result.outcome == Outcome.INVALID:
        raise Conflict(
            f"the job is {result.current}: only queued, running or needs_review jobs can be canceled"
        )
    fresh = await b.store.job(job.id)
    if result.outcome == Outcome.MISSING or fresh is None:
        raise NotFound("no such job")
    if result.outcome == Outcome.CANCELED:  # a running job's worker logs its own cancel when it stops
        job_event(log, "job.canceled", "job canceled", job_id=job.id, job_type=job.type, tenant=job.tenant,
                  attempt=job.attempt, reason="canceled by request")
    # running: the worker is told and stops promptly; the record says so until it has
    status = 202 if result.outcome == Outcome.REQUESTED else 200
    return JSONResponse(await job_record(request, b, fresh), status_code=status)


async def _review(request: Request, approve: bool) -> JSONResponse:
    """approve / reject: one atomic decision per job (shared/lua/decide.lua); an approval may name the
    action hash it saw, and a type with an apply step is queued to run it once."""
    b = backend(request)
    owner = tenant(request, b.settings)
    body = await read_json(request, b.settings.max_body_bytes, optional=True)
    body = {} if body is None else body
    if (error := schema_error(REVIEW_BODY, body)) is not None:
        raise InvalidFields(error.message)
    note, by, action_hash = body.get("note"), body.get("by", owner), body.get("action_hash")
    job = await load_owned(request, b, owner)
    policy = await b.types.get(job.type)
    result = await b.store.decide(
        job.id, job.type, approve=approve, by=by, note=note, action_hash=action_hash,
        has_apply=bool(policy and policy.has_apply),
    )
    verb = "approved" if approve else "rejected"
    if result.outcome == Outcome.INVALID:
        raise Conflict(f"the job is {result.current}: only a job in needs_review can be {verb}")
    if result.outcome == Outcome.HASH_MISMATCH:
        raise Conflict("action_hash does not match the proposed action: review the job again")
    fresh = await b.store.job(job.id)
    if result.outcome == Outcome.MISSING or fresh is None:
        raise NotFound("no such job")
    return JSONResponse(await job_record(request, b, fresh))


@documented(post=_review_op("approve"))
async def approve_job(request: Request) -> JSONResponse:
    return await _review(request, approve=True)


@documented(post=_review_op("reject"))
async def reject_job(request: Request) -> JSONResponse:
    return await _review(request, approve=False)


@documented(post=RETRY)
async def retry_job(request: Request) -> JSONResponse:
    b = backend(request)
    owner = tenant(request, b.settings)
    job = await load_owned(request, b, owner)
    if job.status not in RETRYABLE:
        raise Conflict(f"the job is {job.status}: only failed, canceled or expired jobs can be retried")
    await _public_target(b, job.webhook_url)
    policy = await b.types.get(job.type)
    new = NewJob(
        tenant=owner,
        type=job.type,
        input=job.input,
        max_attempts=job.max_attempts,
        metadata=job.metadata,
        webhook_url=_signed_webhook_url(b, owner, job.webhook_url),
        retry_of=job.id,
        deadline_s=job.deadline_s,
        review_required=policy.draw_review() if policy else job.review_required,
        review_window_s=policy.review_window_s if policy else None,
        retention_s=policy.retention_s if policy else None,
        uses=resolve(policy.uses, job.input) if policy else (),
        priority=job.priority,
    )
    return await _create(request, b, new)


@documented(get=DELIVERIES)
async def job_deliveries(request: Request) -> JSONResponse:
    """The job's webhook delivery state and its recent attempts, newest first."""
    b = backend(request)
    job = await load_owned(request, b, tenant(request, b.settings))
    return JSONResponse({"webhook": webhook_state(job), "deliveries": await b.store.deliveries(job.id)})


@documented(get=LIST, post=CREATE)
async def jobs(request: Request) -> JSONResponse:
    # one route for both methods, so a wrong method gets 405 with the full Allow header
    return await (create_job(request) if request.method == "POST" else list_jobs(request))


routes = [
    Route("/v1/jobs", jobs, methods=["GET", "POST"], name="jobs"),
    Route("/v1/jobs/counts", job_counts, methods=["GET"], name="job_counts"),  # before {job_id}
    Route(JOB_PATH, job, methods=["GET", "DELETE"], name="get_job"),
    Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"], name="cancel_job"),
    Route("/v1/jobs/{job_id}/deliveries", job_deliveries, methods=["GET"], name="job_deliveries"),
    Route("/v1/jobs/{job_id}/approve", approve_job, methods=["POST"], name="approve_job"),
    Route("/v1/jobs/{job_id}/reject", reject_job, methods=["POST"], name="reject_job"),
    Route("/v1/jobs/{job_id}/retry", retry_job, methods=["POST"], name="retry_job"),
]
