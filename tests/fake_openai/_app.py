"""The HTTP surface of the fake upstream: the routes of ``/v1/responses``, ``/v1/files`` and
``/v1/batches`` in OpenAI's wire format (SSE frames ``event: <type>`` / ``data: <json>``)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import webhooks
from ._batches import FakeBatch, FakeFile
from ._controls import HttpFault
from ._responses import FakeResponse, new_id

if TYPE_CHECKING:
    from . import FakeOpenAI


class StreamDrop(Exception):
    """Raised inside a stream body to reset the connection mid-response (a test control)."""


class DropFilter(logging.Filter):
    """Keeps uvicorn from printing a traceback for every connection the fake cuts on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not _contains_drop(exc)


def _contains_drop(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, StreamDrop):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_contains_drop(e) for e in exc.exceptions)
    return _contains_drop(exc.__cause__ or exc.__context__)


def error(status: int, message: str, *, code: str | None = None, type_: str = "invalid_request_error",
          param: str | None = None, retry_after: str | None = None, retry_after_ms: str | None = None,
          ) -> JSONResponse:
    headers = {k: v for k, v in (("retry-after", retry_after), ("retry-after-ms", retry_after_ms)) if v is not None}
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def fault_response(fault: HttpFault) -> JSONResponse:
    f = fault
    return error(f.status, f.message, code=f.code, type_=f.type, retry_after=f.retry_after,
                 retry_after_ms=f.retry_after_ms)


def frame(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def build_app(fake: FakeOpenAI) -> Starlette:
    c = fake.controls

    def unauthorized(request: Request) -> Response | None:
        if c.api_key and request.headers.get("authorization") != f"Bearer {c.api_key}":
            return error(401, "Incorrect API key provided.", code="invalid_api_key")
        return None

    async def stream_events(resp: FakeResponse, after: int, *, owns_run: bool) -> AsyncIterator[bytes]:
        drop_at = c.drops.pop(0) if c.drops else None
        fake.stream_connections += 1
        i, sent = after + 1, 0
        try:
            while True:
                while i < len(resp.events):
                    if drop_at is not None and sent >= drop_at:
                        if c.drop_mode == "abort":
                            raise StreamDrop(f"cut after {sent} events")
                        return
                    yield frame(resp.events[i])
                    i, sent = i + 1, sent + 1
                if resp.finished:
                    return
                await resp.wait_change()
        finally:
            # a synchronous (non-background) response dies with its connection
            if owns_run and not resp.finished and resp.task is not None:
                resp.task.cancel()

    def sse(body: AsyncIterator[bytes]) -> StreamingResponse:
        headers = {"x-request-id": new_id("req")}
        return StreamingResponse(body, media_type="text/event-stream", headers=headers)

    async def announce(kind: str, obj: FakeResponse | FakeBatch) -> None:
        if obj.task is not None:
            try:
                await asyncio.shield(obj.task)
            except asyncio.CancelledError:
                pass
        if c.webhook_url and c.webhook_secret:
            delivery = webhooks.build(c.webhook_secret, f"{kind}.{obj.status}", obj.id)
            fake.webhooks_sent.append(delivery)
            try:
                await webhooks.deliver_async(c.webhook_url, delivery)
            except Exception as exc:  # the receiver being down is the receiver's problem
                logging.getLogger("fake_openai").warning("webhook delivery failed: %s", exc)

    async def create_response(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        fake.create_calls += 1
        body = json.loads(await request.body())
        fake.create_bodies.append(body)
        if c.create_faults:
            return fault_response(c.create_faults.pop(0))
        if "model" not in body or "input" not in body:
            return error(400, "Missing required parameter: 'model' or 'input'.", param="model")
        if len(json.dumps(body["input"])) > c.context_window_chars:
            return error(400, "Your input exceeds the context window of this model. Please adjust your input "
                              "and try again.", code="context_length_exceeded", param="input")
        background, stream = bool(body.get("background")), bool(body.get("stream"))
        if background and not c.supports_background:
            return error(400, "background mode is not supported by this server", param="background")
        if background and body.get("store") is False:
            return error(400, "Background sampling requires store=true.", param="store")
        resp = FakeResponse(body, c, background=background, stream=stream)
        fake.responses[resp.id] = resp
        resp.start()
        if background:
            fake.background_tasks.add(asyncio.create_task(announce("response", resp)))
        if stream:
            return sse(stream_events(resp, -1, owns_run=not background))
        if background:
            return JSONResponse(resp.snapshot())
        await resp.wait_finished()
        return JSONResponse(resp.snapshot())

    def find(request: Request) -> FakeResponse | Response:
        response_id = request.path_params["id"]
        resp = fake.responses.get(response_id)
        if resp is None:
            return error(404, f"Response with id '{response_id}' not found.", param="response_id")
        return resp

    async def retrieve_response(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        fake.retrieve_calls += 1
        fake.retrieve_at.append(time.monotonic())
        if c.retrieve_faults:
            return fault_response(c.retrieve_faults.pop(0))
        resp = find(request)
        if isinstance(resp, Response):
            return resp
        if request.query_params.get("stream") != "true":
            return JSONResponse(resp.snapshot())
        if not (resp.background and resp.streamed):
            return error(400, "Only background responses created with stream=true can be streamed again.",
                         param="stream")
        fake.resume_after.append(int(request.query_params.get("starting_after", "-1")))
        return sse(stream_events(resp, fake.resume_after[-1], owns_run=False))

    async def cancel_response(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        resp = find(request)
        if isinstance(resp, Response):
            return resp
        fake.cancel_calls.append(resp.id)
        if not resp.background:
            return error(400, "Only responses created with background=true can be cancelled.")
        resp.cancel()
        return JSONResponse(resp.snapshot())

    async def delete_response(request: Request) -> Response:
        resp = find(request)
        if isinstance(resp, Response):
            return resp
        resp.cancel()
        del fake.responses[resp.id]
        return JSONResponse({"id": resp.id, "object": "response.deleted", "deleted": True})

    async def upload_file(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        raw = await request.body()
        head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in BytesParser(policy=HTTP).parsebytes(head + raw).iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
        if "file" not in fields or "purpose" not in fields:
            return error(400, "Missing required parameter: 'file' or 'purpose'.")
        f = FakeFile(new_id("file"), fields["file"][0] or "upload.jsonl", fields["purpose"][1].decode(),
                     fields["file"][1])
        fake.files[f.id] = f
        return JSONResponse(f.json())

    async def file_content(request: Request) -> Response:
        f = fake.files.get(request.path_params["id"])
        if f is None:
            return error(404, f"No such File object: {request.path_params['id']}", param="id")
        return Response(f.content, media_type="application/octet-stream")

    async def create_batch(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        body = json.loads(await request.body())
        fake.batch_create_calls += 1
        f = fake.files.get(body.get("input_file_id", ""))
        if f is None:
            return error(400, "input_file_id not found", param="input_file_id")
        batch = FakeBatch(body, f)
        fake.batches[batch.id] = batch
        batch.task = asyncio.create_task(batch.run(c, fake.files))
        fake.background_tasks.add(asyncio.create_task(announce("batch", batch)))
        return JSONResponse(batch.json())

    def find_batch(request: Request) -> FakeBatch | Response:
        batch = fake.batches.get(request.path_params["id"])
        return batch if batch is not None else error(404, "No batch found", param="batch_id")

    async def retrieve_batch(request: Request) -> Response:
        batch = find_batch(request)
        return batch if isinstance(batch, Response) else JSONResponse(batch.json())

    async def cancel_batch(request: Request) -> Response:
        batch = find_batch(request)
        if isinstance(batch, Response):
            return batch
        batch.cancel()
        return JSONResponse(batch.json())

    async def list_batches(request: Request) -> Response:
        rows = [b.json() for b in reversed(fake.batches.values())]
        if after := request.query_params.get("after"):
            ids = [r["id"] for r in rows]
            rows = rows[ids.index(after) + 1:] if after in ids else []
        limit = int(request.query_params.get("limit", "20"))
        page = rows[:limit]
        return JSONResponse({
            "object": "list", "data": page, "has_more": len(rows) > limit,
            "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None,
        })

    return Starlette(routes=[
        Route("/v1/responses", create_response, methods=["POST"]),
        Route("/v1/responses/{id}", retrieve_response, methods=["GET"]),
        Route("/v1/responses/{id}", delete_response, methods=["DELETE"]),
        Route("/v1/responses/{id}/cancel", cancel_response, methods=["POST"]),
        Route("/v1/files", upload_file, methods=["POST"]),
        Route("/v1/files/{id}/content", file_content, methods=["GET"]),
        Route("/v1/batches", create_batch, methods=["POST"]),
        Route("/v1/batches", list_batches, methods=["GET"]),
        Route("/v1/batches/{id}", retrieve_batch, methods=["GET"]),
        Route("/v1/batches/{id}/cancel", cancel_batch, methods=["POST"]),
    ])
