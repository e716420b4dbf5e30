"""The ``openai.batch`` job type: bulk offline requests through the OpenAI Batch API.

Uploads the requests as JSONL, creates one batch, then follows it for as long as it takes
(hours: the worker's heartbeats keep the lease meanwhile), streaming ``progress`` from
``request_counts``. It runs as two durable steps, ``submit`` and ``collect``; within ``submit`` the
checkpoint holds the file id, then the batch id, so a restarted attempt re-attaches instead of
submitting again, and a restart between the two finds the batch by its input file. The result
joins the output and error files back to the requests by ``custom_id``.

Input: ``{requests: [{custom_id?, body}], endpoint?, completion_window?, metadata?, poll_interval_s?}``.
Result: ``{"batch_id", "status", "request_counts", "results": [{custom_id, status_code, output_text,
body, error}]}`` in the order of the requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

import openai

from compute.errors import InputError, PolicyError
from compute.registry import job_type
from shared.jobtypes import OPENAI_BATCH

from ._openai_client import make_client
from ._openai_errors import from_api_error

if TYPE_CHECKING:
    from compute.context import JobContext

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
#: batches examined when looking for one created just before a restart
FIND_LIMIT = 500


def jsonl(ctx: JobContext) -> tuple[list[str], bytes, str]:
    """The custom ids in request order, the JSONL to upload, and the endpoint."""
    raw = ctx.input if isinstance(ctx.input, dict) else {}
    requests = raw.get("requests")
    if not isinstance(requests, list) or not requests:
        raise InputError("input needs a non-empty 'requests' list")
    endpoint = str(raw.get("endpoint") or "/v1/responses")
    ids: list[str] = []
    lines: list[str] = []
    for i, request in enumerate(requests):
        if not isinstance(request, dict) or not isinstance(request.get("body"), dict):
            raise InputError(f"requests[{i}] needs a 'body' object")
        custom_id = str(request.get("custom_id") or f"request-{i}")
        ids.append(custom_id)
        line = {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": request["body"]}
        lines.append(json.dumps(line, separators=(",", ":")))
    if len(set(ids)) != len(ids):
        raise InputError("custom_id values must be unique")
    return ids, ("\n".join(lines) + "\n").encode(), endpoint


def output_text(body: Any) -> str | None:
    """The text of a Responses or Chat Completions body, for convenience next to the body itself."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("output"), list):
        parts = [p for item in body["output"] if isinstance(item, dict) for p in item.get("content") or []]
        texts = [p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "output_text"]
        return "".join(texts)
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        content = (choices[0].get("message") or {}).get("content")
        return content if isinstance(content, str) else None
    return None


def batch_model(raw: Any) -> str:
    """The model the batch's requests name (its price, with the Batch discount, applies to the usage the
    batch reports as a whole); ``mixed`` (no price) when they name several."""
    models = {str(r["body"].get("model")) for r in raw.get("requests") or [] if isinstance(r, dict)
              and isinstance(r.get("body"), dict) and r["body"].get("model")}
    return models.pop() if len(models) == 1 else "mixed"


class BatchRun:
    def __init__(self, ctx: JobContext, client: openai.AsyncOpenAI, checkpoint: dict[str, Any]) -> None:
        self.ctx = ctx
        self.client = client
        self.reads = client.with_options(max_retries=3)
        self.checkpoint = checkpoint
        self.seen: tuple[str, int, int, int] | None = None

    async def submit(self, data: bytes, endpoint: str) -> str:
        cp, raw = self.checkpoint, self.ctx.input
        if "file_id" not in cp:
            name = f"backlane-{self.ctx.job_id}.jsonl"
            upload = await self.client.files.create(file=(name, data), purpose="batch")
            cp["file_id"] = upload.id
            await self.ctx.save_checkpoint(cp)
        else:
            found = await self.find(cp["file_id"])
            if found is not None:
                return found
        metadata = {**(raw.get("metadata") or {}), "job_id": self.ctx.job_id}
        batch = await self.client.batches.create(
            input_file_id=cp["file_id"], endpoint=endpoint,  # type: ignore[arg-type]
            completion_window=raw.get("completion_window") or "24h", metadata=metadata,
        )
        return batch.id

    async def find(self, file_id: str) -> str | None:
        """The batch an earlier attempt created from this file before it could save the id."""
        seen = 0
        async for batch in self.reads.batches.list(limit=100):
            if batch.input_file_id == file_id:
                return batch.id
            seen += 1
            if seen >= FIND_LIMIT:
                break
        return None

    async def report(self, batch: Any) -> None:
        counts = batch.request_counts
        total, done, failed = (counts.total, counts.completed, counts.failed) if counts else (0, 0, 0)
        now = (batch.status, total, done, failed)
        if now == self.seen:
            return
        self.seen = now
        fraction = (done + failed) / total if total else None
        await self.ctx.progress(
            f"batch {batch.status}: {done + failed}/{total} requests ({failed} failed)", step=batch.status,
            fraction=fraction,
        )

    async def follow(self, batch_id: str, poll_s: float) -> Any:
        while True:
            batch = await self.reads.batches.retrieve(batch_id)
            await self.report(batch)
            if batch.status in TERMINAL:
                return batch
            await asyncio.sleep(poll_s)

    async def lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        content = await self.reads.files.content(file_id)
        return [json.loads(line) for line in content.text.splitlines() if line.strip()]

    async def results(self, batch: Any, ids: list[str]) -> list[dict[str, Any]]:
        by_id: dict[str, dict[str, Any]] = {}
        for row in await self.lines(batch.output_file_id) + await self.lines(batch.error_file_id):
            response = row.get("response") or {}
            body = response.get("body")
            by_id[row["custom_id"]] = {
                "custom_id": row["custom_id"], "status_code": response.get("status_code"),
                "output_text": output_text(body), "body": body, "error": row.get("error"),
            }
        missing = {"code": f"batch_{batch.status}", "message": f"no result: the batch ended {batch.status}"}
        return [by_id.get(cid) or {
            "custom_id": cid, "status_code": None, "output_text": None, "body": None, "error": missing,
        } for cid in ids]

    async def usage(self, batch: Any) -> None:
        u = batch.usage
        if u is not None:
            await self.ctx.record_usage(
                model=batch_model(self.ctx.input), input_tokens=u.input_tokens or 0, output_tokens=u.output_tokens or 0,
                cached_tokens=u.input_tokens_details.cached_tokens or 0, request_id=batch.id, batch=True,
            )

    async def finish(self, batch: Any, ids: list[str]) -> dict[str, Any]:
        """An expired batch still returns what it finished; the rest carry an error each."""
        await self.usage(batch)
        if batch.status == "failed":
            errors = [str(e.message or e.code) for e in (batch.errors.data or [])] if batch.errors else []
            raise InputError(f"batch {batch.id} failed: {'; '.join(errors) or 'no reason given'}")
        if batch.status == "cancelled":
            raise PolicyError(f"batch {batch.id} was cancelled upstream")
        counts = batch.request_counts
        return {
            "batch_id": batch.id, "status": batch.status,
            "request_counts": counts.model_dump() if counts else None,
            "results": await self.results(batch, ids),
        }

    async def cancel_upstream(self) -> None:
        batch_id = self.checkpoint.get("batch_id")
        if batch_id:
            with contextlib.suppress(openai.APIError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.client.batches.cancel(batch_id)), 5.0)


@job_type("openai.batch", policy=OPENAI_BATCH)
async def openai_batch(ctx: JobContext) -> dict[str, Any]:
    """Bulk requests through the OpenAI Batch API; a restart re-attaches to the same batch."""
    ids, data, endpoint = jsonl(ctx)
    poll_s = float(ctx.input.get("poll_interval_s") or 30.0)
    checkpoint = await ctx.load_checkpoint()
    async with make_client(ctx.settings) as client:
        run_ = BatchRun(ctx, client, checkpoint if isinstance(checkpoint, dict) else {})
        async def submitted() -> str:
            if "batch_id" in run_.checkpoint:
                await ctx.progress(f"re-attaching to batch {run_.checkpoint['batch_id']}", step="attach")
            else:
                run_.checkpoint["batch_id"] = batch_id = await run_.submit(data, endpoint)
                await ctx.index_upstream(batch_id)  # a webhook about the batch finds the job here
                await ctx.save_checkpoint(run_.checkpoint)
            return str(run_.checkpoint["batch_id"])

        async def collected(batch_id: str) -> dict[str, Any]:
            return await run_.finish(await run_.follow(batch_id, poll_s), ids)

        try:
            # two durable steps: the batch once submitted, then its results once collected
            batch_id: str = await ctx.step("submit", submitted)
            run_.checkpoint["batch_id"] = batch_id
            result: dict[str, Any] = await ctx.step("collect", collected, batch_id)
            return result
        except asyncio.CancelledError:
            if ctx.cancelled.is_set():  # not on a worker shutdown: the next attempt re-attaches
                await run_.cancel_upstream()
            raise
        except openai.APIError as exc:
            raise from_api_error(exc) from exc
