"""The spans an attempt records in its job's trace: steps, model calls, the apply step.

    job                      (from the job hash: created_at → finished_at)
    └─ attempt N             (from the job hash: attempt:N:start / attempt:N:end)
       ├─ step  "outline#1"  N:step:outline#1        recorded here, one fenced write per change
       │  └─ llm  "gpt-4o"   N:llm:3
       └─ apply              N:apply

Span ids are unique within the job: the attempt, the kind, then the step key or a counter. The API
(``GET /v1/jobs/{id}/trace``) adds the job and attempt spans and the costs in dollars.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from shared.serialization import dumps

SpanKind = Literal["step", "llm", "apply"]
SpanStatus = Literal["ok", "error", "replayed", "running"]


def attempt_span_id(attempt: int) -> str:
    return f"attempt:{attempt}"


@dataclass
class Span:
    id: str
    parent_id: str
    kind: SpanKind
    name: str
    attempt: int
    #: ms since the epoch; end is None while it runs
    start: int
    end: int | None = None
    status: SpanStatus = "running"
    attributes: dict[str, Any] = field(default_factory=dict)
    #: model calls: {input_tokens, cached_tokens, output_tokens}
    usage: dict[str, int] | None = None
    #: model calls: what it cost in nano-USD (None: no price)
    cost_nusd: int | None = None

    def to_json(self) -> str:
        return dumps({
            "id": self.id, "parent_id": self.parent_id, "kind": self.kind, "name": self.name,
            "attempt": self.attempt, "start": self.start, "end": self.end, "status": self.status,
            "attributes": self.attributes, "usage": self.usage, "cost_nusd": self.cost_nusd,
        })
