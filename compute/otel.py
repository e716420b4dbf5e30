"""OTLP export of job traces, when the OpenTelemetry SDK's ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``…_TRACES_ENDPOINT``) is set; the SDK's other ``OTEL_*`` variables (headers, timeout,
``OTEL_SERVICE_NAME``) apply as usual.

    trace id = sha256(job id)[:16]          one trace per job, whichever workers ran it: every id
    span id  = sha256(job id, span id)[:8]  is derived, so no process has to ask another
      job         exported by the worker that ends the job (created_at → finished_at)
      └─ attempt N   exported when the attempt ends, linked to attempt N-1
         └─ step, llm (GenAI semantic conventions), apply: exported as each ends

Spans go through the SDK's BatchSpanProcessor: exporting never waits on the collector.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

from shared.job import Job
from shared.serialization import ms_of
from shared.status import TERMINAL, Status

from .spans import Span

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

#: gen_ai.provider.name of a model call (the calls ctx.openai records; record_usage names no provider)
PROVIDER = "openai"


def _id(*parts: str, size: int) -> int:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:size], "big") or 1


def trace_id(job_id: str) -> int:
    return _id(job_id, size=16)


def span_id(job_id: str, span: str) -> int:
    return _id(job_id, span, size=8)


class OtlpExport:
    def __init__(self, endpoint: str, service_name: str | None = None) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.processor: BatchSpanProcessor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint),
                                                                schedule_delay_millis=500)
        name = service_name or os.environ.get("OTEL_SERVICE_NAME") or "backlane-worker"
        self.resource = Resource.create({"service.name": name})

    def _export(self, job_id: str, sid: str, parent: str | None, name: str, kind: str, start_ms: int,
                end_ms: int, ok: bool, attributes: dict[str, Any], links: tuple[str, ...] | list[str] = ()) -> None:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

        tid = trace_id(job_id)

        def context(of: str) -> SpanContext:
            return SpanContext(tid, span_id(job_id, of), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))

        span = ReadableSpan(
            name=name, context=context(sid), parent=context(parent) if parent else None, resource=self.resource,
            attributes={k: v for k, v in attributes.items() if v is not None},
            links=[Link(context(other)) for other in links],
            kind=SpanKind.CLIENT if kind == "llm" else SpanKind.INTERNAL,
            status=Status(StatusCode.OK if ok else StatusCode.ERROR),
            start_time=start_ms * 1_000_000, end_time=max(start_ms, end_ms) * 1_000_000,
        )
        self.processor.on_end(span)

    def span(self, job_id: str, job_type: str, span: Span) -> None:
        """A step, model call or apply span that ended."""
        attributes: dict[str, Any] = {"backlane.job.id": job_id, "backlane.job.type": job_type,
                                      "backlane.attempt": span.attempt, "backlane.span.kind": span.kind,
                                      "backlane.status": span.status}
        name = span.name
        if span.kind == "llm":
            usage = span.usage or {}
            name = f"chat {span.name}"
            attributes.update({
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": PROVIDER, "gen_ai.system": PROVIDER,
                "gen_ai.request.model": span.name, "gen_ai.response.model": span.name,
                "gen_ai.usage.input_tokens": usage.get("input_tokens"),
                "gen_ai.usage.output_tokens": usage.get("output_tokens"),
                "gen_ai.usage.cache_read.input_tokens": usage.get("cached_tokens"),
                "gen_ai.response.id": span.attributes.get("request_id"),
                "backlane.cost_usd": None if span.cost_nusd is None else span.cost_nusd / 1e9,
            })
        else:
            attributes.update({f"backlane.{k}": v for k, v in span.attributes.items()
                               if isinstance(v, str | int | float | bool)})
        self._export(job_id, span.id, span.parent_id, name, span.kind, span.start, span.end or span.start,
                     span.status in ("ok", "replayed"), attributes)

    def attempt_ended(self, job: Job, attempt: int) -> None:
        """The attempt's span (linked to the one before), and the job's when the job has ended."""
        entry = next((a for a in job.attempts if a.get("attempt") == attempt), {})
        start, end = ms_of(entry.get("started_at")), ms_of(entry.get("ended_at"))
        if start is None:
            return
        ended = entry.get("status")
        attributes: dict[str, Any] = {"backlane.job.id": job.id, "backlane.job.type": job.type,
                                      "backlane.attempt": attempt, "backlane.worker": entry.get("worker"),
                                      "backlane.attempt.ended_as": ended,
                                      "backlane.attempt.reason": entry.get("reason")}
        ok = ended in ("completed", "needs_review") or entry.get("reason") == "worker_shutdown"
        earlier = [f"attempt:{attempt - 1}"] if attempt > 1 else []
        self._export(job.id, f"attempt:{attempt}", "job", f"attempt {attempt}", "attempt", start,
                     end or start, ok, attributes, earlier)
        if job.status in TERMINAL and job.created_at is not None:
            self._export(job.id, "job", None, job.type, "job", job.created_at, job.finished_at or end or start,
                         job.status == Status.COMPLETED,
                         {"backlane.job.id": job.id, "backlane.job.type": job.type,
                          "backlane.job.status": job.status.value, "backlane.job.attempts": job.attempt})

    def shutdown(self) -> None:
        self.processor.shutdown()  # type: ignore[no-untyped-call]  # flushes what is queued
