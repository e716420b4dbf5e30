"""The fake upstream itself, driven by the real ``openai`` SDK with strict response validation:
if these pass, the handler tests exercise the wire format the SDK really parses."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fake_openai import FakeOpenAI, HttpFault, Outcome
from fake_openai import webhooks as wh
from openai import OpenAI


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[OpenAI]:
    with OpenAI(base_url=fake.base_url, api_key="test", max_retries=0, _strict_response_validation=True) as c:
        yield c


def deltas(events: list[Any]) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


def test_background_stream_has_the_documented_shape(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.controls.cached_tokens = 1920
    events = list(client.responses.create(
        model="gpt-fake", input="hello", background=True, stream=True, store=True, metadata={"job_id": "j1"},
    ))
    types = [e.type for e in events]
    assert types[:5] == [
        "response.created", "response.queued", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.status == "completed" and final.metadata == {"job_id": "j1"} and final.background
    assert deltas(events) == final.output_text == "Reply to hello: " + " ".join(f"w{i}" for i in range(12))
    assert final.usage is not None and final.usage.input_tokens_details.cached_tokens == 1920
    assert events[0].response.status == "queued" and events[0].response.id == final.id


def test_resume_with_starting_after_sends_only_later_events(fake: FakeOpenAI, client: OpenAI) -> None:
    first = list(client.responses.create(model="m", input="x", background=True, stream=True))
    resumed = list(client.responses.retrieve(first[0].response.id, stream=True, starting_after=6))
    assert [e.sequence_number for e in resumed] == list(range(7, len(first)))
    assert deltas(first[:7]) + deltas(resumed) == first[-1].response.output_text
    assert fake.resume_after == [6]


def test_the_response_runs_on_after_the_client_disconnects(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.controls.token_delay_s = 0.01
    stream = client.responses.create(model="m", input="x", background=True, stream=True)
    head = [next(iter(stream)) for _ in range(3)]
    stream.close()
    response_id = head[0].response.id
    fake.wait_for(lambda: fake.responses[response_id].finished)
    polled = client.responses.retrieve(response_id)
    assert polled.status == "completed" and polled.output_text.startswith("Reply to x")


def test_background_without_stream_then_poll(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.controls.queued_delay_s = 0.05
    created = client.responses.create(model="m", input="x", background=True)
    assert created.status == "queued" and created.output == []
    fake.wait_for(lambda: client.responses.retrieve(created.id).status == "completed")
    with pytest.raises(openai.BadRequestError):  # not created with stream=true: no stream to resume
        client.responses.retrieve(created.id, stream=True, starting_after=0)


def test_plain_stream_plain_call_and_the_stream_helper(client: OpenAI) -> None:
    plain = list(client.responses.create(model="m", input="x", stream=True))
    assert plain[-1].type == "response.completed" and not plain[-1].response.background
    assert client.responses.create(model="m", input="x").output_text == plain[-1].response.output_text
    with client.responses.stream(model="m", input="x") as helper:
        assert helper.get_final_response().output_text == plain[-1].response.output_text


@pytest.mark.parametrize("mode", ["abort", "eof"])
def test_drop_cuts_a_stream_after_k_events(fake: FakeOpenAI, client: OpenAI, mode: str) -> None:
    fake.controls.drops = [4]
    fake.controls.drop_mode = mode  # type: ignore[assignment]
    seen: list[int] = []
    stream = client.responses.create(model="m", input="x", background=True, stream=True)
    if mode == "abort":
        with pytest.raises(openai.APIConnectionError):
            seen.extend(e.sequence_number for e in stream)
    else:
        seen.extend(e.sequence_number for e in stream)
    assert seen == [0, 1, 2, 3]
    rest = list(client.responses.retrieve(fake.only_response().id, stream=True, starting_after=3))
    assert rest[0].sequence_number == 4 and rest[-1].type == "response.completed"


def test_faults_429_with_retry_after_and_5xx_are_counted(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.controls.create_faults = [
        HttpFault(429, code="rate_limit_exceeded", retry_after="7", type="requests"), HttpFault(503),
    ]
    with pytest.raises(openai.RateLimitError) as rate:
        client.responses.create(model="m", input="x", background=True, stream=True)
    assert rate.value.response.headers["retry-after"] == "7" and rate.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="m", input="x", background=True, stream=True)
    assert fake.create_calls == 2 and fake.responses == {}


def test_sdk_retries_a_create_by_default(fake: FakeOpenAI) -> None:
    """Why the handler uses max_retries=0: the SDK re-POSTs a create after a 5xx."""
    fake.controls.create_faults = [HttpFault(500, retry_after="0")]
    with OpenAI(base_url=fake.base_url, api_key="t", max_retries=1, _strict_response_validation=True) as c:
        c.responses.create(model="m", input="x", background=True)
    assert fake.create_calls == 2


def test_context_length_and_background_refusal_are_400s(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.controls.context_window_chars = 10
    with pytest.raises(openai.BadRequestError) as too_long:
        client.responses.create(model="m", input="x" * 50)
    assert too_long.value.code == "context_length_exceeded"
    fake.controls.context_window_chars = 1000
    fake.controls.supports_background = False
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="m", input="x", background=True, stream=True)
    assert refused.value.param == "background"


def test_outcomes_failed_content_filter_refusal(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.controls.outcomes = [Outcome("failed"), Outcome("content_filter"), Outcome("refusal")]
    finals = [list(client.responses.create(model="m", input="x", background=True, stream=True))[-1]
              for _ in range(3)]
    assert [f.type for f in finals] == ["response.failed", "response.incomplete", "response.completed"]
    assert finals[0].response.error.code == "server_error"
    assert finals[1].response.incomplete_details.reason == "content_filter"
    assert finals[2].response.output[0].content[0].type == "refusal"


def test_stuck_in_queued_until_cancelled(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.controls.outcomes = [Outcome("stuck_queued")]
    stream = client.responses.create(model="m", input="x", background=True, stream=True)
    it = iter(stream)
    first, second = next(it), next(it)
    assert (first.type, second.type) == ("response.created", "response.queued")
    assert client.responses.retrieve(first.response.id).status == "queued"
    assert client.responses.cancel(first.response.id).status == "cancelled"
    assert list(it) == []  # the stream ends with no event for the cancel
    assert client.responses.cancel(first.response.id).status == "cancelled"  # idempotent


def test_batches_run_and_report_counts_and_files(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.controls.batch_request_delay_s = 0.05
    fake.controls.batch_failures = {"b"}
    lines = [
        {"custom_id": cid, "method": "POST", "url": "/v1/responses", "body": {"model": "m", "input": cid}}
        for cid in ("a", "b", "c")
    ]
    jsonl = "\n".join(json.dumps(x) for x in lines).encode()
    upload = client.files.create(file=("in.jsonl", jsonl), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h")
    counts = set()
    while batch.status not in ("completed", "failed"):
        batch = client.batches.retrieve(batch.id)
        assert batch.request_counts is not None
        counts.add(batch.request_counts.completed + batch.request_counts.failed)
        time.sleep(0.01)
    assert len(counts) > 1 and batch.request_counts is not None and batch.request_counts.total == 3
    assert batch.output_file_id and batch.error_file_id
    out = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    assert {x["custom_id"] for x in out} == {"a", "c"}
    assert out[0]["response"]["body"]["output"][0]["content"][0]["text"].startswith("Reply to a")
    err = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
    assert [x["custom_id"] for x in err] == ["b"]
    assert [b.id for b in client.batches.list()] == [batch.id]


def test_webhook_signatures_verify_with_the_sdk(client: OpenAI) -> None:
    secret = wh.new_secret()
    good = wh.build(secret, "response.completed", "resp_1")
    event = client.webhooks.unwrap(good.body, good.headers, secret=secret)
    assert (event.type, event.data.id) == ("response.completed", "resp_1")
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(good.body.replace(b"resp_1", b"resp_2"), good.headers, secret=secret)
    stale = wh.build(secret, "response.completed", "resp_1", timestamp=int(time.time()) - 600)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(stale.body, stale.headers, secret=secret)


def test_finished_responses_are_announced_by_webhook(fake: FakeOpenAI, client: OpenAI) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((dict(self.headers), self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fake.controls.webhook_secret = secret = wh.new_secret()
        fake.controls.webhook_url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        created = client.responses.create(model="m", input="x", background=True)
        fake.wait_for(lambda: len(received) == 1)
    finally:
        server.shutdown()
    headers, body = received[0]
    event = client.webhooks.unwrap(body, {k.lower(): v for k, v in headers.items()}, secret=secret)
    assert (event.type, event.data.id) == ("response.completed", created.id)


def test_a_stream_error_event_is_the_flat_shape_the_sdk_yields(fake: FakeOpenAI, client: OpenAI) -> None:
    from openai.types.responses import ResponseErrorEvent

    fake.controls.outcomes = [Outcome("stream_error", error_code="server_error")]
    events = list(client.responses.create(model="m", input="x", background=True, stream=True))
    last = events[-1]
    assert isinstance(last, ResponseErrorEvent)
    assert (last.code, last.message) == ("server_error", "simulated server_error")
    polled = client.responses.retrieve(events[0].response.id)
    assert polled.status == "failed" and polled.error is not None and polled.error.code == "server_error"
