"""Redis key names. Every key of one job carries the hash tag ``{<job id>}``.

The full protocol (field names, scripts, who writes what) is in ``docs/protocol.md``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "bl"

    # per job: all share the {id} hash tag, so one job's keys sit in one cluster slot
    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{{{job_id}}}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:job:{{{job_id}}}:events"

    def checkpoint(self, job_id: str) -> str:
        return f"{self.prefix}:job:{{{job_id}}}:checkpoint"

    # global indexes: hints that point at jobs; the job hash is the truth
    def queue(self, job_type: str) -> str:
        """ZSET job id → time (ms) it may start."""
        return f"{self.prefix}:queue:{job_type}"

    def wake(self, job_type: str) -> str:
        """LIST of wake-up tokens a worker blocks on (trimmed short)."""
        return f"{self.prefix}:wake:{job_type}"

    def worker_wake(self, worker_id: str) -> str:
        """LIST private to one worker (short-lived): it pushes here to end its own BLPOP early."""
        return f"{self.prefix}:worker:{worker_id}:wake"

    @property
    def leases(self) -> str:
        """ZSET job id → lease expiry (ms), scanned by the supervisor."""
        return f"{self.prefix}:leases"

    @property
    def deadlines(self) -> str:
        """ZSET job id → deadline (ms) by which the job must have started or been reviewed."""
        return f"{self.prefix}:deadlines"

    def tenant_jobs(self, tenant: str) -> str:
        """ZSET job id → created_at (ms), for listing newest first."""
        return f"{self.prefix}:tenant:{tenant}:jobs"

    def idempotency(self, tenant: str, key: str) -> str:
        return f"{self.prefix}:idem:{tenant}:{key}"

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
    def counts(self) -> str:
        """HASH: jobs per type and status (``jobs|TYPE|STATUS``: now, for a non-terminal status; ever, for a
        terminal one), a tenant's jobs now in each status
        (``tenant|TENANT|TYPE|STATUS``) and a run-time histogram (``run_ms_bucket|TYPE|LE``: runs in the
        bucket up to LE ms, ``run_ms_sum|TYPE``; ``run_ms|TYPE|LE``, every run up to LE, was kept before),
        kept by the scripts for /metrics and GET /v1/jobs/counts."""
        return f"{self.prefix}:counts"

    @property
    def retiring(self) -> str:
        """ZSET ``"<job id> <counts field>"`` → ms when the finished job's keys expire: the supervisor
        takes the job out of its tenant's counts then, so they match what the list still holds."""
        return f"{self.prefix}:retiring"

    @property
    def webhook_outbox(self) -> str:
        """ZSET job id → ms when its next webhook delivery is due."""
        return f"{self.prefix}:webhooks"

    def deliveries(self, job_id: str) -> str:
        """LIST of the job's recent webhook delivery attempts (JSON, newest first, capped)."""
        return f"{self.prefix}:job:{{{job_id}}}:deliveries"

    @property
    def stats(self) -> str:
        """HASH of counters (stale writes, lease expiries, …) for /metrics."""
        return f"{self.prefix}:stats"

    @property
    def cancel_channel(self) -> str:
        """Pub/sub channel carrying the ids of running jobs asked to cancel."""
        return f"{self.prefix}:cancel"

    @property
    def secret(self) -> str:
        return f"{self.prefix}:secret"

    # API process only
    def create_rate(self, tenant: str, window: int) -> str:
        """STRING counter of job creations by one tenant in one fixed window (expires with it)."""
        return f"{self.prefix}:rate:create:{tenant}:{window}"

    def hub_wake(self, process: str, reader: int) -> str:
        """STREAM private to one hub reader: an XADD wakes its blocked XREAD when a watch is added."""
        return f"{self.prefix}:hub:{process}:{reader}"

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
