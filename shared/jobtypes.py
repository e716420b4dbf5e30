"""Job type policies. Built-in types are known to the API before any worker starts; workers
register the types they serve (their policies persist in Redis)."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from .priority import DEFAULT_PRIORITY, Priority, check_priority
from .resources import check_uses

Authority = Literal["read_only", "draft", "low_risk_write", "external_side_effect"]
ReviewPolicy = Literal["none", "required", "sampled"]

#: the shortest retention a type may ask for (as BACKLANE_RETENTION_S)
MIN_RETENTION_S = 60

DEFAULT_REVIEW: dict[str, ReviewPolicy] = {
    "read_only": "none",
    "draft": "required",
    "low_risk_write": "sampled",
    "external_side_effect": "required",
}


@dataclass(frozen=True)
class JobTypePolicy:
    name: str
    description: str = ""
    authority: Authority = "read_only"
    #: None → the authority's default
    review: ReviewPolicy | None = None
    #: attempts before the job fails (restarts after a lost worker, retries of transient failures)
    max_attempts: int = 3
    #: the declaration left max_attempts unset: registration gives it BACKLANE_DEFAULT_MAX_ATTEMPTS
    max_attempts_default: bool = False
    #: an attempt running longer fails with class "deadline"; None = no limit
    timeout_s: float | None = None
    #: transient failures: base · 2^(n-1), ±25 % jitter, capped
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0
    #: a deadline failure retries like a transient one when True
    retry_on_deadline: bool = False
    #: a JSON Schema for `input`
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    #: the share of jobs reviewed under the "sampled" policy
    review_sample_rate: float = 0.1
    #: how long a job may wait in needs_review before it expires; None = no limit
    review_window_s: float | None = 24 * 3600
    #: whether the type has an apply step: the side effect that runs once, after approval
    has_apply: bool = False
    #: the apply step may safely run twice (it passes ``ctx.idempotency_key`` to the system it
    #: changes): it is then retried like a handler; otherwise it runs at most once and any failure,
    #: or a worker lost during it, fails the job for a person to check
    apply_idempotent: bool = False
    #: how long this type's finished jobs are kept, in seconds (at least 60); None = BACKLANE_RETENTION_S
    retention_s: int | None = None
    builtin: bool = False
    #: the named resources its jobs use (shared/resources.py): ``{field}`` is filled from the job's input
    uses: tuple[str, ...] = ()
    #: its jobs' priority when the submitter gives none (shared/priority.py)
    priority: Priority = DEFAULT_PRIORITY

    def __post_init__(self) -> None:
        object.__setattr__(self, "uses", check_uses(self.uses))
        check_priority(self.priority, f"job type {self.name!r}")
        retention = self.retention_s
        if retention is not None and (isinstance(retention, bool) or not isinstance(retention, int)
                                      or retention < MIN_RETENTION_S):
            raise ValueError(f"job type {self.name!r}: retention_s must be a whole number of seconds, at least "
                             f"{MIN_RETENTION_S}, or None; got {retention!r}")

    @property
    def review_policy(self) -> ReviewPolicy:
        return self.review or DEFAULT_REVIEW[self.authority]

    def draw_review(self, rng: random.Random | None = None) -> bool:
        """Whether a new job of this type waits for a person (sampled types draw once, at creation)."""
        policy = self.review_policy
        return policy == "required" or (policy == "sampled" and (rng or random).random() < self.review_sample_rate)

    def registered(self, default_max_attempts: int) -> JobTypePolicy:
        """The policy as a worker registers it: with the operator's default where the type set none."""
        if not self.max_attempts_default:
            return self
        return replace(self, max_attempts=default_max_attempts, max_attempts_default=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["review"] = self.review_policy
        data["uses"] = list(self.uses)
        del data["max_attempts_default"]  # registered policies carry their resolved max_attempts
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobTypePolicy:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


DEMO_STORY = JobTypePolicy(
    name="demo.story",
    description="Streams a research → outline → write run token by token; needs no network and no key.",
    max_attempts=3,
    retry_base_s=1.0,
    builtin=True,
    input_schema={
        "type": "object",
        "required": ["topic"],
        "properties": {
            "topic": {"type": "string", "minLength": 1, "maxLength": 500},
            "steps": {"type": "integer", "minimum": 1, "maximum": 20},
            "tokens_per_step": {"type": "integer", "minimum": 1, "maximum": 10000},
            "delay_ms": {"type": "number", "minimum": 0, "maximum": 60000},
            "fail": {
                "type": "object",
                "required": ["class", "times"],
                "properties": {
                    "class": {"enum": ["input", "transient", "policy", "internal", "deadline"]},
                    "times": {"type": "integer", "minimum": 0},
                    "message": {"type": "string"},
                },
            },
        },
    },
)

DEMO_AGENT = JobTypePolicy(
    name="demo.agent",
    description="A simulated agent run in durable steps (research → outline → one step per section), with "
    "simulated model usage and latency; needs no network and no key.",
    max_attempts=3,
    retry_base_s=1.0,
    builtin=True,
    input_schema={
        "type": "object",
        "required": ["topic"],
        "additionalProperties": False,
        "properties": {
            "topic": {"type": "string", "minLength": 1, "maxLength": 500},
            "sections": {"type": "integer", "minimum": 1, "maximum": 20},
            "tokens_per_step": {"type": "integer", "minimum": 1, "maximum": 5000},
            "delay_ms": {"type": "number", "minimum": 0, "maximum": 60000},
            "model": {"type": "string", "minLength": 1, "maxLength": 200},
            "fail": {
                "type": "object",
                "required": ["step", "times", "class"],
                "additionalProperties": False,
                "properties": {
                    "step": {"type": "string", "minLength": 1, "maxLength": 200},
                    "times": {"type": "integer", "minimum": 0},
                    "class": {"enum": ["input", "transient", "policy", "internal", "deadline"]},
                },
            },
        },
    },
)

OPENAI_RESPONSES = JobTypePolicy(
    name="openai.responses",
    description="One OpenAI Responses call (any compatible endpoint), streamed; survives worker restarts "
    "without a second upstream call where background mode is available.",
    max_attempts=5,
    retry_base_s=2.0,
    builtin=True,
    uses=("openai:{model}",),
    input_schema={
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "input": {"type": ["string", "array"]},
            "instructions": {"type": "string"},
            "max_output_tokens": {"type": "integer", "minimum": 1},
            "prompt_cache_key": {"type": "string", "maxLength": 256},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
)

OPENAI_BATCH = JobTypePolicy(
    name="openai.batch",
    description="Bulk offline requests through the OpenAI Batch API; follows the batch for as long as it takes.",
    max_attempts=10,
    retry_base_s=5.0,
    builtin=True,
    input_schema={
        "type": "object",
        "required": ["requests"],
        "properties": {
            "requests": {
                "type": "array",
                "minItems": 1,
                "maxItems": 50000,
                "items": {
                    "type": "object",
                    "required": ["body"],
                    "properties": {"custom_id": {"type": "string", "minLength": 1}, "body": {"type": "object"}},
                },
            },
            "endpoint": {"type": "string"},
            "completion_window": {"type": "string"},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "poll_interval_s": {"type": "number", "minimum": 0.01, "maximum": 3600},
        },
    },
)

DEMO_REVIEW = JobTypePolicy(
    name="demo.review",
    description="Drafts a proposed action, waits for approval, then applies it exactly once.",
    authority="external_side_effect",
    max_attempts=3,
    has_apply=True,
    builtin=True,
    input_schema={
        "type": "object",
        "required": ["action"],
        "properties": {
            "action": {"type": "string", "minLength": 1, "maxLength": 500},
            "target": {"type": "string", "maxLength": 500},
            "delay_ms": {"type": "number", "minimum": 0, "maximum": 60000},
        },
    },
)

BUILTIN: dict[str, JobTypePolicy] = {
    p.name: p for p in (DEMO_STORY, DEMO_AGENT, DEMO_REVIEW, OPENAI_RESPONSES, OPENAI_BATCH)
}
