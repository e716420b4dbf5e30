"""The fold from a job's events to OpenAI's stream events (pure: no Redis, no server)."""

from __future__ import annotations

from typing import Any

import orjson
from openai.types.responses import Response, ResponseErrorEvent

from api._openai_shapes import Translator, snapshot
from shared.job import Job

JOB = "a" * 32
RAW = {"id": JOB, "type": "openai.responses", "status": "queued", "created_at": "1700000000000",
       "input": orjson.dumps({"model": "gpt-fake", "input": "x"}).decode()}


def final(text: str, status: str = "completed", **extra: Any) -> dict[str, str]:
    result = {"response_id": "r", "output_text": text, "model": "gpt-fake", "status": "completed", **extra}
    return {**RAW, "status": status, "result": orjson.dumps(result).decode(), "finished_at": "1700000005000"}


def fold(job_events: list[tuple[str, dict[str, Any]]], end: dict[str, str] | None = None) -> list[dict[str, Any]]:
    t = Translator(Job.from_hash(RAW))
    out: list[dict[str, Any]] = []
    for kind, data in job_events:
        ended = kind == "status" and data["status"] not in ("queued", "running")
        out += t.feed({"type": kind, **data}, Job.from_hash(end) if ended and end else None)  # type: ignore[arg-type, misc]
    return out


def out(attempt: int, text: str) -> tuple[str, dict[str, Any]]:
    return "output", {"attempt": attempt, "text": text}


def status(name: str) -> tuple[str, dict[str, Any]]:
    return "status", {"status": name}


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def test_restarts_with_a_shorter_prefix_and_a_chunk_across_the_seam_send_each_character_once() -> None:
    evs = [status("queued"), status("running"), out(1, "Hel"), out(1, "lo, w"), out(1, "or"),
           status("queued"), status("running"), out(2, "Hello"), out(2, ", wo"), out(2, "rld"),
           status("completed")]
    events = fold(evs, final("Hello, world"))
    assert text_of(events) == "Hello, world"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert fold(evs, final("Hello, world")) == events  # the same job events always fold the same way
    assert [e["type"] for e in events].count("response.in_progress") == 1
    assert events[-1]["type"] == "response.completed"
    Response.model_validate(events[-1]["response"], strict=False)


def test_a_final_text_longer_than_the_deltas_is_completed_by_one_more_delta() -> None:
    events = fold([status("queued"), status("running"), out(1, "Hel"), status("completed")], final("Hello"))
    assert text_of(events) == "Hello"


def test_a_diverging_attempt_sends_no_more_deltas_and_the_final_event_has_its_text() -> None:
    """Bug: without background mode a restarted call answered another text, and the stream just
    stopped sending deltas: an SDK client joining deltas got "abc" with no word of why. Cause: deltas
    cannot take text back, and the fold dropped the new attempt's text silently. Fix: one ``error``
    event (code ``response_restarted``) says so where the text diverges; the final events carry
    the whole new text."""
    evs = [status("queued"), status("running"), out(1, "abc"), status("queued"), status("running"),
           out(2, "xyz"), out(2, "123"), status("completed")]
    events = fold(evs, final("xyz123"))
    assert text_of(events) == "abc"
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert done["text"] == "xyz123"
    (error,) = [e for e in events if e["type"] == "error"]
    assert events.index(error) < events.index(done) and error["code"] == "response_restarted"
    assert "restarted (attempt 2)" in ResponseErrorEvent.model_validate(error, strict=True).message
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_cancel_ends_without_an_event_and_failures_use_codes_the_sdk_accepts() -> None:
    cancelled = fold([status("queued"), status("running"), status("canceled")], {**RAW, "status": "canceled"})
    assert [e["type"] for e in cancelled] == ["response.created", "response.queued", "response.in_progress"]
    error = orjson.dumps({"class": "transient", "message": "HTTP 429", "retryable": True, "attempt": 3}).decode()
    failed = fold([status("queued"), status("failed")], {**RAW, "status": "failed", "error": error})
    response = Response.model_validate(failed[-1]["response"])
    assert response.status == "failed" and response.error is not None
    assert (response.error.code, response.error.type) == ("server_error", "transient")


def test_incomplete_results_and_usage_in_the_snapshot() -> None:
    raw = final("partial", incomplete_reason="max_output_tokens")
    raw["result"] = raw["result"].replace('"status":"completed"', '"status":"incomplete"')
    raw["usage"] = orjson.dumps({"input_tokens": 10, "output_tokens": 2, "cached_tokens": 8}).decode()
    response = Response.model_validate(snapshot(Job.from_hash(raw)))
    assert response.status == "incomplete" and response.output_text == "partial"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.input_tokens_details.cached_tokens == 8
