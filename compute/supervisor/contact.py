"""No lease is taken over for a silence Redis itself caused.

A worker keeps its jobs by beating (``shared/liveness.py``). While Redis is out of reach nobody can
beat, so when it is back every worker's entry looks dead, though the workers ride the outage through
(``shared/ride_through.py``) and beat again within ``BEAT_RETRY_S``. Supervisors therefore touch each
shard often, timed by Redis's own clock (``shared/lua/contact.lua``), and the first touch after a
silence longer than ``gap`` starts a grace: for one lease from then, no lease of the shard is taken
over. Workers that are alive beat within it; one that died meanwhile is taken over when it ends.

    touch every gap/3 ─▶ contact.lua: silence = TIME - seen; seen = TIME
                          silence > gap ─▶ grace_until = TIME + lease       (Redis was away, or no
                                                                            supervisor ran)
    upkeep pass ─▶ touch, then skip the lease expiries and takeovers of shards still in grace

Why Redis's clock and a key in Redis, rather than each supervisor's own memory of its last contact:
every supervisor sees the same grace (one that looked just after the outage cannot start taking over
while another is still waiting), a supervisor started during or after the outage knows of it, and
the silence is measured on one clock whatever the supervisors' clocks say. A Redis restarted from its
AOF keeps ``seen`` (an older one, with fsync every second: a longer silence, a grace all the same);
one that lost it grants no grace on its first touch, and its workers' entries are gone with it too.

The price: a takeover waits up to one lease longer when a supervisor was stalled or none ran for
longer than ``gap`` (a worker killed then is restarted a lease later). A worker cut off from Redis
while the supervisors reach it gets no grace: its jobs are taken over and its writes refused (fenced).
Without the touch loop (a bare ``Supervisor.tick()``) there is no steady touch to measure a silence
by, and no grace.
"""

from __future__ import annotations

import asyncio
import logging

from shared.jobs import JobStore
from shared.settings import Settings

log = logging.getLogger("backlane.supervisor")
#: the shortest silence taken for an outage: below it, a slow event loop would start graces
MIN_GAP_S = 0.5


class Contact:
    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store = store
        #: a silence longer than this was an outage
        self.gap_s = max(settings.heartbeat_s, MIN_GAP_S)
        #: what every lease gets after one
        self.grace_ms = settings.lease_ms
        self.running = False

    async def touch(self) -> dict[int, int]:
        """Touches every shard; the shards in grace now, each with the ms it has left."""
        shards = self.store.keys.all_shards
        calls = [([shard.contact], [int(self.gap_s * 1000), self.grace_ms]) for shard in shards]
        graced: dict[int, int] = {}
        for shard, (left, silence) in zip(shards, await self.store.scripts.run_many("contact", calls), strict=True):
            if int(silence) > self.gap_s * 1000:
                log.warning("no supervisor reached shard %d for %.1f s (Redis away?): its leases get %.1f s "
                            "to be renewed before any is taken over", shard.shard, int(silence) / 1000,
                            int(left) / 1000)
            if int(left) > 0:
                graced[shard.shard] = int(left)
        return graced

    async def run(self) -> None:
        """Touches every ``gap / 3`` until cancelled: the steady beat a silence is measured against."""
        self.running = True
        try:
            while True:
                try:
                    await self.touch()
                except Exception as exc:  # Redis away: the silence grows, the next touch that lands says so
                    log.debug("contact touch failed: %s", exc)
                await asyncio.sleep(self.gap_s / 3)
        finally:
            self.running = False
