"""Redis key names. Every key of one shard carries the shard's hash tag (``shared/shards.py``): a job's
keys and the indexes its scripts touch sit in one cluster slot.

The full protocol (field names, scripts, who writes what) is in ``docs/protocol.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .shards import shard_for, shard_of, shard_tags


@dataclass(frozen=True)
class ShardKeys:
    """The index keys of one shard; the jobs of the shard are indexed here and nowhere else."""

    prefix: str
    tag: str
    shard: int

    @property
    def base(self) -> str:
        return f"{self.prefix}:{self.tag}"

    def queue(self, job_type: str) -> str:
        """ZSET job id → time (ms) it may start."""
        return f"{self.base}:queue:{job_type}"

    def wake(self, job_type: str) -> str:
        """LIST of wake-up tokens a worker blocks on (trimmed short)."""
        return f"{self.base}:wake:{job_type}"

    @property
    def leases(self) -> str:
        """ZSET job id → lease expiry (ms), scanned by the supervisor. A lease its worker's beats keep
        (``shared/liveness.py``) is scored from ``HELD_BY_WORKER`` on: never due by itself."""
        return f"{self.base}:leases"

    @property
    def workers(self) -> str:
        """ZSET worker id → ms until which the worker is alive (its last beat, or take, + the lease)."""
        return f"{self.base}:workers"

    @property
    def contact(self) -> str:
        """HASH ``seen``, ``grace_until`` (ms, Redis's clock): when a supervisor last reached the shard, and
        until when its leases are not taken over after an outage (``compute/supervisor/contact.py``)."""
        return f"{self.base}:contact"

    def notices(self, worker: str) -> str:
        """SET of what a worker must hear at its next beat: ``cancel <job id>``, ``lost <job id> <token>``."""
        return f"{self.base}:worker:{worker}:notices"

    def worker_info(self, worker: str) -> str:
        """HASH what a worker publishes about itself (``shared/worker_info.py``), in its home shard
        (``Keys.worker_home``): written by its beat when something changed, expiring unless refreshed."""
        return f"{self.base}:worker:{worker}:info"

    @property
    def deadlines(self) -> str:
        """ZSET job id → deadline (ms) by which the job must have started or been reviewed."""
        return f"{self.base}:deadlines"

    def tenant_jobs(self, tenant: str) -> str:
        """ZSET job id → created_at (ms), for listing newest first (merged over the shards)."""
        return f"{self.base}:tenant:{tenant}:jobs"

    def idempotency(self, tenant: str, key: str) -> str:
        """STRING ``"<job id> <request hash>"``, in the shard ``Keys.idempotency_shard`` picks."""
        return f"{self.base}:idem:{tenant}:{key}"

    @property
    def counts(self) -> str:
        """HASH: jobs per type and status (``jobs|TYPE|STATUS``: now, for a non-terminal status; ever, for a
        terminal one), a tenant's jobs now in each status
        (``tenant|TENANT|TYPE|STATUS``) and a run-time histogram (``run_ms_bucket|TYPE|LE``: runs in the
        bucket up to LE ms, ``run_ms_sum|TYPE``; ``run_ms|TYPE|LE``, every run up to LE, was kept before),
        kept by the scripts for /metrics and GET /v1/jobs/counts: the sum over the shards."""
        return f"{self.base}:counts"

    @property
    def retiring(self) -> str:
        """ZSET ``"<job id> <counts field>"`` → ms when the finished job's keys expire: the supervisor
        takes the job out of its tenant's counts then, so they match what the list still holds."""
        return f"{self.base}:retiring"

    @property
    def webhook_outbox(self) -> str:
        """ZSET job id → ms when its next webhook delivery is due."""
        return f"{self.base}:webhooks"

    @property
    def stats(self) -> str:
        """HASH of counters (stale writes, lease expiries, …) for /metrics: the sum over the shards."""
        return f"{self.base}:stats"

    def create_rate(self, tenant: str, window: int) -> str:
        """STRING counter of job creations by one tenant in one fixed window (expires with it)."""
        return f"{self.base}:rate:create:{tenant}:{window}"

    def hub_wake(self, process: str, reader: int) -> str:
        """STREAM private to one hub reader: an XADD wakes its blocked XREAD when a watch is added."""
        return f"{self.base}:hub:{process}:{reader}"


@dataclass(frozen=True)
class ResourceKeys:
    """The keys of one named resource (``shared/resources.py``), shared by every shard, worker and API
    process: all carry the resource's own hash tag ``{r:NAME}``, so its scripts (``admit``, ``settle``,
    ``reserve``, ``release``) run atomically in that one slot, apart from any shard's."""

    prefix: str
    name: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{r:{self.name}}}"

    @property
    def calls(self) -> str:
        """ZSET ``<call id>:<tokens>`` → ms admitted: the calls of the sliding window (older ones are
        dropped by the next admission)."""
        return f"{self.base}:calls"

    @property
    def state(self) -> str:
        """HASH: ``tokens`` (the tokens of the members of ``calls``), ``paused_until``, the breaker
        (``breaker``, ``failures``, ``open_until``, ``probe``, ``probe_until``) and counters for /metrics."""
        return f"{self.base}:state"

    @property
    def waiting(self) -> str:
        """ZSET job id → ms until which it is known to wait for the resource (in ``ctx.limit``)."""
        return f"{self.base}:waiting"

    @property
    def held(self) -> str:
        """ZSET ``<job id>:<token>`` (or a worker's reservation) → ms its hold lasts unless renewed:
        the running jobs that count against ``concurrency``."""
        return f"{self.base}:held"


@dataclass(frozen=True)
class Keys:
    prefix: str = "bl"
    #: fixed for the life of the data: key names depend on it
    shards: int = 1
    _shards: tuple[ShardKeys, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tags = shard_tags(self.shards)
        object.__setattr__(self, "_shards", tuple(ShardKeys(self.prefix, t, i) for i, t in enumerate(tags)))

    def shard(self, index: int) -> ShardKeys:
        return self._shards[index]

    @property
    def all_shards(self) -> tuple[ShardKeys, ...]:
        return self._shards

    def of_job(self, job_id: str) -> ShardKeys:
        """The shard a job lives in (its id says which)."""
        return self._shards[shard_of(job_id, self.shards)]

    def idempotency_shard(self, tenant: str, key: str) -> ShardKeys:
        """Where a job created with this Idempotency-Key lives, so a replay finds it."""
        return self._shards[shard_for(self.shards, tenant, key)]

    def worker_home(self, worker: str) -> ShardKeys:
        """The shard that keeps a worker's published info (``ShardKeys.worker_info``): workers spread over
        the shards, and each is found from its id alone."""
        return self._shards[shard_for(self.shards, "worker", worker)]

    def home(self, tenant: str) -> ShardKeys:
        """The shard of the tenant's creation counter (one per tenant, whatever shard its jobs use)."""
        return self._shards[shard_for(self.shards, tenant)]

    # per job: all in the job's shard
    def job(self, job_id: str) -> str:
        return f"{self.of_job(job_id).base}:job:{job_id}"

    def events(self, job_id: str) -> str:
        return f"{self.job(job_id)}:events"

    def checkpoint(self, job_id: str) -> str:
        return f"{self.job(job_id)}:checkpoint"

    def steps(self, job_id: str) -> str:
        """HASH of the job's completed steps: ``r:<name>#<occurrence>`` → ``{result, output, attempt,
        duration_ms}`` (JSON), and ``paid:<name>#<occurrence>`` → the attempt that first paid for a model
        call in that step (``-`` stands for calls outside any step). Written fenced (``record.lua``);
        deleted when the job ends."""
        return f"{self.job(job_id)}:steps"

    def trace(self, job_id: str) -> str:
        """HASH span id → span JSON: the job's steps, model calls and apply step, as the workers recorded
        them (the job and attempt spans come from the job hash). Written fenced (``record.lua``)."""
        return f"{self.job(job_id)}:trace"

    def text(self, job_id: str) -> str:
        """STRING the newest attempt's output so far, appended by ``append``: what a snapshot sends."""
        return f"{self.job(job_id)}:text"

    def deliveries(self, job_id: str) -> str:
        """LIST of the job's recent webhook delivery attempts (JSON, newest first, capped)."""
        return f"{self.job(job_id)}:deliveries"

    def resource(self, name: str) -> ResourceKeys:
        return ResourceKeys(self.prefix, name)

    # global: single keys, read and written on their own (never inside a script with others)
    @property
    def shard_count(self) -> str:
        """STRING the number of shards the data was written with (``agree_on_shards``)."""
        return f"{self.prefix}:shards"

    def openai_object(self, object_id: str) -> str:
        """STRING id of an upstream OpenAI object (a response or a batch) → the id of the job that
        created it; workers set it when they checkpoint the id, to expire after the retention. An
        index like ``idempotency`` (looked up by the object's id, so it cannot carry the job's hash
        tag): the job's checkpoint decides whether the object is still the job's current one."""
        return f"{self.prefix}:openai:object:{object_id}"

    @property
    def job_types(self) -> str:
        """HASH type name → policy JSON, written by workers on start; registrations persist."""
        return f"{self.prefix}:types"

    @property
    def cancel_channel(self) -> str:
        """Pub/sub channel carrying the ids of running jobs asked to cancel."""
        return f"{self.prefix}:cancel"

    @property
    def secret(self) -> str:
        return f"{self.prefix}:secret"

    # incoming OpenAI webhooks (API process only)
    def openai_webhook_seen(self, webhook_id: str) -> str:
        """STRING set once per ``webhook-id`` (expires after OpenAI's 72 h of redelivery): dedupe."""
        return f"{self.prefix}:openai:webhook:{webhook_id}"

    @property
    def openai_webhooks(self) -> str:
        """STREAM (capped) of every verified OpenAI webhook event and what it did."""
        return f"{self.prefix}:openai:webhooks"

    @property
    def openai_webhooks_unmatched(self) -> str:
        """STREAM (capped) of verified events that matched no job, kept for review."""
        return f"{self.prefix}:openai:webhooks:unmatched"
