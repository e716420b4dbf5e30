"""An OpenAI-compatible background API: code written against OpenAI's background mode points its
``base_url`` at Backlane and gets durable, resumable responses from any upstream model.

    POST /v1/responses                      → an ``openai.responses`` job; the Response (or its
                                              event stream with ``stream: true``)
    GET  /v1/responses/{id}                 → poll
    GET  /v1/responses/{id}?stream=true&starting_after=N → the events after N, then live
    POST /v1/responses/{id}/cancel          → cancel the job

The id is ``resp_<job id>``; authentication is the Backlane API key. Errors come in OpenAI's
shape and statuses (``api/errors.py``), so the SDK raises ``BadRequestError`` and its kin. The
events are a pure fold over the job's stream (``_openai_shapes.Translator``), so every resume
lands on the same numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared.ids import is_job_id
from shared.job import Job
from shared.jobs import NewJob, Outcome
from shared.jobtypes import OPENAI_RESPONSES, JobTypePolicy
from shared.logs import job_event
from shared.resources import resolve
from shared.serialization import loads

from .._openai_shapes import RESPONSE_SCHEMA, Translator, job_id_of, snapshot
from ..auth import tenant
from ..backend import Backend, backend
from ..bodies import read_json
from ..entries import KEEPALIVE
from ..errors import BadRequest, Conflict, InvalidFields, NotFound
from ..event_feed import events_after
from ..operations import JSON, SSE, Operation, Reply, documented, sse_event
from ..ratelimit import create_within_rate
from ..sse import event_stream_response
from ..validation import check_input, schema_error

log = logging.getLogger("backlane.api")

JOB_TYPE = OPENAI_RESPONSES.name
#: how long a cancel waits for a running job to stop before answering with its current state
CANCEL_WAIT_S = 3.0

#: the request fields about how to answer (checked here; they stay out of the job input)
TRANSPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "background": {"type": "boolean", "description": "answer at once with the queued Response"},
        "stream": {"type": "boolean", "description": "answer with the Response's event stream"},
        "store": {"type": "boolean"},
        "stream_options": {"type": "object"},
        "include": {"type": "array", "items": {"type": "string"}},
    },
}
#: request fields about how to answer, not about what to compute: they stay out of the job input
TRANSPORT = frozenset(TRANSPORT_SCHEMA["properties"])
#: the request: the job type's own input schema (what checks the rest), plus the transport fields
CREATE_BODY: dict[str, Any] = {
    **OPENAI_RESPONSES.input_schema,
    "properties": {**OPENAI_RESPONSES.input_schema["properties"], **TRANSPORT_SCHEMA["properties"]},
}
STREAM = sse_event({"type": "object", "required": ["type", "sequence_number"]},
                   "one of OpenAI's Response events (`event:` and `data:` lines, no `id:`)", with_id=False)
RESPONSE = Reply("the Response, or its events with stream=true", {JSON: RESPONSE_SCHEMA, SSE: STREAM})
TAG = "OpenAI-compatible"
ERRORS = {400: "malformed or invalid (OpenAI answers 400 for every such request)", 401: "", 404: "", 503: ""}
CREATE = Operation(
    "Create a response (OpenAI's background mode)", TAG,
    "An openai.responses job. background=true answers at once; stream=true streams its events; otherwise the "
    "answer waits for the job to end, as upstream would.",
    parameters=({"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}},),
    body=CREATE_BODY, replies={200: RESPONSE},
    errors={**ERRORS, 409: "the Idempotency-Key was used with another body", 429: "over the creation rate"},
    error_schema="OpenAIError",
)
RETRIEVE = Operation(
    "Retrieve a response", TAG, "stream=true: its events after starting_after, then live.",
    parameters=(
        {"name": "stream", "in": "query", "required": False, "schema": {"type": "boolean"}},
        {"name": "starting_after", "in": "query", "required": False, "schema": {"type": "integer"},
         "description": "the sequence_number of the last event received"},
    ),
    replies={200: RESPONSE}, errors=ERRORS, error_schema="OpenAIError",
)
CANCEL = Operation("Cancel a response", TAG, replies={200: Reply("the Response", {JSON: RESPONSE_SCHEMA})},
                   errors={401: "", 404: "", 503: ""}, error_schema="OpenAIError")


async def openai_events(b: Backend, job: Job, after: int) -> AsyncIterator[bytes]:
    """OpenAI's events after sequence number ``after``. No ``id:`` lines, as OpenAI's own streams: the
    SDK's decoder would keep the last id and turn the next keep-alive comment into an empty event it
    cannot parse; a client resumes with ``starting_after``."""
    translator = Translator(job)
    async for batch in events_after(b, job.id, None, idle_s=b.settings.keepalive_s):
        if not batch:
            yield KEEPALIVE
        for entry in batch:
            final = await b.store.job(job.id) if entry.terminal else None
            for event in translator.feed(loads(entry.data), final):
                if event["sequence_number"] > after:
                    body = json.dumps(event, separators=(",", ":"))
                    yield f"event: {event['type']}\ndata: {body}\n\n".encode()


def event_stream(b: Backend, job: Job, after: int) -> Response:
    return b.streams.hold(job.tenant, event_stream_response(openai_events(b, job, after)))


async def _owned(request: Request, b: Backend) -> Job:
    owner = tenant(request, b.settings)  # a bad key is 401 whatever the id: the id tells nothing to it
    response_id = request.path_params["response_id"]
    job_id = job_id_of(response_id)
    job = await b.store.get(owner, job_id) if is_job_id(job_id) else None
    if job is None or job.type != JOB_TYPE:
        raise NotFound(f"Response with id '{response_id}' not found.")
    return job


async def _until_terminal(b: Backend, job_id: str) -> None:
    async for _ in events_after(b, job_id, None):
        pass


def _check(policy: JobTypePolicy, job_input: dict[str, Any]) -> None:
    """The type's input schema, with OpenAI's wording: the job input is the request body, so a
    failing place ``input.max_output_tokens`` is the request's ``max_output_tokens``."""
    for name in ("model", "input"):
        if name not in job_input:
            raise InvalidFields(f"Missing required parameter: '{name}'.", param=name)
    try:
        check_input(policy, job_input)
    except InvalidFields as exc:
        where, _, why = exc.message.partition(": ")
        # only a message about a place in the input names a parameter (not one about the schema itself)
        param = where.removeprefix("input").removeprefix(".") or None if where.startswith("input") else None
        raise InvalidFields(f"Invalid '{param}': {why}" if param and why else exc.message, param=param) from None


@documented(post=CREATE)
async def create_response(request: Request) -> Response:
    b = backend(request)
    owner = tenant(request, b.settings)
    body = await read_json(request, b.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise InvalidFields("the body must be a JSON object")
    if (error := schema_error(TRANSPORT_SCHEMA, {k: v for k, v in body.items() if k in TRANSPORT})) is not None:
        raise InvalidFields(f"Invalid '{error.where}': {error.message}", param=error.where or None)
    job_input = {k: v for k, v in body.items() if k not in TRANSPORT}
    policy = await b.types.get(JOB_TYPE) or OPENAI_RESPONSES
    _check(policy, job_input)
    new = NewJob(tenant=owner, type=JOB_TYPE, input=job_input, max_attempts=policy.max_attempts,
                 retention_s=policy.retention_s, uses=resolve(policy.uses, job_input), priority=policy.priority)
    created = await create_within_rate(b.store, new, request.headers.get("idempotency-key"),
                                       b.settings.create_rate_per_min)
    if not created.same_request:
        raise Conflict("this Idempotency-Key was already used with another request body")
    job = created.job or await b.store.get(owner, created.job_id)
    if job is None:
        raise NotFound("the job created for this response no longer exists")
    if created.created:
        job_event(log, "job.created", "job created", job_id=job.id, job_type=job.type, tenant=job.tenant,
                  attempt=job.attempt)
    if body.get("stream"):
        return event_stream(b, job, -1)
    if not body.get("background"):  # a plain call: answer when it is done, as upstream would
        await _until_terminal(b, job.id)
        job = await b.store.job(job.id) or job
    return JSONResponse(snapshot(job))


@documented(get=RETRIEVE)
async def retrieve_response(request: Request) -> Response:
    b = backend(request)
    job = await _owned(request, b)
    stream = request.query_params.get("stream", "false").lower()
    if stream not in ("true", "false"):
        raise BadRequest("stream must be true or false")
    if stream == "false":
        return JSONResponse(snapshot(job))
    raw_after = request.query_params.get("starting_after", "-1")
    try:
        after = int(raw_after)
    except ValueError:
        raise BadRequest("starting_after must be an integer sequence number") from None
    return event_stream(b, job, after)


@documented(post=CANCEL)
async def cancel_response(request: Request) -> Response:
    b = backend(request)
    job = await _owned(request, b)
    result = await b.store.cancel(job.id, job.type, reason="cancelled through the OpenAI-compatible API")
    if result.outcome == Outcome.REQUESTED:  # running: its worker stops promptly; answer with the outcome
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_until_terminal(b, job.id), CANCEL_WAIT_S)
    return JSONResponse(snapshot(await b.store.job(job.id) or job))


routes = [
    Route("/v1/responses", create_response, methods=["POST"], name="openai_create_response"),
    Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"], name="openai_retrieve_response"),
    Route("/v1/responses/{response_id}/cancel", cancel_response, methods=["POST"], name="openai_cancel_response"),
]
