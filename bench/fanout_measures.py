"""The measurements of bench/bench_fanout.py, each against one fresh server process.

    fan-out      C clients on J running jobs; the writer appends outputs (text = write time) at R/(C/J)
                 per second for S seconds: latency write → client, lost, delivered/s, server CPU µs
                 per delivered event, the server's Redis connections, the load generators' CPU
    idle memory  server RSS with N idle clients minus RSS with none (after 10 warm-up clients), ÷ N
    resume       one client reads a finished job's 100k outputs from the start; then 10 at once
    single job   a `backlane worker` writes n outputs as fast as it can; one follower: n ÷ (job start
                 → terminal event seen)

The writer appends as a worker does (``Attempts.append``, fenced by the attempt's token): the appends
due in one tick go out together (``Scripts`` pipelines the scripts of one loop turn).
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from array import array
from collections import Counter
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from bench.fanout_client import SseClient, connect
from bench.fanout_jobs import text_of
from bench.fanout_processes import AUTH, TENANT, Kind, LoadGenProcess, Server
from compute.leases import Attempts
from shared.jobs import JobStore, NewJob
from shared.serialization import dumps

JOB_TYPE = "bench.fanout"
LEASE_MS = 3_600_000
#: entries of a fresh running job's stream (queued, running): a client has caught up when it has them
FRESH_EVENTS = 2
GRACE_S = 5.0
HOST = "127.0.0.1"


@dataclass
class Bench:
    url: str
    redis: Redis
    store: JobStore
    attempts: Attempts
    loadgens: list[LoadGenProcess]


def events_path(job_id: str, query: str = "") -> str:
    return f"/v1/jobs/{job_id}/events{query}"


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


async def running_jobs(b: Bench, n: int, job_type: str = JOB_TYPE) -> dict[str, int]:
    """n new jobs, started by the benchmark's writer: job id → fencing token."""
    for _ in range(n):
        await b.store.create(NewJob(tenant=TENANT, type=job_type, input={}, max_attempts=1))
    tokens: dict[str, int] = {}
    while len(tokens) < n:
        taken, _ = await b.attempts.take([job_type], n - len(tokens), LEASE_MS)
        if not taken:
            raise RuntimeError("created jobs could not be taken")
        tokens.update((s.job_id, s.token) for s in taken)
    return tokens


async def write(b: Bench, tokens: dict[str, int], written: Counter[str], rate: float, seconds: float
                ) -> tuple[int, float]:
    """Appends outputs over the jobs in turn at ``rate`` per second for ``seconds``: (events, elapsed s)."""
    ids, n, turn = list(tokens), 0, 0
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        due = int(rate * elapsed) - n
        if due > 0:
            batch: Counter[str] = Counter()
            for _ in range(due):
                batch[ids[turn % len(ids)]] += 1
                turn += 1
            event = ("output", {"text": f"{time.time():.6f};"})
            await asyncio.gather(*(b.attempts.append(job, tokens[job], written[job], [event] * k)
                                   for job, k in batch.items()))
            written.update(batch)
            n += due
        await asyncio.sleep(0.001)
    return n, time.perf_counter() - t0


async def open_clients(b: Bench, port: int, paths: list[str], limit_s: float = 120) -> int:
    """Spreads the clients over the load generators; the number that failed or did not catch up."""
    shares = [paths[i::len(b.loadgens)] for i in range(len(b.loadgens))]
    replies = await asyncio.gather(*(lg.call("open", host=HOST, port=port, paths=share, headers=AUTH,
                                             ready=FRESH_EVENTS, limit_s=limit_s)
                                     for lg, share in zip(b.loadgens, shares, strict=True) if share))
    bad = sum(r["failed"] + r["behind"] for r in replies)
    if bad:
        print(f"      {bad} of {len(paths)} clients failed or did not catch up: "
              f"{[e for r in replies for e in r['errors']][:3]}", flush=True)
    return bad


async def close_clients(b: Bench) -> None:
    await asyncio.gather(*(lg.call("close") for lg in b.loadgens))


async def forget(b: Bench, job_ids: list[str]) -> None:
    keys = [k for j in job_ids for k in (b.store.keys.events(j), b.store.keys.job(j))]
    for i in range(0, len(keys), 1000):
        await b.redis.delete(*keys[i:i + 1000])


async def fanout(b: Bench, kind: Kind, rate: float, clients: int, jobs: int, seconds: float) -> dict[str, Any]:
    server = await Server(kind, b.url).start()
    tokens: dict[str, int] = {}
    try:
        tokens = await running_jobs(b, jobs)
        ids = list(tokens)
        paths = [events_path(ids[i % jobs]) for i in range(clients)]
        failed = await open_clients(b, server.port, paths)
        conns = await server.redis_connections(b.redis)
        await asyncio.gather(*(lg.call("mark") for lg in b.loadgens))
        cpu0, t0, wall0 = server.cpu_s(), time.time(), time.perf_counter()
        written: Counter[str] = Counter()
        n, elapsed = await write(b, tokens, written, rate * jobs / clients, seconds)
        expected = {events_path(j): written[j] for j in ids}
        await asyncio.gather(*(lg.call("wait", expected=expected, limit_s=GRACE_S) for lg in b.loadgens))
        cpu = server.cpu_s() - cpu0
        replies = await asyncio.gather(*(lg.call("collect") for lg in b.loadgens))
        window = time.perf_counter() - wall0
        conns = max(conns, await server.redis_connections(b.redis))
        await close_clients(b)
    finally:
        await server.stop()
        await forget(b, list(tokens))
    latencies = array("d")
    for reply in replies:
        latencies.frombytes(base64.b64decode(reply["latencies"]))
    lat = sorted(latencies)
    received = sum(count for reply in replies for _, count in reply["outputs"])
    last = max(reply["last_recv"] for reply in replies)
    out = {
        "p50": percentile(lat, 0.50) * 1000, "p99": percentile(lat, 0.99) * 1000,
        "lost": max(0, sum(expected[p] for p in paths) - received), "failed": failed,
        "delivered": received / (last - t0) if last > t0 else 0.0, "written": n / elapsed,
        "cpu_us": cpu / received * 1e6 if received else float("nan"), "conns": conns,
        "loadgen_cpu": max(reply["cpu"] for reply in replies) / window * 100,
    }
    print(f"    {kind.name:<9} {rate:>7,.0f}/s: p50 {out['p50']:6.1f} ms  p99 {out['p99']:7.1f} ms  "
          f"lost {out['lost']:>6}  delivered {out['delivered']:>7,.0f}/s (written {out['written']:,.0f}/s)  "
          f"CPU {out['cpu_us']:5.1f} µs/ev  Redis conns {conns:>4}  load gen CPU {out['loadgen_cpu']:.0f}% max  "
          f"(load average {os.getloadavg()[0]:.1f})",
          flush=True)
    return out


async def idle_memory(b: Bench, kind: Kind, clients: int, jobs: int) -> dict[str, Any]:
    server = await Server(kind, b.url).start()
    tokens: dict[str, int] = {}
    try:
        tokens = await running_jobs(b, jobs)
        ids = list(tokens)
        await open_clients(b, server.port, [events_path(ids[i % jobs]) for i in range(10)])  # warm-up
        few = await server.redis_connections(b.redis)
        await close_clients(b)
        await asyncio.sleep(0.5)
        rss0 = server.rss_bytes()
        await open_clients(b, server.port, [events_path(ids[i % jobs]) for i in range(clients)])
        await asyncio.sleep(1.0)
        rss1, many = server.rss_bytes(), await server.redis_connections(b.redis)
        await close_clients(b)
    finally:
        await server.stop()
        await forget(b, list(tokens))
    out = {"kb_per_conn": (rss1 - rss0) / clients / 1024, "conns_10": few, "conns_n": many}
    print(f"    {kind.name:<9} idle: {out['kb_per_conn']:.1f} KB per connection (RSS {rss0 / 2**20:.1f} → "
          f"{rss1 / 2**20:.1f} MiB with {clients}), Redis conns {few} with 10 clients, {many} with {clients}",
          flush=True)
    return out


async def finished_job(b: Bench, n: int, text: Any = lambda i: f"{i}.") -> tuple[str, str]:
    """A completed job with n outputs, written in fenced appends of 500, pipelined: (id, its text)."""
    job_id, token = next(iter((await running_jobs(b, 1)).items()))
    texts = [text(i) for i in range(n)]
    calls = [(i, [("output", {"text": t}) for t in texts[i:i + 500]]) for i in range(0, n, 500)]
    for k in range(0, len(calls), 20):
        await asyncio.gather(*(b.attempts.append(job_id, token, i, events) for i, events in calls[k:k + 20]))
    result = await b.store.transition(job_id, JOB_TYPE, "completed", token=token, event={"result": {"n": n}},
                                      fields={"result": dumps({"n": n})})
    if not result.ok:
        raise RuntimeError(f"the resume job could not complete: {result}")
    return job_id, "".join(texts)


async def read_all(port: int, path: str, limit_s: float = 300) -> SseClient:
    """One client reading a stream until its terminal event, in text mode."""
    client = await connect(HOST, port, path, AUTH)
    await asyncio.wait_for(client.done, limit_s)
    return client


def _checked(client: SseClient, text: str, what: str) -> SseClient:
    if client.error or "".join(client.text) != text:
        got = "".join(client.text)
        raise RuntimeError(f"{what}: the text rebuilt from the stream differs from the written text "
                           f"({len(got)} chars, {len(text)} written; error: {client.error or 'none'})")
    return client


async def resume(b: Bench, kind: Kind, variants: dict[str, str], job: tuple[str, str], warm: tuple[str, str],
                 concurrent: int) -> dict[str, dict[str, float]]:
    """For each variant (label → query string): one reader from the start, then ``concurrent`` at once."""
    server = await Server(kind, b.url).start()
    out = {}
    try:
        for label, query in variants.items():
            _checked(await read_all(server.port, events_path(warm[0], query)), warm[1], f"{label} warm-up")
            one = _checked(await read_all(server.port, events_path(job[0], query)), job[1], label)
            t0, cpu0 = time.perf_counter(), _own_cpu()
            many = await asyncio.gather(*(read_all(server.port, events_path(job[0], query))
                                          for _ in range(concurrent)))
            all_done, client_cpu = time.perf_counter() - t0, _own_cpu() - cpu0
            for client in many:
                _checked(client, job[1], f"{label}, {concurrent} at once")
            out[label] = {"first_byte": (one.t_first_byte - one.t_start) * 1000,
                          "first_event": (one.t_first_event - one.t_start) * 1000,
                          "all_text": (one.t_end - one.t_start) * 1000, "concurrent": all_done * 1000,
                          "client_cpu": client_cpu / all_done * 100,
                          "events": one.events, "snapshots": one.snapshots}
            r = out[label]
            print(f"    {label:<17} resume of {len(job[1]):,} chars: first byte {r['first_byte']:.1f} ms, first "
                  f"event {r['first_event']:.1f} ms, all text {r['all_text']:.1f} ms ({one.events:,} events, "
                  f"{one.snapshots} snapshots); {concurrent} at once: {r['concurrent']:.1f} ms (the readers' CPU "
                  f"{r['client_cpu']:.0f}% of a core)", flush=True)
    finally:
        await server.stop()
    return out


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


async def single_job(b: Bench, kind: Kind, n: int) -> dict[str, float]:
    """A `backlane worker` (started by the caller) runs a bench.firehose job of n outputs; one follower."""
    server = await Server(kind, b.url).start()
    try:
        created = await b.store.create(NewJob(tenant=TENANT, type="bench.firehose", input={"n": n}, max_attempts=1))
        client = await read_all(server.port, events_path(created.job_id))
    finally:
        await server.stop()
    _checked(client, "".join(text_of(i) for i in range(n)), f"{kind.name} single job")
    job = await b.store.job(created.job_id)
    assert job is not None and job.started_at and job.finished_at
    started = job.started_at / 1000
    rate, written = n / (client.end_wall - started), n / ((job.finished_at - job.started_at) / 1000)
    print(f"    {kind.name:<9} single job: {n:,} outputs, {client.end_wall - started:.2f} s from the job's start "
          f"to the terminal event at the follower: {rate:,.0f} events/s (the worker wrote {written:,.0f}/s; "
          f"{client.events:,} events received)", flush=True)
    await forget(b, [created.job_id])
    return {"rate": rate, "worker_rate": written}
