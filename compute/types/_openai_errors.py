"""OpenAI failures → Backlane failure classes.

Two places a provider says no: an HTTP error from the SDK (``from_api_error``), or a response
that ran and ended badly (``from_response``: ``failed``, ``incomplete`` by content filter, a
refusal, a cancel nobody here asked for). Rate limits and server errors are transient (with the
provider's Retry-After); bad requests and context length are input; content filters, refusals
and flagged prompts are policy.
"""

from __future__ import annotations

from typing import Any

import openai

from compute.errors import InputError, JobError, PolicyError, TransientError, parse_retry_after

#: error codes of a refused prompt or output: no retry will change the answer
POLICY_CODES = frozenset(
    {"content_policy_violation", "content_filter", "invalid_prompt", "insufficient_quota"}
)
#: response.error codes after which the same request may well succeed
TRANSIENT_CODES = frozenset({"server_error", "rate_limit_exceeded", "vector_store_timeout", "timeout"})


class BackgroundRefused(Exception):
    """The upstream answered ``background: true`` with 400: it has no background mode."""


def retry_after(exc: openai.APIStatusError) -> float | None:
    """The provider's wait: ``retry-after-ms`` first (OpenAI sends it), then ``retry-after``."""
    headers = exc.response.headers
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


def refuses_background(exc: openai.APIStatusError) -> bool:
    return exc.status_code == 400 and (exc.param == "background" or "background" in exc.message.lower())


def from_api_error(exc: openai.APIError) -> JobError:
    code = exc.code or ""
    message = f"OpenAI: {exc.message}" + (f" ({code})" if code else "")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if code in POLICY_CODES:
            return PolicyError(message)
        if status == 429 or status >= 500 or status in (408, 409):
            return TransientError(message, retry_after=retry_after(exc))
        if status == 403:
            return PolicyError(message)
        return InputError(message)
    if isinstance(exc, openai.APIConnectionError):  # timeouts included
        return TransientError(message)
    if isinstance(exc, openai.APIResponseValidationError):
        return InputError(f"the upstream answered in an unexpected shape: {exc.message}")
    # an error object inside a stream (the SDK raises APIError for {"error": {...}} payloads)
    return from_code(code, message)


def from_code(code: str, message: str) -> JobError:
    if code in POLICY_CODES:
        return PolicyError(message)
    if code in TRANSIENT_CODES or not code:
        return TransientError(message)
    return InputError(message)


def _refusal(response: Any) -> str | None:
    for item in response.output or []:
        for part in getattr(item, "content", None) or []:
            if getattr(part, "type", None) == "refusal":
                return str(part.refusal)
    return None


def from_response(response: Any) -> JobError | None:
    """Why a finished response counts as a failure, or None when its result stands.

    ``incomplete`` because of ``max_output_tokens`` stands: the text is what was asked for.
    """
    status = response.status
    if status == "failed":
        err = response.error
        code = (getattr(err, "code", None) or "") if err is not None else ""
        text = getattr(err, "message", None) or "the response failed"
        return from_code(str(code), f"OpenAI response {response.id} failed: {text} ({code or 'no code'})")
    if status == "incomplete":
        reason = getattr(response.incomplete_details, "reason", None)
        if reason == "content_filter":
            return PolicyError(f"OpenAI response {response.id} stopped by the content filter")
        return None
    if status == "cancelled":
        return PolicyError(f"OpenAI response {response.id} was cancelled upstream")
    refusal = _refusal(response)
    if refusal is not None and not response.output_text:
        return PolicyError(f"the model refused: {refusal}")
    return None
