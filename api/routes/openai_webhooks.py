"""``POST /v1/webhooks/openai``: OpenAI's webhooks as a backstop for the OpenAI lane.

    verify (SDK ``webhooks.unwrap``, 300 s tolerance) ── bad ──▶ 400, nothing stored
      └─ first time this webhook-id? ── no ──▶ 200 "duplicate" (OpenAI delivers at least once)
           └─ which job? the index the worker wrote (``Keys.openai_object``), else the upstream
              object's ``metadata.job_id`` (the payload is thin: only the id)
                ├─ that lookup failed (5xx, timeout) ─▶ 503, webhook-id forgotten: OpenAI redelivers
                ├─ none / unknown job ─────────────▶ kept in the unmatched stream for review
                ├─ job finished or canceled ───────▶ recorded, nothing changes
                ├─ an object the job replaced (stuck in queued, gone) ─▶ recorded only ("replaced")
                ├─ not the job's current upstream object ─▶ recorded only ("not_current")
                ├─ *.cancelled ────────────────────▶ the job is canceled (the status table decides)
                ├─ job queued (back-off, restart) ─▶ made ready now: a worker resumes and finishes it
                └─ job running ────────────────────▶ recorded: its worker reads the same outcome

Every verified event lands in a capped stream with what it did. The job's own worker stays the
one that writes its output and result, so the newest attempt's output stays complete.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import openai
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.serialization import now_ms
from shared.status import TERMINAL, Status

from ..backend import Backend, backend
from ..errors import BadRequest, PayloadTooLarge, Unavailable
from ..operations import Operation, documented, reply

#: OpenAI redelivers for up to 72 h; remember ids a little longer
DEDUPE_S = 4 * 24 * 3600
STREAM_MAXLEN = 10_000
LOOKUP_TIMEOUT_S = 3.0
#: the Retry-After of a 503 when the upstream lookup failed (OpenAI's own back-off decides anyway)
LOOKUP_RETRY_S = 30


_SIGNATURE = tuple(
    {"name": name, "in": "header", "required": True, "schema": {"type": "string"}, "description": text}
    for name, text in (("webhook-id", "the event's id (redeliveries repeat it)"), ("webhook-timestamp", "unix seconds"),
                       ("webhook-signature", "v1,<base64 HMAC-SHA256> per Standard Webhooks"))
)
OUTCOME = {
    "type": "object",
    "required": ["received", "outcome"],
    "properties": {
        "received": {"const": True},
        "outcome": {"type": "string", "description": "duplicate, unmatched, recorded, nudged, replaced, "
                                                     "not_current, ignored, or a cancel's outcome"},
        "job_id": {"type": ["string", "null"]},
        "detail": {"type": "string"},
    },
}
WEBHOOK = Operation(
    "Receive an OpenAI webhook", "OpenAI-compatible",
    "OpenAI's webhooks for the responses and batches the OpenAI lane runs: a backstop that wakes a job "
    "waiting on its upstream object. Verified with BACKLANE_OPENAI_WEBHOOK_SECRET.",
    parameters=_SIGNATURE, body={"type": "object", "description": "OpenAI's webhook event"},
    replies={200: reply("verified and handled (or a duplicate)", OUTCOME)},
    errors={400: "the signature, a header or the JSON is not valid: nothing is stored", 413: "",
            503: "no webhook secret is configured, or looking up the upstream object failed: OpenAI redelivers"},
    security="none",
)


def _sdk() -> Any:
    """The openai package, imported on the first webhook: it takes most of the API's start-up time
    otherwise, and most deployments never receive OpenAI webhooks."""
    import openai

    return openai


@functools.cache
def _verifier() -> openai.OpenAI:
    """Signature checks only: this client never sends a request."""
    client: openai.OpenAI = _sdk().OpenAI(api_key="webhook-verification-only")
    return client


async def _job_of(b: Backend, event_type: str, object_id: str) -> tuple[str | None, str]:
    """The job the upstream object belongs to, or None and why not: the index the worker wrote
    when it checkpointed the id; else the object's ``metadata.job_id`` (created before the index
    existed, or past its retention). A lookup that fails raises Unavailable: OpenAI redelivers."""
    job_id = await b.store.job_of_upstream(object_id)
    if job_id:
        return job_id, ""
    openai = _sdk()
    try:
        client = openai.AsyncOpenAI(
            api_key=b.settings.openai_api_key, base_url=b.settings.openai_base_url,
            max_retries=0, timeout=LOOKUP_TIMEOUT_S,
        )
    except openai.OpenAIError:
        return None, "not indexed, and no OpenAI API key to look the object up with"
    try:
        async with client:
            if event_type.startswith("batch."):
                metadata: Any = (await client.batches.retrieve(object_id)).metadata
            else:
                metadata = (await client.responses.retrieve(object_id)).metadata
    except openai.NotFoundError:
        return None, "not indexed, and unknown upstream"
    except openai.APIError as exc:  # 5xx, 429, a timeout: the answer may differ on redelivery
        raise Unavailable(f"the upstream lookup of {object_id} failed: {exc.message}", LOOKUP_RETRY_S) from exc
    job_id = (metadata or {}).get("job_id")
    return (job_id, "") if isinstance(job_id, str) else (None, "the upstream object has no job_id metadata")


async def _apply(b: Backend, event_type: str, object_id: str) -> tuple[str, str | None, str]:
    """(outcome, job id, detail) of one verified, first-seen event."""
    job_id, why = await _job_of(b, event_type, object_id)
    job = await b.store.job(job_id) if job_id else None
    if job_id is None or job is None:
        return "unmatched", job_id, why or "no such job"
    status = job.status
    if status in TERMINAL:
        return "recorded", job_id, f"the job is already {status}"
    current = await b.store.checkpoint(job_id)
    field = "batch_id" if event_type.startswith("batch.") else "response_id"
    if isinstance(current, dict) and object_id in (current.get("replaced") or ()):
        # e.g. the response.cancelled of our own cancel of a response stuck in queued
        return "replaced", job_id, f"a response the job replaced; it now follows {current.get(field)}"
    if not isinstance(current, dict) or current.get(field) != object_id:
        return "not_current", job_id, f"the job's current upstream object is {(current or {}).get(field)}"
    if event_type.endswith(".cancelled"):
        result = await b.store.cancel(job_id, job.type, reason=f"{event_type} (OpenAI webhook)")
        return result.outcome, job_id, f"was {status}"
    if status == Status.QUEUED:
        await b.store.make_ready(job_id, job.type)
        return "nudged", job_id, "queued: made ready so a worker resumes it now"
    return "recorded", job_id, f"the job is {status}: its worker finishes it"


@documented(post=WEBHOOK)
async def openai_webhook(request: Request) -> JSONResponse:
    b = backend(request)
    secret = b.settings.openai_webhook_secret
    if not secret:  # 503: OpenAI keeps retrying, so nothing is lost while this gets configured
        raise Unavailable("OpenAI webhooks are not configured (BACKLANE_OPENAI_WEBHOOK_SECRET)", 60)
    body = await request.body()
    if len(body) > b.settings.max_body_bytes:
        raise PayloadTooLarge(f"the body is larger than {b.settings.max_body_bytes} bytes")
    try:
        event = _verifier().webhooks.unwrap(body, request.headers, secret=secret)
    except ValueError as exc:  # InvalidWebhookSignatureError, a missing header, bad JSON
        raise BadRequest(f"webhook not accepted: {exc}") from None
    webhook_id = request.headers["webhook-id"]
    seen_key = b.keys.openai_webhook_seen(webhook_id)
    if not await b.redis.set(seen_key, "1", nx=True, ex=DEDUPE_S):
        return JSONResponse({"received": True, "outcome": "duplicate"})
    try:
        object_id = str(getattr(event.data, "id", "") or "")
        if event.type.startswith(("response.", "batch.")) and object_id:
            outcome, job_id, detail = await _apply(b, event.type, object_id)
        else:
            outcome, job_id, detail = "ignored", None, "not an event of the OpenAI lane"
        row: dict[Any, Any] = {
            "webhook_id": webhook_id, "event_id": event.id, "type": event.type, "object_id": object_id,
            "job_id": job_id or "", "outcome": outcome, "detail": detail, "at": now_ms(),
            "body": body.decode(),
        }
        streams = [b.keys.openai_webhooks] + ([b.keys.openai_webhooks_unmatched] if outcome == "unmatched" else [])
        for stream in streams:
            await b.redis.xadd(stream, row, maxlen=STREAM_MAXLEN, approximate=True)
    except BaseException:
        await b.redis.delete(seen_key)  # not handled (a 5xx): let OpenAI's redelivery try again
        raise
    return JSONResponse({"received": True, "outcome": outcome, "job_id": job_id, "detail": detail})


routes = [Route("/v1/webhooks/openai", openai_webhook, methods=["POST"], name="openai_webhook")]
