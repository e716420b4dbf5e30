"""Where a job goes in its type's queue: its priority (``high``, ``normal``, the default, or ``low``,
set on submit or by the job's type) and its tenant's turn.

A queue is one sorted set per shard and type, scored by when the job may start, and ``take.lua`` reads
its first entries, so both are a move of the score and cost take nothing:

- a ``high`` job is placed as if it had been ready ``HIGH_AHEAD_MS`` sooner, a ``low`` one as if
  ``LOW_BEHIND_MS`` later. That is ageing: a job only competes with work that became ready within
  that distance of it, so a ``low`` job is never starved: once it has waited ``LOW_BEHIND_MS``, no
  ``normal`` job that arrives later is placed before it.
- a new job is placed ``FAIR_STEP_MS`` later for each job of its tenant and type already queued in
  its shard (not a high one): a tenant that queued 300 jobs has them spread over 300 steps, and
  another tenant's first job goes in at now, between them.

    queue score      normal  ready_at                      (as before: scores of old entries stay true)
                     high    ready_at - HIGH_AHEAD_MS + .25
                     low     ready_at + LOW_BEHIND_MS + .5
    behind k of its tenant's queued jobs (create):
                     normal  now + k·FAIR_STEP_MS + .125
                     low     now + k·FAIR_STEP_MS + LOW_BEHIND_MS + .625

The fraction tags the placement, so a script gets the ready time back from the score alone
(``ready_of()`` in lib.lua; a job placed behind its tenant's was ready when queued): a job is ready
when its own time has come, not its place's, and "when to ask again" is a ready time. Scores are ms
since the epoch (below 2^50), so an eighth is exact.
"""

from __future__ import annotations

from typing import Literal, get_args

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
DEFAULT_PRIORITY: Priority = "normal"

#: how far ahead of ``normal`` work a ``high`` job is placed: it goes before every normal job that has
#: been ready for less than this
HIGH_AHEAD_MS = 5 * 60 * 1000
#: how far behind ``normal`` work a ``low`` job is placed: the longest it waits for normal jobs that
#: became ready after it (its ageing bound)
LOW_BEHIND_MS = 5 * 60 * 1000
#: fair turns across tenants: a new job is placed this much later for each job of its tenant and type
#: already queued in its shard, so tenants' jobs interleave (a tenant's k-th queued job goes after
#: another tenant's jobs queued up to (k-1) steps later); tenants take turns while the type runs at
#: least one job per step in the shard, and a job placed behind waits at most its place's distance
FAIR_STEP_MS = 10 * 1000


def check_priority(value: object, where: str) -> Priority:
    """``value`` as a priority, or ValueError naming ``where`` it was given."""
    if value not in PRIORITIES:
        raise ValueError(f"{where}: priority must be one of {', '.join(PRIORITIES)}; got {value!r}")
    return value


def render_lua() -> str:
    """The constants lib.lua's queue_score() and ready_of() use."""
    return (f"local HIGH_AHEAD_MS = {HIGH_AHEAD_MS}\nlocal LOW_BEHIND_MS = {LOW_BEHIND_MS}\n"
            f"local FAIR_STEP_MS = {FAIR_STEP_MS}\n")
