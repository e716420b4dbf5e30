"""What the job store takes and answers: a new job, and the replies of its scripts as enums."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from .job import Job
from .priority import DEFAULT_PRIORITY, Priority


@dataclass(frozen=True)
class NewJob:
    tenant: str
    type: str
    input: Any
    max_attempts: int
    metadata: dict[str, Any] | None = None
    webhook_url: str | None = None
    deadline_s: float | None = None
    retry_of: str | None = None
    review_required: bool = False
    #: how long a person has to decide once the job reaches needs_review (None: no limit)
    review_window_s: float | None = None
    #: how long the job is kept once finished (its type's retention_s; None: BACKLANE_RETENTION_S)
    retention_s: int | None = None
    #: the named resources it uses (its type's ``uses``, filled from its input): take.lua reads them
    uses: tuple[str, ...] = ()
    #: its place in the queue (shared/priority.py): as submitted, else its type's
    priority: Priority = DEFAULT_PRIORITY

    def request_hash(self) -> str:
        decided_here = ("tenant", "review_required", "review_window_s", "retention_s", "uses")
        body = {k: v for k, v in self.__dict__.items() if k not in decided_here}
        if self.priority == DEFAULT_PRIORITY:
            del body["priority"]  # so a request hashes as it did before jobs had a priority
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


@dataclass(frozen=True)
class Created:
    job_id: str
    created: bool
    #: False when an idempotency key was reused with another body
    same_request: bool = True
    #: the new job as created (None for a job that already existed: read it with ``get``)
    job: Job | None = None
    #: over the tenant's creation rate: nothing was created
    limited: bool = False
    #: the tenant has as many jobs of the type queued as BACKLANE_MAX_QUEUED_PER_TENANT allows: nothing
    #: was created
    full: bool = False


@dataclass(frozen=True)
class CreateRate:
    """A limit on creations, counted in the same script as the create (a replay is not counted)."""

    #: the counter of the current window
    key: str
    #: creations allowed in the window
    limit: int
    #: how long the counter is kept (ms)
    keep_ms: int


class Outcome(StrEnum):
    """What a status script (transition, cancel, decide) answered."""

    #: the change happened
    OK = "ok"
    #: cancel: the job was not running and is canceled now
    CANCELED = "canceled"
    #: cancel: the job runs; its worker is told and stops promptly
    REQUESTED = "requested"
    #: the caller's lease token no longer holds the job: a newer attempt does
    STALE = "stale"
    #: not allowed from the job's status (``current`` says which), or the apply step is running
    INVALID = "invalid"
    MISSING = "missing"
    #: decide: the approval named another action_hash than the job's
    HASH_MISMATCH = "hash_mismatch"


class Settled(StrEnum):
    """What the supervisor's scripts (expire_lease, expire_deadline) did to a job."""

    #: its worker still heartbeats
    ALIVE = "alive"
    #: expired after its retention: the index entry is dropped
    GONE = "gone"
    #: claimed but never started (its worker died in between): back in its queue
    REQUEUED = "requeued"
    #: its worker was lost: queued again as a new attempt
    RESTARTED = "restarted"
    #: its worker was lost on the last attempt
    FAILED = "failed"
    #: its worker was lost after a cancel was asked
    CANCELED = "canceled"
    #: its worker was lost during an apply step that may not run twice: failed for a person to check
    APPLY_INTERRUPTED = "apply_interrupted"
    NOT_RUNNING = "not_running"
    #: past its start deadline or review window
    EXPIRED = "expired"
    NOT_DUE = "not_due"
    #: its deadline no longer applies (it started; the review was decided)
    NOT_APPLICABLE = "not_applicable"
    #: another attempt began since the job was read: looked at again on the next pass
    CHANGED = "changed"


class Delivery(StrEnum):
    """Where a job's webhook deliveries stand after a run (``webhook_done.lua``)."""

    #: every status event delivered: out of the outbox
    DONE = "done"
    #: a status event arrived meanwhile: due again now
    MORE = "more"
    #: a delivery failed: due again at its next try
    RETRY = "retry"
    #: the job expired after its retention
    GONE = "gone"


@dataclass(frozen=True)
class TransitionResult:
    outcome: Outcome
    #: the job's status when the change was refused ("applying" while its apply step runs)
    current: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.OK, Outcome.CANCELED, Outcome.REQUESTED)

    @classmethod
    def from_reply(cls, reply: list[Any]) -> TransitionResult:
        outcome = Outcome(reply[0])
        # only a refusal names the job's status; an accepted change's reply carries its seq or target
        refused = outcome not in (Outcome.OK, Outcome.CANCELED, Outcome.REQUESTED)
        return cls(outcome, str(reply[1]) if refused and len(reply) > 1 else None)


@dataclass(frozen=True)
class Snapshot:
    """The job as of its newest event, read in one step (``snapshot.lua``, then the text): what a client
    far behind gets instead of the events up to it."""

    #: stream id of the newest event: the snapshot stands for every event up to it
    cursor: str
    #: seq of that event
    seq: int
    attempt: int
    status: str
    #: the newest status event's JSON, as the stream has it ("" when there is none)
    status_event: str
    #: the newest progress event's JSON, as the stream has it (None before any)
    progress: str | None
    #: the newest attempt's output so far
    text: str
    #: an apply step's first attempt: the approved output it continues (None otherwise)
    draft: str | None


@dataclass(frozen=True)
class SnapshotHead:
    """``snapshot.lua``'s reply: a snapshot but for its text, of which it has the length."""

    cursor: str
    seq: int
    attempt: int
    status: str
    status_event: str
    progress: str | None
    #: bytes of the output text at that instant, the draft's first
    size: int
    #: bytes of the approved draft at the text's start (None: there is none)
    draft_size: int | None

    @classmethod
    def from_reply(cls, reply: list[Any]) -> SnapshotHead | None:
        if reply[0] != "snapshot":
            return None
        _, status, attempt, seq, cursor, status_event, progress, size, draft_size = reply
        return cls(cursor=cursor, seq=int(seq), attempt=int(attempt), status=status, status_event=status_event,
                   progress=progress or None, size=int(size), draft_size=int(draft_size) if draft_size != "" else None)

    def with_text(self, text: str, draft: str | None) -> Snapshot:
        return Snapshot(cursor=self.cursor, seq=self.seq, attempt=self.attempt, status=self.status,
                        status_event=self.status_event, progress=self.progress, text=text, draft=draft)
