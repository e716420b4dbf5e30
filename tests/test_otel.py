"""OTLP export of job traces, received by a local OTLP/HTTP receiver on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from redis.asyncio import Redis
from test_traces import paid_steps
from test_worker import submit, types

from compute.otel import span_id, trace_id
from compute.worker import Worker
from shared.jobs import JobStore
from shared.settings import Settings

pytestmark = pytest.mark.anyio


class Receiver:
    """Accepts OTLP/HTTP protobuf exports at /v1/traces and keeps every span."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.paths.append(self.path)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource_spans in request.resource_spans:
                    for scope in resource_spans.scope_spans:
                        receiver.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


async def test_a_job_s_spans_are_exported_as_one_trace_with_genai_attributes_and_linked_attempts(
        redis: Redis, settings: Settings, receiver: Receiver) -> None:
    lane = Settings.from_env({"BACKLANE_REDIS_URL": settings.redis_url or "", "BACKLANE_HEARTBEAT_S": "0.2",
                              "BACKLANE_LEASE_S": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url})
    assert lane.otlp_endpoint == receiver.url + "/v1/traces"
    store = JobStore(redis, lane)
    job_id = await submit(store, "test.paid_steps")
    await Worker(lane, redis, types(paid_steps)).run(burst=True)  # ends by flushing the export
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    spans = receiver.spans
    assert {int.from_bytes(s.trace_id, "big") for s in spans} == {trace_id(job_id)}  # one trace per job
    by_id = {int.from_bytes(s.span_id, "big"): s for s in spans}
    job = by_id[span_id(job_id, "job")]
    assert job.name == "test.paid_steps" and not job.parent_span_id
    first, second = by_id[span_id(job_id, "attempt:1")], by_id[span_id(job_id, "attempt:2")]
    assert int.from_bytes(second.parent_span_id, "big") == span_id(job_id, "job")
    assert [int.from_bytes(link.span_id, "big") for link in second.links] == [span_id(job_id, "attempt:1")]
    assert first.status.code == 2 and second.status.code == 1  # ERROR, OK
    calls = [s for s in spans if attrs(s).get("gen_ai.request.model")]
    assert len(calls) == 5
    call = attrs(calls[-1])
    assert call["gen_ai.usage.input_tokens"] == 1000 and call["gen_ai.usage.output_tokens"] == 100
    assert call["gen_ai.usage.cache_read.input_tokens"] == 200 and call["gen_ai.operation.name"] == "chat"
    assert calls[-1].name == "chat gpt-4o-mini"
    replayed = by_id[span_id(job_id, "2:step:part#1")]
    assert attrs(replayed)["backlane.status"] == "replayed"
    assert int.from_bytes(replayed.parent_span_id, "big") == span_id(job_id, "attempt:2")
    for call_span in calls:  # each call sits under the step that made it
        parent = by_id[int.from_bytes(call_span.parent_span_id, "big")]
        assert attrs(parent)["backlane.span.kind"] == "step"
