"""A job's trace as ``GET /v1/jobs/{id}/trace`` answers it: the spans of the job, its attempts, their
steps, model calls and apply step, with tokens and cost.

    job hash ── job span (created_at → finished_at)
             └─ attempt spans (attempt:N:start / attempt:N:end)
    trace hash ─ step, llm, apply spans as the workers recorded them (compute/spans.py)
                   a span still `running` in an attempt that has ended was cut off: `error`, interrupted

Tokens and cost add up from the model calls to their step, attempt and job; a replayed step costs
nothing new, so it carries none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypedDict

from shared.job import Job
from shared.prices import usd
from shared.serialization import loads, ms_of, now_ms, rfc3339
from shared.status import TERMINAL, Status

TOKEN_KINDS = ("input_tokens", "cached_tokens", "output_tokens")


class SpanOut(TypedDict):
    id: str
    parent_id: str | None
    #: job, attempt, step, llm, apply
    kind: str
    name: str
    #: ok, error, replayed, running
    status: str
    attempt: int | None
    #: RFC 3339; end is null while it runs
    start: str | None
    end: str | None
    attributes: dict[str, Any]
    #: {input_tokens, cached_tokens, output_tokens}: the call's, or summed over the calls inside
    usage: dict[str, int] | None
    #: USD by the price table; null when no call inside had a price
    cost_usd: float | None


def _attempt_spans(job: Job) -> list[dict[str, Any]]:
    spans = []
    for entry in job.attempts:
        n = int(entry.get("attempt") or 0)
        ended = entry.get("status")
        if ended is None:
            status = "running" if n == job.attempt and job.status == Status.RUNNING else "error"
        elif ended in ("completed", "needs_review") or entry.get("reason") == "worker_shutdown":
            status = "ok"
        else:
            status = "error"
        attributes: dict[str, Any] = {k: entry[k] for k in ("worker", "reason", "error", "retry_in_ms") if k in entry}
        if ended is not None:
            attributes["ended_as"] = ended
        spans.append({"id": f"attempt:{n}", "parent_id": "job", "kind": "attempt", "name": f"attempt {n}",
                      "status": status, "attempt": n, "start": ms_of(entry.get("started_at")),
                      "end": ms_of(entry.get("ended_at")), "attributes": attributes, "usage": None,
                      "cost_nusd": None})
    return spans


def _job_span(job: Job) -> dict[str, Any]:
    status = "running"
    if job.status in TERMINAL:
        status = "ok" if job.status == Status.COMPLETED else "error"
    return {"id": "job", "parent_id": None, "kind": "job", "name": job.type, "status": status, "attempt": None,
            "start": job.created_at, "end": job.finished_at if job.status in TERMINAL else None,
            "attributes": {"job.status": job.status.value, "job.attempts": job.attempt}, "usage": None,
            "cost_nusd": None}


def _sum_up(spans: list[dict[str, Any]]) -> dict[str, tuple[dict[str, int], int | None]]:
    """Each span's own or summed usage, and cost (nano-USD, None when no call in it had a price)."""
    by_id = {s["id"]: s for s in spans}
    totals: dict[str, tuple[dict[str, int], int | None]] = {}
    for span in spans:
        if span["kind"] != "llm" or not span.get("usage"):
            continue
        node: dict[str, Any] | None = span
        while node is not None:
            usage, cost = totals.get(node["id"], ({k: 0 for k in TOKEN_KINDS}, None))
            usage = {k: usage[k] + int(span["usage"].get(k) or 0) for k in TOKEN_KINDS}
            if span.get("cost_nusd") is not None:
                cost = (cost or 0) + int(span["cost_nusd"])
            totals[node["id"]] = (usage, cost)
            node = by_id.get(node["parent_id"]) if node.get("parent_id") else None
    return totals


def build_trace(job: Job, stored: Mapping[str, str]) -> dict[str, Any]:
    """The job's spans, the job first, then by start."""
    attempts = _attempt_spans(job)
    ended_at = {s["attempt"]: s["end"] for s in attempts if s["status"] != "running"}
    recorded = [loads(raw) for raw in stored.values()]
    for span in recorded:
        if span.get("status") == "running" and span.get("attempt") in ended_at:
            # the attempt ended (its worker was lost, or it was stopped) while this span ran
            span["status"] = "error"
            span["end"] = ended_at[span["attempt"]] or span.get("start")
            span.setdefault("attributes", {})["interrupted"] = True
    spans = [_job_span(job), *attempts, *recorded]
    totals = _sum_up(spans)
    now = now_ms()
    out: list[SpanOut] = []
    for span in spans:
        usage, cost = totals.get(span["id"], (None, None))
        out.append({
            "id": span["id"], "parent_id": span.get("parent_id"), "kind": span["kind"], "name": span["name"],
            "status": span["status"], "attempt": span.get("attempt"), "start": rfc3339(span.get("start")),
            "end": rfc3339(span.get("end")), "attributes": span.get("attributes") or {},
            "usage": usage, "cost_usd": usd(cost) if span["status"] != "replayed" else 0.0,
        })
    kinds = {"job": 0, "attempt": 1}
    # spans recorded in the same millisecond (replayed steps) keep one order: their ids, numbers as numbers
    out.sort(key=lambda s: (kinds.get(s["kind"], 2), s["start"] or rfc3339(now) or "", _natural(s["id"])))
    return {"job_id": job.id, "spans": out}


def _natural(span_id: str) -> list[tuple[int, int | str]]:
    """``2:step:part#10`` after ``2:step:part#2``: digit runs compare as numbers."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", span_id) if part]
