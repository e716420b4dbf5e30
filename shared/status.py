"""The status machine: the one table of allowed transitions.

Redis enforces it: ``shared/scripts.py`` renders this table into the Lua library every script
starts with, so no Python code path decides on its own whether a transition is legal.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    NEEDS_REVIEW = "needs_review"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"


TERMINAL: frozenset[Status] = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELED, Status.EXPIRED})

TRANSITIONS: dict[Status, frozenset[Status]] = {
    # queued: claimed by a worker, canceled, or missed its start deadline
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELED, Status.EXPIRED, Status.FAILED}),
    # running → queued: a retry after back-off, a restart after a lost lease, or a drained worker
    Status.RUNNING: frozenset(
        {Status.QUEUED, Status.NEEDS_REVIEW, Status.COMPLETED, Status.FAILED, Status.CANCELED, Status.EXPIRED}
    ),
    # needs_review → queued: approved, and the type's apply step (the side effect) is still to run
    Status.NEEDS_REVIEW: frozenset(
        {Status.QUEUED, Status.COMPLETED, Status.CANCELED, Status.EXPIRED, Status.FAILED}
    ),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELED: frozenset(),
    Status.EXPIRED: frozenset(),
}


def can_transition(current: Status, target: Status) -> bool:
    return target in TRANSITIONS[current]
