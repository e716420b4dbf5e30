"""Resuming a long job from the start: how soon a client has its first byte and all of the output.

    python3 bench/bench_resume.py [--events 100000] [--first-attempt 10000] [--concurrent 10] [--runs 5]
                                  [--compact true|false]

Starts a private redis-server and one `backlane api` process, writes a job the way a worker does
(fenced appends of 500 events, one token each): ``--first-attempt`` events in attempt 1, which is
retried, then the rest in attempt 2, which goes on running. Then clients open
``GET /v1/jobs/{id}/events`` with no cursor (a browser reload from the start) and read until the
newest event is in: first one client at a time (``--runs`` times), then ``--concurrent`` at once.
Prints the time to the first byte of the body and to all of the output (median and worst), and checks
that every client ends with the newest attempt's whole output. ``--compact false`` asks for every event
(as every client got before snapshots). Uses only what older versions have too, so the same script
measures them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backlane.embedded import RedisServer, free_port
from compute.leases import Attempts
from shared.connection import connect
from shared.jobs import JobStore, NewJob
from shared.serialization import loads, now_ms
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key"
BATCH = 500


@dataclass
class Read:
    first_byte_s: float
    all_text_s: float
    body: bytes


async def write_job(store: JobStore, events: int, first_attempt: int) -> tuple[str, str, str]:
    """A running job of ``events`` output events over two attempts; its id, newest stream id, and text."""
    job_id = (await store.create(NewJob(tenant="bench", type="demo.story", input={}, max_attempts=3))).job_id
    attempts = Attempts(store, "bench-writer")
    text = ""
    for attempt, count in ((1, first_attempt), (2, events - first_attempt)):
        (started,), _ = await attempts.take(["demo.story"], 1, 600_000)
        assert started.job_id == job_id and started.attempt == attempt
        tokens = [f"a{attempt}t{i} " for i in range(count)]
        for i in range(0, count, BATCH):
            await attempts.append(job_id, started.token, i, [("output", {"text": t}) for t in tokens[i:i + BATCH]])
        text = "".join(tokens)
        if attempt == 1:
            outcome = await store.transition(job_id, "demo.story", "queued", token=started.token,
                                             event={"reason": "retry"}, ready_at_ms=now_ms())
            assert outcome.outcome == "ok"
    newest = await store.redis.xrevrange(store.keys.events(job_id), count=1)
    return job_id, newest[0][0], text


async def read_until(port: int, path: str, newest: str) -> Read:
    """One client on its own connection: sends the request, reads until the event with id ``newest`` is
    complete (the job runs on: the response does not end), then hangs up."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    marker, body, first = f"id: {newest}\n".encode(), bytearray(), 0.0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if not first:  # the first chunk's size line: the body's first bytes are here
            first = time.perf_counter() - start
        chunk = (await reader.readexactly(size + 2))[:-2]
        tail = len(body)
        body += chunk
        at = body.find(marker, max(0, tail - len(marker)))
        if at >= 0 and body.find(b"\n\n", at) >= 0:
            break
        assert size, "the stream ended before the newest event"
    done = time.perf_counter() - start
    writer.close()
    return Read(first, done, bytes(body))


def shown_text(body: bytes) -> str:
    """What a client shows after reading ``body``: the newest attempt's output (a snapshot stands for
    every event up to it)."""
    text, attempt = "", 0
    for block in body.decode().split("\n\n"):
        data = next((line[6:] for line in block.split("\n") if line.startswith("data: ")), None)
        if data is None:
            continue
        event = loads(data)
        if event["attempt"] > attempt:
            text, attempt = "", event["attempt"]
        if event["type"] == "snapshot":
            text = event.get("draft", "") + event["text"]
        elif event["type"] == "output":
            text += event["text"]
    return text


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


async def run(args: argparse.Namespace, redis_url: str, port: int) -> None:
    redis = connect(redis_url, 16)
    store = JobStore(redis, Settings(redis_url=redis_url))
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(400):
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        job_id, newest, text = await write_job(store, args.events, args.first_attempt)
        path = f"/v1/jobs/{job_id}/events" + ("?compact=false" if args.compact == "false" else "")
        await read_until(port, path, newest)  # warm up: scripts loaded, connections open
        alone = [await read_until(port, path, newest) for _ in range(args.runs)]
        together = await asyncio.gather(*(read_until(port, path, newest) for _ in range(args.concurrent)))
        for read in (*alone, *together):
            assert shown_text(read.body) == text, "a client ended with another text"
        print(f"job: {args.events:,} output events ({args.first_attempt:,} in attempt 1), the newest attempt's "
              f"output {len(text.encode()):,} bytes; compact={args.compact}; {len(alone[0].body):,} bytes sent")
        first = [r.first_byte_s for r in alone]
        whole = [r.all_text_s for r in alone]
        print(f"one client ({args.runs} runs):   first byte median {ms(statistics.median(first))} "
              f"(worst {ms(max(first))}), all text median {ms(statistics.median(whole))} (worst {ms(max(whole))})")
        first = [r.first_byte_s for r in together]
        whole = [r.all_text_s for r in together]
        print(f"{args.concurrent} clients at once:   first byte median {ms(statistics.median(first))} "
              f"(worst {ms(max(first))}), all text median {ms(statistics.median(whole))}, "
              f"the last {ms(max(whole))}")
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--first-attempt", type=int, default=10_000)
    parser.add_argument("--concurrent", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compact", choices=("true", "false"), default="true")
    args = parser.parse_args()
    server = RedisServer().start()
    port = free_port()
    env = {**os.environ, "BACKLANE_REDIS_URL": server.url, "BACKLANE_PORT": str(port),
           "BACKLANE_API_KEYS": f"bench:{KEY}", "BACKLANE_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    api = subprocess.Popen([sys.executable, "-m", "backlane", "api"], env=env, cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        asyncio.run(run(args, server.url, port))
    finally:
        api.terminate()
        api.wait(10)
        server.cleanup()


if __name__ == "__main__":
    main()
