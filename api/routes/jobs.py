"""The job routes: create, read, list, counts, cancel, review, retry, deliveries."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from shared.jobs import NewJob, Outcome
from shared.jobtypes import JobTypePolicy
from shared.resources import resolve
from shared.status import Status
from shared.webhook_targets import RefusedTarget, checked_addresses

from ..auth import tenant
from ..backend import Backend, backend
from ..bodies import read_json
from ..errors import BadRequest, Conflict, InvalidFields, NotFound
from ..ratelimit import create_within_rate
from ..records import JOB_PATH, absolute_url, job_record, job_records, load_owned, webhook_state
from ..responses import JSONResponse
from ..validation import check_input, parse_create, parse_list

RETRYABLE = frozenset({Status.FAILED, Status.CANCELED, Status.EXPIRED})
MAX_NOTE = 2000


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise BadRequest("Idempotency-Key must be 1 to 255 printable characters")
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


async def _create(request: Request, b: Backend, new: NewJob) -> JSONResponse:
    """Creates (or, for a repeated Idempotency-Key with the same body, finds) the job."""
    created = await create_within_rate(b.store, new, _idempotency_key(request), b.settings.create_rate_per_min)
    if not created.same_request:
        raise Conflict("this Idempotency-Key was already used with another request body")
    job = created.job or await b.store.get(new.tenant, created.job_id)
    if job is None:  # only when an idempotent replay outlived its job's retention
        raise NotFound("the job created with this Idempotency-Key no longer exists")
    record = await job_record(request, b, job)
    headers = {"Location": absolute_url(request, JOB_PATH.format(job_id=created.job_id))}
    return JSONResponse(record, status_code=201 if created.created else 200, headers=headers)


async def create_job(request: Request) -> JSONResponse:
    b = backend(request)
    owner = tenant(request, b.settings)
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
        uses=resolve(policy.uses, req.input),
    )
    return await _create(request, b, new)


async def get_job(request: Request) -> JSONResponse:
    b = backend(request)
    job = await load_owned(request, b, tenant(request, b.settings))
    return JSONResponse(await job_record(request, b, job))


async def list_jobs(request: Request) -> JSONResponse:
    b = backend(request)
    owner = tenant(request, b.settings)
    query = parse_list(request.query_params)
    try:
        page = await b.store.list_jobs(
            owner, status=query.status, job_type=query.type, cursor=query.cursor, limit=query.limit
        )
    except ValueError:
        raise BadRequest("malformed cursor: pass back the next_cursor of a previous page") from None
    jobs = await job_records(request, b, page.jobs)
    return JSONResponse({"jobs": jobs, "next_cursor": page.next_cursor})


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
    if not isinstance(body, dict) or set(body) - {"note", "by", "action_hash"}:
        raise InvalidFields('the body may only hold "note", "by" and "action_hash"')
    note, by, action_hash = body.get("note"), body.get("by", owner), body.get("action_hash")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        raise InvalidFields(f"note must be a string of at most {MAX_NOTE} characters")
    if not isinstance(by, str) or not 1 <= len(by) <= 200:
        raise InvalidFields("by must be a string of 1 to 200 characters naming the reviewer")
    if action_hash is not None and not isinstance(action_hash, str):
        raise InvalidFields("action_hash must be the job's action_hash string")
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


async def approve_job(request: Request) -> JSONResponse:
    return await _review(request, approve=True)


async def reject_job(request: Request) -> JSONResponse:
    return await _review(request, approve=False)


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
        uses=resolve(policy.uses, job.input) if policy else (),
    )
    return await _create(request, b, new)


async def job_deliveries(request: Request) -> JSONResponse:
    """The job's webhook delivery state and its recent attempts, newest first."""
    b = backend(request)
    job = await load_owned(request, b, tenant(request, b.settings))
    return JSONResponse({"webhook": webhook_state(job), "deliveries": await b.store.deliveries(job.id)})


async def jobs(request: Request) -> JSONResponse:
    # one route for both methods, so a wrong method gets 405 with the full Allow header
    return await (create_job(request) if request.method == "POST" else list_jobs(request))


routes = [
    Route("/v1/jobs", jobs, methods=["GET", "POST"], name="jobs"),
    Route("/v1/jobs/counts", job_counts, methods=["GET"], name="job_counts"),  # before {job_id}
    Route(JOB_PATH, get_job, methods=["GET"], name="get_job"),
    Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"], name="cancel_job"),
    Route("/v1/jobs/{job_id}/deliveries", job_deliveries, methods=["GET"], name="job_deliveries"),
    Route("/v1/jobs/{job_id}/approve", approve_job, methods=["POST"], name="approve_job"),
    Route("/v1/jobs/{job_id}/reject", reject_job, methods=["POST"], name="reject_job"),
    Route("/v1/jobs/{job_id}/retry", retry_job, methods=["POST"], name="retry_job"),
]
