"""``ctx.openai``: the official SDK client, with every model call it makes recorded in the trace.

    SDK ─▶ RecordingTransport ─▶ the network
              │ a model call (POST …/responses, …/chat/completions, …/completions, …/embeddings;
              │ GET …/responses/{id}: a resumed stream or a poll)
              ├─ JSON body: read it, pass it on unchanged, record its ``usage``
              └─ event stream: pass every chunk on as it comes, watch the ``data:`` lines for the
                 event that carries ``usage`` (``response.completed``, a chat chunk with usage)
                      └─▶ ctx.record_usage(model, tokens, latency, request id): a span under the
                          running step, priced by the table (shared/prices.py)

A model call (a POST) whose model names a configured resource ``openai:<model>`` goes through
``ctx.limit`` first (``compute/limits.py``): it waits for the resource's requests and tokens (estimated
from the body and its output cap, settled with the usage seen), and a 429 or 5xx answer counts for its
pause (Retry-After) and breaker, for every worker.

It sits below the SDK, so whatever the SDK does (streams, retries, raw responses) is seen the same
way, and what the handler receives is byte for byte what the upstream sent. A response is recorded
once per attempt (a poll that sees it finished again adds nothing).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx2
import openai

from shared.serialization import loads

from .errors import parse_retry_after
from .types._openai_client import make_client

if TYPE_CHECKING:
    from .context import JobContext
    from .limits import Call

#: the paths whose answers carry a model call's usage
MODEL_CALL = re.compile(r"/(responses|chat/completions|completions|embeddings)(/[^/]+)?$")


def usage_of(body: Any) -> tuple[str, int, int, int, str | None] | None:
    """(model, input, cached, output tokens, response id) of an API object or stream event that
    carries usage (Responses, Chat Completions, Completions, Embeddings), else None."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("response"), dict):  # a Responses stream event
        body = body["response"]
    usage = body.get("usage")
    if not isinstance(usage, dict) or not isinstance(body.get("model"), str):
        return None
    if "input_tokens" in usage:  # Responses
        details = usage.get("input_tokens_details") or {}
        return (body["model"], int(usage.get("input_tokens") or 0), int(details.get("cached_tokens") or 0),
                int(usage.get("output_tokens") or 0), body.get("id"))
    details = usage.get("prompt_tokens_details") or {}
    return (body["model"], int(usage.get("prompt_tokens") or 0), int(details.get("cached_tokens") or 0),
            int(usage.get("completion_tokens") or 0), body.get("id"))


class _Watched(httpx2.AsyncByteStream):
    """An event stream passed on chunk by chunk while its ``data:`` lines are read for usage."""

    def __init__(self, inner: Any, transport: RecordingTransport, started: float, request_id: str | None,
                 call: Call | None = None) -> None:
        self.inner = inner
        self.transport = transport
        self.started = started
        self.request_id = request_id
        self.call = call
        self.buffer = b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self.buffer += chunk
            *events, self.buffer = re.split(rb"\r?\n\r?\n", self.buffer)
            for event in events:
                await self._look(event)
            yield chunk

    async def _look(self, event: bytes) -> None:
        data = b"\n".join(line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:"))
        if not data or data == b"[DONE]" or b'"usage"' not in data:
            return
        try:
            body = loads(data)
        except ValueError:
            return
        await self.transport.seen(body, self.started, self.request_id, self.call)

    async def aclose(self) -> None:
        await self.inner.aclose()


class RecordingTransport(httpx2.AsyncBaseTransport):
    def __init__(self, ctx: JobContext, inner: httpx2.AsyncBaseTransport | None = None) -> None:
        self.ctx = ctx
        self.inner = inner or httpx2.AsyncHTTPTransport()
        self.recorded: set[str] = set()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if not MODEL_CALL.search(request.url.path):
            return await self.inner.handle_async_request(request)
        # the bytes are read here, below the SDK's decoding: ask for them plain
        request.headers["accept-encoding"] = "identity"
        resource, estimate = self._resource(request)
        async with self.ctx.limit(resource, tokens=estimate) as call:
            started = time.monotonic()
            response = await self.inner.handle_async_request(request)
            if response.status_code == 429 or response.status_code >= 500:
                call.fail(retry_after=parse_retry_after(response.headers.get("retry-after")))
        request_id = response.headers.get("x-request-id")
        if "text/event-stream" in response.headers.get("content-type", ""):
            return httpx2.Response(response.status_code, headers=response.headers, request=request,
                                   stream=_Watched(response.stream, self, started, request_id, call),
                                   extensions=response.extensions)
        if response.status_code >= 400 or "json" not in response.headers.get("content-type", ""):
            return response
        body = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
        await response.stream.aclose()  # type: ignore[union-attr]
        try:
            await self.seen(loads(body), started, request_id, call)
        except ValueError:
            pass
        return httpx2.Response(response.status_code, headers=response.headers, content=body, request=request,
                               extensions=response.extensions)

    def _resource(self, request: httpx2.Request) -> tuple[str, int]:
        """The resource a model call uses (``openai:<model>``, '' for a read) and its tokens, estimated:
        about 4 bytes of body per input token, plus the output cap it asks for."""
        if request.method != "POST":
            return "", 0
        try:
            body = loads(request.content)
        except ValueError:
            return "", 0
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return "", 0
        cap = next((body[k] for k in ("max_output_tokens", "max_completion_tokens", "max_tokens")
                    if isinstance(body.get(k), int)), 0)
        return f"openai:{body['model']}", len(request.content) // 4 + max(0, cap)

    async def seen(self, body: Any, started: float, request_id: str | None, call: Call | None = None) -> None:
        found = usage_of(body)
        if found is None:
            return
        model, input_tokens, cached, output, response_id = found
        if response_id:
            if response_id in self.recorded:
                return
            self.recorded.add(response_id)
        if call is not None:
            await call.settle_tokens(input_tokens + output)
        await self.ctx.record_usage(model=model, input_tokens=input_tokens, cached_tokens=cached,
                                    output_tokens=output, latency_ms=int((time.monotonic() - started) * 1000),
                                    request_id=request_id or response_id)

    async def aclose(self) -> None:
        await self.inner.aclose()


def recording_client(ctx: JobContext) -> openai.AsyncOpenAI:
    """The client ``ctx.openai`` returns."""
    return make_client(ctx.settings, http_client=httpx2.AsyncClient(transport=RecordingTransport(ctx)))
