"""Acknowledging a change only once replicas have it: ``BACKLANE_REDIS_MIN_REPLICAS``.

Redis replicates asynchronously: a master that dies right after answering may take the change with it,
and the replica promoted in its place never had it. With ``min_replicas`` N > 0, the scripts whose
success someone is told of (a create, a cancel, a review decision, an attempt's end) are followed by
``WAIT N timeout`` on the same connection (``shared/scripts.py``): Redis answers how many replicas
confirmed every write of that connection so far.

    script ─▶ WAIT N T ─┬─ ≥ N replicas ─▶ the reply, as without WAIT
                        └─ fewer after T ms ─▶ NotReplicated (carrying the reply): the change is on
                           the master, not yet safe from a failover; the API answers 503, a worker
                           logs it and goes on

WAIT does not make Redis strongly consistent (a failover may still promote the replica that lacked
it when several exist), but with one replica and N = 1 an acknowledged change survives the master's
loss. docs/scaling.md ("Failover") weighs the choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError


@dataclass(frozen=True)
class WaitFor:
    replicas: int
    timeout_ms: int


class NotReplicated(RedisError):
    """Redis ran the change, but fewer replicas than asked confirmed it within the timeout."""

    def __init__(self, reply: Any, confirmed: int, wait: WaitFor) -> None:
        super().__init__(f"the change was confirmed by {confirmed} of the {wait.replicas} replica(s) "
                         f"BACKLANE_REDIS_MIN_REPLICAS asks for within {wait.timeout_ms} ms")
        #: the script's own reply
        self.reply = reply
        self.confirmed = confirmed
