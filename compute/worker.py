"""The worker: claims jobs of the types it serves, runs up to N at once, beats to keep their leases
(and to publish what it is and runs: ``compute/presence.py``), stops them on cancel, and on SIGTERM
drains (finish within the grace period, hand back the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from shared.connection import check_durability, connect
from shared.jobs import JobStore
from shared.logs import job_event
from shared.ride_through import RideThrough
from shared.serialization import now_ms
from shared.settings import Settings
from shared.tasks import cancel_until_done
from shared.worker_info import RunningJob

from .context import JobContext
from .errors import DeadlineError, InternalError, classify
from .heartbeat import StopReason, beat_loop, cancel_listener
from .leases import Attempts, LeaseLost, Started
from .otel import OtlpExport
from .outcomes import Outcomes, apply_at_most_once
from .places import Places
from .presence import Presence
from .registry import BUILTIN_MODULES, JobType, load
from .types._openai_client import configuration_problem as openai_configuration_problem

log = logging.getLogger("backlane.worker")
#: how long one blocking read of a shard's wake lists lasts (then it starts again)
WAKE_BLOCK_S = 1.0


@dataclass
class Running:
    ctx: JobContext
    task: asyncio.Task[None]
    stop: StopReason | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class Worker:
    def __init__(
        self, settings: Settings, redis: Redis, job_types: dict[str, JobType], *,
        worker_id: str | None = None, concurrency: int | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.job_types = job_types
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.concurrency = concurrency or settings.worker_concurrency
        self.store = JobStore(redis, settings)
        #: one per process: it knows when Redis last answered, so every call waits out one outage alike
        self.ride = RideThrough(settings.redis_outage_s)
        self.attempts = Attempts(self.store, self.worker_id, self.ride)
        self.outcomes = Outcomes(self.store, self.worker_id, self.ride)
        #: the OTLP export of traces, when the SDK's OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT names a collector
        self.otlp = OtlpExport(settings.otlp_endpoint) if settings.otlp_endpoint else None
        self.running: dict[str, Running] = {}
        self._draining = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._burst = False
        #: set while the claim loop waits for work with a free slot: only then do the wake readers block
        self._idle = asyncio.Event()
        #: ends that wait: a wake token arrived, or the loop has something else to decide
        self._work = asyncio.Event()
        #: shards a wake token came from since the last claim round: they are asked first
        self._woken: list[int] = []
        #: the shard the last job was claimed from: asked first, it is likely to have more
        self._last_shard = 0
        #: what the beats publish about this worker (GET /v1/workers)
        self.presence = Presence(self.worker_id, job_types, self.concurrency, settings.lease_ms,
                                 self._running_jobs, self._draining.is_set)
        #: places of concurrency-limited resources (BACKLANE_RESOURCES), reserved before each take
        self.places = Places(self.store, self.worker_id, [jt.policy for jt in job_types.values()],
                             settings.lease_ms)

    # ---- lifecycle ----------------------------------------------------------------------

    def drain(self) -> None:
        """Stop claiming; running attempts get drain_grace_s to finish, then go back to the queue."""
        if not self._draining.is_set():
            log.info("worker %s draining (%d running)", self.worker_id, len(self.running))
        self._draining.set()
        self._slot_free.set()
        self._work.set()

    async def run(self, burst: bool = False) -> None:
        """Runs until drained (or, with burst, until no work is ready and nothing runs)."""
        self._burst = burst
        helpers = [
            asyncio.create_task(beat_loop(self.attempts, self.settings.heartbeat_s, self.settings.lease_ms,
                                          self._token, self._stop, self.presence), name="heartbeat"),
            asyncio.create_task(cancel_listener(self.redis, self.store.keys.cancel_channel, self._stop),
                                name="cancel-listener"),
        ]
        types = sorted(self.job_types)
        if self.places.active:
            helpers.append(asyncio.create_task(self._renew_places(), name="places"))
        helpers += [asyncio.create_task(self._wake_reader(shard.shard, [shard.wake(t) for t in types]),
                                        name=f"wake-reader-{shard.shard}")
                    for shard in self.store.keys.all_shards]
        try:
            await self._claim_loop(burst)
            await self._finish_running()
        finally:
            await cancel_until_done(helpers)
            if self.otlp is not None:
                await asyncio.to_thread(self.otlp.shutdown)  # sends what is still queued
        # every attempt has ended or been handed back: nothing is left for a supervisor to take over
        with contextlib.suppress(Exception):
            await self.store.workers.leave(self.worker_id)

    async def _finish_running(self) -> None:
        if not self.running:
            return
        tasks = [r.task for r in self.running.values()]
        _, pending = await asyncio.wait(tasks, timeout=self.settings.drain_grace_s)
        for job_id, running in list(self.running.items()):
            if running.task in pending:
                self._stop(job_id, "drain")
        await asyncio.gather(*pending, return_exceptions=True)

    # ---- claiming -------------------------------------------------------------------------

    async def _claim_loop(self, burst: bool) -> None:
        types = sorted(self.job_types)
        while not self._draining.is_set():
            if len(self.running) >= self.concurrency:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            # an attempt that ends while the claim is in flight may have queued its own retry after the
            # claim looked: a burst run ends only when nothing ran before the claim either
            ran_before = bool(self.running)
            try:
                took, next_ready = await self._take(types)
                # taken, and more may be ready now (or no slot is left): take again at once; taken, and
                # the queues had no more: wait for a wake token as when none was ready, rather than pay
                # a take that finds nothing
                if took and (len(self.running) >= self.concurrency
                             or (next_ready is not None and next_ready <= now_ms())):
                    continue
            except Exception:
                log.exception("take failed; retrying")
                await self._pause(1.0)
                continue
            if burst and not took and not ran_before and not self.running and next_ready is None:
                return
            wait_s = 1.0 if next_ready is None else min(1.0, max(0.0, (next_ready - now_ms()) / 1000))
            await self._wait_for_work(wait_s)

    async def _take(self, types: list[str]) -> tuple[bool, int | None]:
        """Takes as many ready jobs as there are free slots (claimed and started in one call) from the
        first shard that has any: the shards a wake token came from, then the one that gave the last
        jobs, then the rest; and runs them. (whether it took any, when to take again: ms, or None to
        wait for a wake token; see ``Attempts.take``)."""
        n = self.store.keys.shards
        woken, self._woken = self._woken, []
        order = list(dict.fromkeys([*woken, *((self._last_shard + i) % n for i in range(n))]))
        free = self.concurrency - len(self.running)
        if self.places.active:
            reserved = await self.places.reserve(free)
            taken: list[Started] = []
            try:
                taken, next_ready = await self.attempts.take(types, free, self.settings.lease_ms, order,
                                                             reserved.argument, self.places.queue_uses(types))
            finally:
                await self.places.settle(reserved, taken)
        else:
            taken, next_ready = await self.attempts.take(types, free, self.settings.lease_ms, order)
        if not taken:
            return False, next_ready
        self._last_shard = self.store.keys.of_job(taken[0].job_id).shard
        for started in taken:
            self._launch(self.job_types[started.job.type], started)
        return True, next_ready

    async def _renew_places(self) -> None:
        """Keeps the resource places of the running jobs, as the beat keeps their leases."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self.places.renew()
            except Exception:
                log.warning("renewing resource places failed; they run on until the next try", exc_info=True)

    async def _wait_for_work(self, wait_s: float) -> None:
        """Waits until a wake reader hears of a ready job (a new or retried job pushes a token on its
        shard's wake list of its type), something else wakes the loop, or ``wait_s`` passes."""
        if wait_s <= 0:
            return
        self._work.clear()
        self._idle.set()
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for may turn a cancel of this task that
            # lands as the time runs out into a TimeoutError, and a killed worker would go on claiming
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, wait_s)):
                    await self._work.wait()
        finally:
            self._idle.clear()

    async def _wake_reader(self, shard: int, keys: list[str]) -> None:
        """Blocks on one shard's wake lists while the loop waits for work (BLPOP over keys of one slot;
        one reader per shard, so a Cluster's shards are all heard). A token that arrives once the loop
        no longer waits goes back to its list, for another worker that may be idle."""
        while True:
            await self._idle.wait()
            try:
                got = await self.redis.blpop(keys, timeout=WAKE_BLOCK_S)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.debug("wake read of shard %d failed; polling meanwhile", shard, exc_info=True)
                await asyncio.sleep(WAKE_BLOCK_S)
                continue
            if got is None:
                continue
            if self._idle.is_set():
                self._woken.append(shard)
                self._work.set()
            else:
                with contextlib.suppress(Exception):
                    await self.redis.lpush(got[0], got[1])

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):  # not wait_for: see _wait_for_work
                await self._draining.wait()

    def _launch(self, jt: JobType, started: Started) -> None:
        """Runs an attempt the take started."""
        ctx = JobContext(self.attempts, started, self.settings)
        if (otlp := self.otlp) is not None:
            ctx.on_span_end = lambda span: otlp.span(ctx.job_id, ctx.job_type, span)
        before = self.running.get(started.job_id)
        if before is not None:
            # our own older attempt of this job still runs (it lost its lease while stalled, and the job
            # was queued again): the take gave the job a newer token, so the old attempt may write nothing
            # more. It is stopped, and the new one begins once it has ended.
            log.warning("job %s taken again while its older attempt still runs here; stopping that one",
                        started.job_id)
            self._stop(started.job_id, "lost")
        task = asyncio.create_task(self._run(jt, ctx, started, before), name=f"job-{started.job_id}")
        self.running[started.job_id] = Running(ctx, task)
        job_event(log, "job.started", "job started", job_id=started.job_id, job_type=jt.policy.name,
                  tenant=started.job.tenant, attempt=started.attempt, worker=self.worker_id,
                  phase="apply" if ctx.apply_phase else None)

    # ---- one attempt ------------------------------------------------------------------------

    async def _run(self, jt: JobType, ctx: JobContext, started: Started, before: Running | None = None) -> None:
        running = self.running.get(ctx.job_id)
        try:
            await self._attempt(jt, ctx, started, before)
        finally:
            await ctx.aclose()
            with contextlib.suppress(Exception):  # else the place comes back when its hold passes
                await self.places.release(ctx.job_id)
            await self._export_attempt(ctx)
            if self.running.get(ctx.job_id) is running:
                self.running.pop(ctx.job_id, None)
            self._slot_free.set()
            if running:
                running.finished.set()
            if self._burst and not self.running:
                self._work.set()  # the loop's wait ends now: the burst run may be over

    async def _export_attempt(self, ctx: JobContext) -> None:
        """The attempt's span (and the job's, when it ended) to the OTLP collector, as Redis recorded
        them: one read of the job, only when exporting."""
        if self.otlp is None:
            return
        with contextlib.suppress(Exception):
            job = await self.store.job(ctx.job_id)
            if job is not None:
                self.otlp.attempt_ended(job, ctx.attempt)

    async def _attempt(self, jt: JobType, ctx: JobContext, started: Started, before: Running | None) -> None:
        try:
            if before is not None:
                await before.finished.wait()
            if ctx.apply_phase:
                apply = jt.apply
                if apply is None:
                    raise InternalError("this job type has no apply step")  # registered without one
                value = await self._bounded(jt, ctx, "the apply step", lambda: ctx.traced(
                    "apply", "apply", lambda: apply(ctx, started.job.result)))
            else:
                value = await self._bounded(jt, ctx, "the handler", lambda: jt.handler(ctx))
            stop = self._stop_reason(ctx.job_id)
            # the handler swallowed the cancellation: honour the stop anyway (but an apply step that
            # finished did take effect: record it rather than call it interrupted)
            if stop is not None and not ctx.apply_phase:
                raise asyncio.CancelledError
            await ctx.flush()
            await (self.outcomes.applied(ctx, value) if ctx.apply_phase else
                   self.outcomes.finished(ctx, value, jt.policy))
        except asyncio.CancelledError:
            await self._stopped(ctx, jt)
        except LeaseLost:
            self._stale(ctx)
        except Exception as exc:
            await self._failed(ctx, jt, exc)

    async def _bounded(self, jt: JobType, ctx: JobContext, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Runs the handler or the apply step within the type's timeout_s. Only that timeout firing is
        a ``deadline``; a TimeoutError of the code's own (its wait_for, its HTTP client) is classified
        like any other exception (transient)."""
        limit = jt.policy.timeout_s
        if limit is None:
            return await call()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        # When the attempt will not be retried, the code is told it is ending for good (as on a cancel)
        # in the same loop turn as the timeout's cancellation, so it can release upstream work (an
        # OpenAI response, a batch) instead of leaving it running and billed.
        retried = self.outcomes.retried_after_deadline(ctx, jt.policy)
        ending = None if retried else loop.call_at(deadline, ctx.cancelled.set)
        timeout = asyncio.timeout_at(deadline)
        try:
            async with timeout:
                value = await call()
        except TimeoutError:
            if timeout.expired():
                raise DeadlineError(f"{what} ran longer than the type's timeout of {limit:g} s") from None
            raise
        finally:
            if ending is not None:
                ending.cancel()
        # code that swallowed the timeout's cancellation and returned still missed the limit; but an
        # apply step that returned did take effect, so its value stands
        if timeout.expired() and not ctx.apply_phase:
            raise DeadlineError(f"{what} ran longer than the type's timeout of {limit:g} s")
        return value

    async def _failed(self, ctx: JobContext, jt: JobType, exc: BaseException) -> None:
        failure = classify(exc)
        if failure.error_class == "internal":
            log.exception("job %s attempt %d raised", ctx.job_id, ctx.attempt, exc_info=exc)
        try:
            await ctx.flush()
        except LeaseLost:
            self._stale(ctx)
            return
        except Exception:
            ctx.discard()
        await self.outcomes.failed(ctx, failure, jt.policy)

    def _stale(self, ctx: JobContext) -> None:
        """A write of this attempt was refused: its lease passed and the job moved on without it."""
        job_event(log, "job.stale_write", "write refused: this attempt lost its lease; it writes nothing more",
                  level=logging.WARNING, job_id=ctx.job_id, job_type=ctx.job_type, tenant=ctx.job.tenant,
                  attempt=ctx.attempt, worker=self.worker_id)

    async def _stopped(self, ctx: JobContext, jt: JobType) -> None:
        stop = self._stop_reason(ctx.job_id)
        if stop == "lost" or stop is None:  # lost, or the worker itself is shutting down hard
            ctx.discard()
            return
        with contextlib.suppress(Exception):
            await ctx.flush()
        ctx.discard()
        with contextlib.suppress(LeaseLost):
            if stop == "cancel":
                await self.outcomes.canceled(ctx)
            elif apply_at_most_once(ctx, jt.policy):
                # cut off half-way by the drain: handing it back would run the side effect again
                await self.outcomes.apply_interrupted(ctx, "worker_lost",
                                                      "the worker shut down during the apply step")
            else:
                await self.outcomes.handed_back(ctx)

    def _stop_reason(self, job_id: str) -> StopReason | None:
        running = self.running.get(job_id)
        return running.stop if running else None

    def _stop(self, job_id: str, reason: StopReason) -> None:
        running = self.running.get(job_id)
        if running is None or running.stop is not None:
            return
        running.stop = reason
        if reason == "cancel":
            running.ctx.cancelled.set()
        running.task.cancel()

    def _running_jobs(self) -> list[RunningJob]:
        return [RunningJob(job_id, r.ctx.job.tenant, r.ctx.job_type) for job_id, r in self.running.items()]

    def _token(self, job_id: str) -> int | None:
        running = self.running.get(job_id)
        return running.ctx.token if running else None


async def run_worker(settings: Settings, modules: list[str], *, concurrency: int | None = None,
                     burst: bool = False) -> None:
    """``backlane worker``: serve the built-in types and those of ``modules`` until SIGTERM/SIGINT."""
    assert settings.redis_url
    redis = connect(settings.redis_url, settings.redis_max_connections, block_s=1.0, name="backlane-worker")
    await check_durability(redis)  # says plainly when Redis could lose jobs
    job_types = load(BUILTIN_MODULES + [m for m in modules if m not in BUILTIN_MODULES])
    store = JobStore(redis, settings)
    await store.agree_on_shards()
    await store.register_types([jt.policy for jt in job_types.values()])
    worker = Worker(settings, redis, job_types, concurrency=concurrency)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals = {"count": 0}

    def on_signal(*_: Any) -> None:
        signals["count"] += 1
        if signals["count"] == 1:
            worker.drain()
        elif main is not None:  # a second signal: stop now; the beats end and the supervisor restarts
            main.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    log.info("worker %s serving %s (concurrency %d)", worker.worker_id, ", ".join(sorted(job_types)),
             worker.concurrency)
    if (problem := openai_configuration_problem(settings)) is not None:
        log.warning(problem)
    try:
        await worker.run(burst=burst)
    finally:
        await redis.aclose()
