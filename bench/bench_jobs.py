"""Backlane against SAQ and arq on one private redis-server, with no-op jobs and one worker process each.

    python3 bench/bench_jobs.py [--jobs 1000] [--latency-jobs 200] [--reps 3] [--concurrency 4]

Each repetition runs Backlane, SAQ and arq in turn (interleaved), and for each system measures:

1. submit: N jobs, one awaited call at a time: Backlane through `POST /v1/jobs` to a `backlane api`
   process, SAQ `Queue.enqueue` and arq `ArqRedis.enqueue_job` straight into Redis; then, for
   Backlane, N more through httpx, printed beside it ("with httpx");
2. drain: those queued jobs (Backlane's 2N, the others' N), then one worker process is started
   (`backlane worker`, `saq`, `arq`, concurrency as given); jobs/s from the first completion seen
   to the last;
3. latency: with the worker running, M jobs one at a time, submit → completed: Backlane follows the
   job's SSE stream to its terminal status event, SAQ `Job.refresh(until_complete=)` (pub/sub), arq
   `Job.result(poll_delay=0.01)`; p50 and p95;
4. Redis commands per job: INFO commandstats before and after N more jobs, submit through completion
   with the worker running (commands run inside Lua scripts count too; the benchmark's own INFO and
   polling are left out), with the top 10 commands; and the commands of step 1 alone (submit);
5. jobs that never completed (must be 0), with how they ended instead.

Then the medians over the repetitions and the ratios Backlane/SAQ and Backlane/arq. The workers run
with their defaults otherwise (arq polls its queue every 0.5 s).

Backlane's HTTP requests (submit, and the SSE stream of step 3) go through a minimal keep-alive
HTTP/1.1 client (bench/http_client.py), as server benchmarks such as wrk do: SAQ and arq are timed
with their own lean Redis clients, and httpx costs about 1 ms of this process's CPU per request on
2 cores, about as much as the API spends on a create. The httpx figure of step 1 is what an
application using httpx would see.

Needs the `bench` extra and arq, which asks for redis-py < 6 and so goes in without its dependencies:
`pip install -e '.[bench]' && pip install --no-deps 'arq>=0.28'`. The systems and child processes: bench/job_systems.py.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backlane.embedded import RedisServer
from bench.job_systems import LOGS, PROCS, Arq, Backlane, Saq, System, spawn, stop
from shared.settings import Settings


async def wait_finished(system: System, limit_s: float, every_s: float) -> tuple[int, tuple[float, int] | None]:
    """Polls until every submitted job has ended or limit_s has passed (a job still not done then is
    counted by not_completed): (polls, the first (time, count) seen past the starting count)."""
    polls, first, deadline = 1, None, time.monotonic() + limit_s
    start = done = await system.finished()
    while done < system.submitted and time.monotonic() < deadline:
        await asyncio.sleep(every_s)
        done, polls = await system.finished(), polls + 1
        if first is None and done > start:
            first = (time.perf_counter(), done)
    return polls, first


async def commandstats(redis: Redis) -> Counter[str]:
    info = await redis.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()})


def per_job(before: Counter[str], after: Counter[str], n: int, polled: str = "", polls: int = 0) -> Counter[str]:
    diff = after - before  # keeps what grew
    diff["info"] = 0
    diff[polled] -= polls
    return Counter({name: calls / n for name, calls in diff.items() if calls > 0})


async def run_system(system: System, args: argparse.Namespace, redis: Redis) -> dict[str, Any]:
    n, out, worker = args.jobs, {}, None
    tag = f"  {system.name:<8}"
    await system.start()
    try:
        before, t = await commandstats(redis), time.perf_counter()
        for _ in range(n):
            await system.submit()
        out["submit"] = n / (time.perf_counter() - t)
        submit_commands = sum(per_job(before, await commandstats(redis), n).values())
        print(f"{tag} submit, one at a time:  {out['submit']:>9,.0f} jobs/s", flush=True)
        for label, submit in system.other_submits().items():
            t = time.perf_counter()
            for _ in range(n):
                await submit()
            out[f"submit {label}"] = n / (time.perf_counter() - t)
            print(f"{tag}   {label + ':':<22}{out[f'submit {label}']:>9,.0f} jobs/s", flush=True)

        launched = time.perf_counter()
        worker = spawn(f"{system.name}-worker", system.worker(), system.env())
        _, first = await wait_finished(system, args.timeout, 0.01)
        end = time.perf_counter()
        t0, done0 = first or (launched, 0)
        out["drain"] = (system.submitted - done0) / (end - t0) if end > t0 else float("nan")
        print(f"{tag} drain, one worker:      {out['drain']:>9,.0f} jobs/s (first completion seen "
              f"{t0 - launched:.2f} s after the worker's start, the last {end - launched:.2f} s)", flush=True)

        latencies, timeouts = [], 0
        for _ in range(args.latency_jobs):
            t = time.perf_counter()
            try:
                if await asyncio.wait_for(system.round_trip(), 30):
                    latencies.append((time.perf_counter() - t) * 1000)
            except TimeoutError:
                timeouts += 1
        latencies.sort()
        out["p50"] = statistics.median(latencies) if latencies else float("nan")
        out["p95"] = latencies[-(-len(latencies) * 95 // 100) - 1] if latencies else float("nan")
        print(f"{tag} submit → completed:     p50 {out['p50']:.1f} ms, p95 {out['p95']:.1f} ms "
              f"({len(latencies)} of {args.latency_jobs} completed, {timeouts} timed out)", flush=True)

        before = await commandstats(redis)
        for _ in range(n):
            await system.submit()
        polls, _ = await wait_finished(system, args.timeout, 0.02)
        commands = per_job(before, await commandstats(redis), n, system.poll_command, polls)
        out["commands"], out["submit_commands"] = sum(commands.values()), submit_commands
        top = ", ".join(f"{name} {calls:.2f}" for name, calls in commands.most_common(10))
        print(f"{tag} Redis commands per job: {out['commands']:.1f}, of which submit {submit_commands:.1f} "
              f"({top})", flush=True)
    finally:
        if worker is not None:
            await asyncio.to_thread(stop, worker)
        missing = await system.not_completed()
        await system.close()
    out["never"] = sum(missing.values())
    how = "; ".join(f"{count} {outcome}" for outcome, count in missing.most_common())
    print(f"{tag} never completed:        {out['never']} of {system.submitted}" + (f" ({how})" if how else ""),
          flush=True)
    return out


def summary(results: dict[str, list[dict[str, Any]]]) -> None:
    rows = [("submit, one at a time (jobs/s)", "submit", "{:,.0f}"), ("drain, one worker (jobs/s)", "drain", "{:,.0f}"),
            ("submit → completed p50 (ms)", "p50", "{:.1f}"), ("submit → completed p95 (ms)", "p95", "{:.1f}"),
            ("Redis commands per job", "commands", "{:.1f}"), ("  of which submit", "submit_commands", "{:.1f}")]
    names = list(results)
    print(f"\nmedians of {len(results['Backlane'])} repetitions; ratios Backlane ÷ SAQ and Backlane ÷ arq")
    print(f"{'figure':<32}" + "".join(f"{name:>10}" for name in names) + f"{'B/SAQ':>8}{'B/arq':>8}")
    for label, key, fmt in rows:
        med = {name: statistics.median(r[key] for r in results[name]) for name in names}
        cells = "".join(f"{fmt.format(med[name]):>10}" for name in names)
        print(f"{label:<32}{cells}{med['Backlane'] / med['SAQ']:>8.2f}{med['Backlane'] / med['arq']:>8.2f}")
        for other in sorted({k for r in results["Backlane"] for k in r if k.startswith(f"{key} ")}):
            b = statistics.median(r[other] for r in results["Backlane"])
            print(f"{'  ' + other.removeprefix(key + ' '):<32}{fmt.format(b):>10}{'':>20}"
                  f"{b / med['SAQ']:>8.2f}{b / med['arq']:>8.2f}")
    print(f"{'never completed (all reps)':<32}" + "".join(f"{sum(r['never'] for r in results[n]):>10}" for n in names))


async def run(args: argparse.Namespace, url: str) -> None:
    redis = Redis.from_url(url, decode_responses=True)
    results: dict[str, list[dict[str, Any]]] = {"Backlane": [], "SAQ": [], "arq": []}
    try:
        for rep in range(1, args.reps + 1):
            print(f"repetition {rep} of {args.reps}: {args.jobs} jobs, {args.latency_jobs} for latency, "
                  f"concurrency {args.concurrency}", flush=True)
            for cls in (Backlane, Saq, Arq):
                results[cls.name].append(await run_system(cls(url, args.concurrency), args, redis))
    finally:
        await redis.aclose()
    summary(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000, help="jobs for submit, drain and commands (N)")
    parser.add_argument("--latency-jobs", type=int, default=200, help="jobs for the latency figure (M)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions")
    parser.add_argument("--concurrency", type=int, default=Settings().worker_concurrency, help="of each worker")
    parser.add_argument("--timeout", type=float, default=120, help="longest wait for a batch to finish (s)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally below stops the children
    server = RedisServer().start()
    try:
        asyncio.run(run(args, server.url))
        shutil.rmtree(LOGS, ignore_errors=True)
    except KeyboardInterrupt:
        sys.exit(f"interrupted; child process logs: {LOGS}")
    except BaseException:
        print(f"child process logs: {LOGS}", file=sys.stderr)
        raise
    finally:
        for proc in list(PROCS):
            stop(proc)
        server.cleanup()


if __name__ == "__main__":
    main()
