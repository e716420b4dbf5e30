"""The job store: the one gateway to Redis for the API, the worker and the supervisor.

Every change of a job is one Lua script (``shared/scripts.py``, ``shared/lua/``); reads are plain
commands; what the store takes and answers is typed in ``shared/store_types.py`` (and re-exported here).
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any, cast

from redis.asyncio import Redis

from .connection import agree_on_shards, shards_for
from .job import Job
from .jobtypes import BUILTIN, JobTypePolicy
from .keys import Keys, ShardKeys
from .limiter import Limiter
from .listing import Page, list_jobs
from .liveness import Workers
from .prices import usd
from .priority import DEFAULT_PRIORITY
from .replicas import NotReplicated, WaitFor
from .schemas import ErrorInfo
from .scripts import Scripts
from .serialization import dumps, loads, members, now_ms, rfc3339
from .settings import Settings
from .shards import new_job_id
from .status import Status
from .store_types import (
    Created,
    CreateRate,
    Delivery,
    NewJob,
    Outcome,
    Settled,
    Snapshot,
    SnapshotHead,
    TransitionResult,
)

__all__ = [
    "CURSOR",
    "CreateRate",
    "Created",
    "Delivery",
    "JobStore",
    "NewJob",
    "Outcome",
    "Page",
    "Settled",
    "Snapshot",
    "TransitionResult",
    "parse_stream_id",
]

log = logging.getLogger("backlane.store")
CURSOR = re.compile(r"^\d{1,20}-\d{1,20}$")


def parse_stream_id(cursor: str) -> tuple[int, int]:
    ms, _, n = cursor.partition("-")
    return int(ms), int(n)


class JobStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.key_prefix, shards_for(redis, settings.shards))
        self.scripts = Scripts(redis, WaitFor(settings.redis_min_replicas, settings.redis_replica_wait_ms))
        #: the workers index of every shard: who is alive, whose jobs to take over
        self.workers = Workers(redis, self.keys)
        #: the limits of named resources (requests, tokens, pauses, breakers), shared by every process
        self.limiter = Limiter(redis, self.keys, self.scripts)
        # jobs without an Idempotency-Key go to the shards in turn, from a different one in each process
        first = secrets.randbelow(self.keys.shards)
        self._next_shard = itertools.cycle([(first + i) % self.keys.shards for i in range(self.keys.shards)])

    async def agree_on_shards(self) -> None:
        """Refuses to start when the data in Redis was written with another number of shards."""
        await agree_on_shards(self.redis, self.keys.shard_count, self.keys.shards)

    @property
    def retention_ms(self) -> int:
        return self.settings.retention_s * 1000

    def _queued_cap(self) -> int | str:
        """create.lua's cap on the tenant's queued jobs of the type in one shard ('' = none): the
        setting's share of a shard, as a tenant's new jobs go to the shards in turn."""
        cap = self.settings.max_queued_per_tenant
        return -(-cap // self.keys.shards) if cap else ""

    def job_keys(self, job_id: str, job_type: str) -> list[str]:
        """The KEYS of every per-job script that may change status, in the order the scripts expect."""
        k, s = self.keys, self.keys.of_job(job_id)
        return [
            k.job(job_id), k.events(job_id), k.checkpoint(job_id),
            s.leases, s.queue(job_type), s.wake(job_type), s.deadlines, s.stats, s.counts, s.webhook_outbox,
            s.retiring, k.steps(job_id), k.trace(job_id), k.text(job_id),
        ]

    def append_keys(self, job_id: str) -> list[str]:
        """The KEYS of ``append``: job, events, stats, output text."""
        k = self.keys
        return [k.job(job_id), k.events(job_id), k.of_job(job_id).stats, k.text(job_id)]

    # ---- creation and reads -------------------------------------------------------------

    async def create(self, new: NewJob, idempotency_key: str | None = None, rate: CreateRate | None = None) -> Created:
        """Creates the job, or finds the one an idempotency key already names, in one round trip. On a
        Cluster with a rate, two (the tenant's counter lives in its own shard), three with a key (a
        replay is looked for first, so it is not counted)."""
        k = self.keys
        shard = k.idempotency_shard(new.tenant, idempotency_key) if idempotency_key else k.shard(
            next(self._next_shard))
        job_id, now = new_job_id(shard.shard, k.shards), now_ms()
        # only a client's key can come back with another body: a create without one is found by its
        # own job id, so it is the same request
        request_hash = new.request_hash() if idempotency_key else ""
        if rate is not None and k.shards > 1:
            if idempotency_key and (existing := await self.redis.get(shard.idempotency(new.tenant, idempotency_key))):
                # a replay creates nothing, so it is not counted against the rate
                found, _, found_hash = str(existing).partition(" ")
                return Created(job_id=found, created=False, same_request=found_hash == request_hash)
            if await self.scripts.run("count_create", [rate.key], [rate.limit, rate.keep_ms]):
                return Created(job_id="", created=False, limited=True)
            rate = None
        fields: dict[str, Any] = {
            "tenant": new.tenant,
            "type": new.type,
            "max_attempts": new.max_attempts,
            "input": dumps(new.input),
            "metadata": dumps(new.metadata) if new.metadata is not None else "",
            "webhook_url": new.webhook_url or "",
            "retry_of": new.retry_of or "",
            "review_required": "1" if new.review_required else "0",
            "review_window_ms": "" if new.review_window_s is None else int(new.review_window_s * 1000),
            # as asked, so a manual retry gets the same time to start
            "deadline_s": "" if new.deadline_s is None else new.deadline_s,
            # the type's own retention: transition() in lib.lua prefers it to the argument every script takes
            "retention_ms": "" if new.retention_s is None else new.retention_s * 1000,
            "uses": ",".join(new.uses),
            # absent = normal: a normal job's queue score is its ready time (queue_score() in lib.lua)
            "priority": "" if new.priority == DEFAULT_PRIORITY else new.priority,
        }
        deadline = "" if new.deadline_s is None else str(now + int(new.deadline_s * 1000))
        # a field not given is not written (absent reads as empty): fewer arguments to send and to write
        flat = [x for pair in fields.items() if pair[1] != "" for x in pair]
        # without a client key, a resent create finds its job by the id (new for each request)
        idem = [shard.idempotency(new.tenant, idempotency_key)] if idempotency_key else []
        reply = await self.scripts.run(
            "create",
            [*self.job_keys(job_id, new.type), shard.tenant_jobs(new.tenant),
             rate.key if rate else shard.create_rate(new.tenant, 0), *idem],
            [job_id, now, rfc3339(now), request_hash, self.retention_ms, deadline, rate.limit if rate else "",
             rate.keep_ms if rate else 0, self._queued_cap(), *flat],
            durable=True,
        )
        if reply[0] == "limited":
            return Created(job_id="", created=False, limited=True)
        if reply[0] == "full":
            return Created(job_id="", created=False, full=True)
        if reply[0] == "exists":
            return Created(job_id=reply[1], created=False, same_request=reply[2] == request_hash)
        return Created(job_id=job_id, created=True, job=Job.from_flat(reply[2]))

    async def load(self, job_id: str) -> dict[str, str] | None:
        """The job's hash as the scripts wrote it (for tools and tests; code reads ``job``)."""
        raw = cast(dict[str, str], await self.redis.hgetall(self.keys.job(job_id)))
        return raw or None

    async def job(self, job_id: str) -> Job | None:
        """The job, or None when it does not exist (never created, or expired after its retention)."""
        raw = await self.load(job_id)
        return Job.from_hash(raw) if raw else None

    async def get(self, tenant: str, job_id: str) -> Job | None:
        """The job, or None when it does not exist or belongs to another tenant."""
        job = await self.job(job_id)
        return job if job is not None and job.tenant == tenant else None

    async def list_jobs(
        self, tenant: str, *, status: str | None, job_type: str | None, cursor: str | None, limit: int,
        id_prefix: str | None = None, metadata: Mapping[str, str] | None = None,
    ) -> Page:
        """Newest first, merged over the shards, optionally searched (``shared/listing.py``)."""
        indexes = [shard.tenant_jobs(tenant) for shard in self.keys.all_shards]
        return await list_jobs(self.redis, self.keys, indexes, status=status, job_type=job_type, cursor=cursor,
                               limit=limit, unlist=self.unlist, id_prefix=id_prefix, metadata=metadata)

    async def read_events(self, job_id: str, after: str | None, count: int = 500) -> list[tuple[str, str, str]]:
        """Events after the cursor (exclusive), oldest first: (stream id, type, data JSON)."""
        start = f"({after}" if after else "-"
        rows = cast(list[tuple[str, dict[str, str]]],
                    await self.redis.xrange(self.keys.events(job_id), min=start, max="+", count=count))
        return [(entry_id, f["t"], f["d"]) for entry_id, f in rows]

    async def stream_tail(self, job_id: str) -> str | None:
        """The id of the newest entry of the job's stream, or None when it has none."""
        rows = cast(list[tuple[str, Any]], await self.redis.xrevrange(self.keys.events(job_id), count=1))
        return rows[0][0] if rows else None

    async def snapshot(self, job_id: str, after: str | None, within: int, event_bytes: int) -> Snapshot | None:
        """The job as of its newest event, when a client whose cursor is ``after`` is far behind: more than
        ``within`` events, and the snapshot costs it less than the events it skips, at ``event_bytes``
        each besides their text (``snapshot.lua``). None when it is not.

        The script answers all but the text, whose length it reads; the text follows with GETRANGE (in
        Lua, a long text costs Redis far more). Within an attempt the text only grows, so its first
        bytes are the text of the script's instant as long as the job's attempt, read after them, has
        not moved on; when it has, the whole read is made again."""
        k = self.keys
        text_key = k.text(job_id)
        for _ in range(3):
            reply = await self.scripts.run("snapshot", [k.job(job_id), k.events(job_id), text_key],
                                           [after or "", within, event_bytes])
            if (head := SnapshotHead.from_reply(reply)) is None:
                return None
            draft = head.draft_size or 0
            pipe = self.redis.pipeline(transaction=False)
            if draft:
                pipe.getrange(text_key, 0, draft - 1)
            if head.size > draft:
                pipe.getrange(text_key, draft, head.size - 1)
            pipe.hget(k.job(job_id), "attempt")
            *parts, attempt = await pipe.execute()
            if attempt == str(head.attempt):
                kept = parts.pop(0) if draft else ""
                return head.with_text(parts[0] if parts else "", kept if head.draft_size is not None else None)
        return None

    async def job_of_upstream(self, object_id: str) -> str | None:
        """The job that created an upstream OpenAI object (the index its worker writes), if known."""
        job_id = await self.redis.get(self.keys.openai_object(object_id))
        return str(job_id) if job_id else None

    async def deliveries(self, job_id: str) -> list[dict[str, Any]]:
        """The job's recent webhook delivery attempts, newest first."""
        return [loads(entry) for entry in await self.redis.lrange(self.keys.deliveries(job_id), 0, -1)]

    async def checkpoint(self, job_id: str) -> Any:
        raw = await self.redis.get(self.keys.checkpoint(job_id))
        return loads(raw) if raw else None

    # ---- status changes -----------------------------------------------------------------

    async def transition(
        self,
        job_id: str,
        job_type: str,
        target: str,
        *,
        token: int | None = None,
        allowed_from: tuple[str, ...] = (),
        event: dict[str, Any] | None = None,
        ready_at_ms: int | None = None,
        fields: dict[str, Any] | None = None,
    ) -> TransitionResult:
        """Moves a job to ``target``; the Lua side checks the status table and the fencing token.

        ``fields`` are set on the job with the change: ``"+name"`` increments a job field, and
        ``"counts:name"`` / ``"stats:name"`` increment a counter of ``Keys.counts`` / ``Keys.stats``."""
        now = now_ms()
        flat = [x for pair in (fields or {}).items() for x in pair]
        args = [job_id, target, "" if token is None else token, ",".join(allowed_from), now, rfc3339(now),
                members(event or {}), self.retention_ms, "" if ready_at_ms is None else ready_at_ms, *flat]
        try:
            reply = await self.scripts.run("transition", self.job_keys(job_id, job_type), args, durable=True)
        except NotReplicated as exc:  # an attempt's end: nobody waits on it, so it stands, said plainly
            log.warning("job %s %s: %s", job_id, target, exc)
            reply = exc.reply
        return TransitionResult.from_reply(reply)

    async def cancel(self, job_id: str, job_type: str, reason: str = "canceled by request") -> TransitionResult:
        now = now_ms()
        reply = await self.scripts.run(
            "cancel",
            self.job_keys(job_id, job_type),
            [job_id, now, rfc3339(now), self.retention_ms, self.keys.cancel_channel, dumps(reason)],
            durable=True,
        )
        return TransitionResult.from_reply(reply)

    async def decide(
        self, job_id: str, job_type: str, *, approve: bool, by: str, note: str | None,
        action_hash: str | None, has_apply: bool,
    ) -> TransitionResult:
        """A reviewer's approve or reject; exactly one decision per job wins."""
        now = now_ms()
        reply = await self.scripts.run(
            "decide",
            self.job_keys(job_id, job_type),
            [job_id, "approve" if approve else "reject", dumps(by), dumps(note), action_hash or "",
             "1" if has_apply else "0", now, rfc3339(now), self.retention_ms],
            durable=True,
        )
        return TransitionResult.from_reply(reply)

    async def make_ready(self, job_id: str, job_type: str) -> bool:
        """A queued job waiting out a back-off may start now; False when it is not queued."""
        reply = await self.scripts.run("make_ready", self.job_keys(job_id, job_type), [job_id, now_ms()])
        return bool(reply == "ready")

    # ---- the supervisor's decisions -------------------------------------------------------

    async def expire_lease(self, job: Job, restarted: ErrorInfo, failed: ErrorInfo,
                           apply_interrupted: ErrorInfo, dead_worker: str | None = None) -> Settled:
        """Settles a job whose lease passed, or (``dead_worker``) whose worker stopped beating while it
        held the job (``expire_lease.lua``), with the error object for each ending."""
        errors = [dumps(restarted), dumps(failed), dumps(apply_interrupted)]
        if dead_worker is None:
            return await self._settle("expire_lease", job, errors)
        shard = self.keys.of_job(job.id)
        return await self._settle("expire_lease", job, [*errors, dead_worker],
                                  [shard.workers, shard.notices(dead_worker)])

    async def expire_deadline(self, job: Job, missed_start: ErrorInfo, review_window: ErrorInfo) -> Settled:
        """Expires a job past its start deadline or review window (``expire_deadline.lua``)."""
        return await self._settle("expire_deadline", job, [dumps(missed_start), dumps(review_window)])

    async def _settle(self, script: str, job: Job, more_args: list[str], more_keys: list[str] | None = None
                      ) -> Settled:
        now = now_ms()
        reply = await self.scripts.run(script, [*self.job_keys(job.id, job.type), *(more_keys or [])],
                                       [job.id, now, rfc3339(now), self.retention_ms, job.attempt, *more_args])
        return Settled(reply)

    async def purge(self, tenant: str, job_id: str, job_type: str) -> TransitionResult:
        """Deletes a finished job of ``tenant`` and everything kept for it (``purge.lua``): MISSING when
        there is no such job of the tenant, INVALID (with its status) when it has not finished."""
        keys = [*self.job_keys(job_id, job_type), self.keys.of_job(job_id).tenant_jobs(tenant),
                self.keys.deliveries(job_id)]
        return TransitionResult.from_reply(await self.scripts.run("purge", keys, [job_id, tenant]))

    async def forget(self, job_id: str) -> None:
        """Drops a job that expired after its retention from the lease and deadline indexes."""
        shard = self.keys.of_job(job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(shard.leases, job_id)
        pipe.zrem(shard.deadlines, job_id)
        await pipe.execute()

    async def retire(self, now: int, limit: int) -> int:
        """Takes finished jobs whose keys expired by ``now`` out of their tenant's counts (``retire.lua``),
        up to ``limit`` per shard."""
        retired = 0
        for shard in self.keys.all_shards:
            retired += int(await self.scripts.run("retire", [shard.retiring, shard.counts], [now, limit]))
        return retired

    async def _each_shard(self, command: Callable[[Any, ShardKeys], object]) -> list[Any]:
        """The replies of ``command(pipe, shard)`` run for every shard, in one pipeline (on a Cluster, the
        client splits it by node)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.keys.all_shards:
            command(pipe, shard)
        return list(await pipe.execute())

    async def due(self, index: Callable[[ShardKeys], str], limit: int) -> list[str]:
        """Up to ``limit`` ids per shard whose time in a time-ordered index (leases, deadlines) has come."""
        now = now_ms()
        replies = await self._each_shard(lambda pipe, shard: pipe.zrangebyscore(
            index(shard), "-inf", now, start=0, num=limit))
        return [job_id for ids in replies for job_id in ids]

    async def unlist(self, index: str, job_ids: list[str]) -> int:
        """Drops the entries of expired jobs from a tenant's list index; how many went."""
        return int(await self.redis.zrem(index, *job_ids)) if job_ids else 0

    # ---- the webhook outbox (the supervisor's deliveries) -------------------------------------

    async def claim_webhooks(self, n: int, in_flight_ms: int) -> list[str]:
        """Up to ``n`` jobs whose next delivery is due, each held for ``in_flight_ms``; the shards are
        asked in turn from a different one each time, so none waits behind a busy one."""
        ids: list[str] = []
        first = next(self._next_shard)
        for i in range(self.keys.shards):
            if len(ids) >= n:
                break
            shard = self.keys.shard((first + i) % self.keys.shards)
            ids += await self.scripts.run("webhook_claim", [shard.webhook_outbox],
                                          [now_ms(), in_flight_ms, n - len(ids)])
        return ids

    async def hold_webhooks(self, job_ids: list[str], until_ms: int) -> None:
        """Keeps claimed jobs in the outbox until ``until_ms`` (their run goes on; XX: only if there)."""
        by_shard: dict[ShardKeys, list[str]] = {}
        for job_id in job_ids:
            by_shard.setdefault(self.keys.of_job(job_id), []).append(job_id)
        for shard, ids in by_shard.items():
            await self.redis.zadd(shard.webhook_outbox, dict.fromkeys(ids, until_ms), xx=True)

    async def settle_webhooks(self, job_id: str, delivered: str, next_due: str, failures: str) -> Delivery:
        """Where the job's deliveries stand after a run (``webhook_done.lua``)."""
        reply = await self.scripts.run("webhook_done", [self.keys.job(job_id), self.keys.of_job(job_id).webhook_outbox],
                                       [job_id, delivered, now_ms(), next_due, failures])
        return Delivery(reply)

    async def log_delivery(self, job_id: str, entry: dict[str, Any], ok: bool, keep: int) -> None:
        """Adds one delivery attempt to the job's log (newest first, ``keep`` long) and to the counters."""
        pipe = self.redis.pipeline(transaction=False)
        log_key = self.keys.deliveries(job_id)
        pipe.lpush(log_key, dumps(entry))
        pipe.ltrim(log_key, 0, keep - 1)
        pipe.pexpire(log_key, self.retention_ms)
        pipe.hincrby(self.keys.of_job(job_id).stats, "webhook_deliveries" if ok else "webhook_failures", 1)
        await pipe.execute()

    async def index_size(self, index: Callable[[ShardKeys], str]) -> int:
        """Entries of an index (a queue, the outbox, …) over every shard."""
        return sum(await self._each_shard(lambda pipe, shard: pipe.zcard(index(shard))))

    async def count(self, stat: str, n: int = 1) -> None:
        """Adds to one of the counters of /metrics (``ShardKeys.stats``, summed over the shards)."""
        await self.redis.hincrby(self.keys.shard(0).stats, stat, n)

    async def next_due_ms(self, *indexes: Callable[[ShardKeys], str]) -> int | None:
        """The soonest score over every shard's time-ordered indexes (leases, deadlines, outbox), or None."""
        replies = await self._each_shard(lambda pipe, shard: [pipe.zrange(index(shard), 0, 0, withscores=True)
                                                             for index in indexes])
        return min((int(rows[0][1]) for rows in replies if rows), default=None)

    # ---- job types ----------------------------------------------------------------------

    async def register_types(self, policies: list[JobTypePolicy]) -> None:
        default = self.settings.default_max_attempts
        if policies:
            await self.redis.hset(
                self.keys.job_types, mapping={p.name: dumps(p.registered(default).to_json()) for p in policies}
            )

    async def job_types(self) -> dict[str, JobTypePolicy]:
        """Built-in types, overlaid by what workers registered."""
        registered = cast(dict[str, str], await self.redis.hgetall(self.keys.job_types))
        types = dict(BUILTIN)
        for name, raw in registered.items():
            types[name] = JobTypePolicy.from_json(loads(raw))
        return types

    async def counts(self) -> dict[str, int]:
        """Jobs per type and status, run-time buckets and tokens (shared/lua/lib.lua keeps them)."""
        return await self._sum_hashes(lambda s: s.counts)

    async def _sum_hashes(self, key: Callable[[ShardKeys], str]) -> dict[str, int]:
        """A hash of counters kept per shard, summed."""
        total: dict[str, int] = {}
        for raw in await self._each_shard(lambda pipe, shard: pipe.hgetall(key(shard))):
            for k, v in raw.items():
                total[k] = total.get(k, 0) + int(v)
        return total

    async def tenant_counts(self, tenant: str) -> dict[str, dict[str, int]]:
        """The tenant's jobs per type and status, ``{type: {status: n}}``, in two reads however many jobs
        it has: the scripts keep ``tenant|TENANT|TYPE|STATUS`` in counts as they create and move jobs."""
        names = sorted(await self.job_types())
        fields = [f"tenant|{tenant}|{name}|{status.value}" for name in names for status in Status]
        replies = await self._each_shard(lambda pipe, shard: pipe.hmget(shard.counts, fields))
        sums = [sum(int(v or 0) for v in column) for column in zip(*replies, strict=True)]
        values = iter(sums)
        # never below 0: jobs created before these counts existed leave their first status uncounted
        return {name: {status.value: max(0, next(values)) for status in Status} for name in names}

    async def tenant_usage(self, tenant: str) -> dict[str, dict[str, Any]]:
        """What the tenant's jobs of each type ever used: ``{type: {calls, tokens, cost_usd}}`` (cost_usd
        null when no call had a price), from the ``tenant_usage|…`` counts ``record.lua`` keeps."""
        names = sorted(await self.job_types())
        kinds = ("calls", "tokens", "cost_nusd")
        fields = [f"tenant_usage|{tenant}|{name}|{kind}" for name in names for kind in kinds]
        replies = await self._each_shard(lambda pipe, shard: pipe.hmget(shard.counts, fields))
        sums = iter([sum(int(v or 0) for v in column) for column in zip(*replies, strict=True)])
        out: dict[str, dict[str, Any]] = {}
        for name in names:
            calls, tokens, nusd = next(sums), next(sums), next(sums)
            if calls:
                out[name] = {"calls": calls, "tokens": tokens, "cost_usd": usd(nusd) if nusd else None}
        return out

    async def stats(self) -> dict[str, int]:
        return await self._sum_hashes(lambda s: s.stats)
