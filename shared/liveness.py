"""Liveness per worker process, not per job.

A worker beats once per ``heartbeat_s`` per shard (``beat.lua``): its entry in the shard's ``workers``
index then says it is alive until now + ``lease_s``, and that one entry keeps every job it runs there.
So heartbeat traffic does not grow with the jobs a worker runs, and a dead worker's jobs are all
found at once: the supervisor sees its entry pass, takes over each job whose ``lease_owner`` it is
(``expire_lease.lua`` with that worker named), and leaves it a ``lost`` notice for the case it was
only frozen. A worker that takes jobs (``take.lua``) registers in the same step, so no job is ever
held by a worker the index does not know.

The leases index still lists every running job: a lease taken by a worker is scored
``HELD_BY_WORKER`` + its start + the lease, so it is never due by itself (only its worker's death
makes it due); a lease scored below that (``claim.lua``/``start.lua`` without a beating worker) is
renewed per job by ``heartbeat.lua`` and expires by its own score, as before.
"""

from __future__ import annotations

#: leases from this score on are kept by their worker's beats (about 31,700 years of ms: above any
#: real time, and well within the integers a ZSET score holds exactly)
HELD_BY_WORKER = 10**15
#: how long a worker's notices wait for its next beat: a worker frozen longer finds its attempts'
#: writes refused instead (their tokens are old)
NOTICES_KEPT_MS = 3_600_000


def held_score(started_ms: int, lease_ms: int) -> int:
    """The leases-index score of a lease a worker's beats keep, taken at ``started_ms``."""
    return HELD_BY_WORKER + started_ms + lease_ms
