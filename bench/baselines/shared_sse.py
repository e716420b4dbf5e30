"""The better hand-rolled SSE server: ONE reader task per process reads every watched stream and fans
each entry out to the clients' queues.

    client ── GET ──▶ handler ── XRANGE from its cursor (replay) ──────────────────────▶ Redis
       ▲                 │ subscribe(key, last sent), XRANGE once more, then its queue
       │                 ▼
       └── EventSourceResponse ◀── asyncio.Queue per client ◀── Reader: XREAD BLOCK over all
           (what the queue holds, one chunk)                       watched streams (one connection)

The reader encodes an entry once and puts the same bytes in every subscriber's queue. A stream not
watched yet starts at the subscriber's cursor; a subscriber skips ids it sent in its replay, so the
join is exact. A new watch waits for the reader's current read to end (it blocks at most BLOCK_MS).
Queues are unbounded: no lag handling. A throwaway baseline for bench/bench_fanout.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.asyncio import Redis
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from bench.baselines._serve import (
    HEADERS,
    KEEPALIVE_S,
    app_with,
    cursor_of,
    encode,
    events_key_of,
    is_terminal,
    redis_client,
    serve,
    stream_id,
)

BLOCK_MS = 100
COUNT = 500
#: the replays' pool, as large as Backlane's (BACKLANE_REDIS_MAX_CONNECTIONS)
POOL = 16
#: (stream id, encoded event, terminal?)
Item = tuple[str, bytes, bool]


@dataclass(eq=False)
class Watch:
    cursor: str
    queues: set[asyncio.Queue[Item]] = field(default_factory=set)


class Reader:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.watches: dict[str, Watch] = {}
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def subscribe(self, key: str, cursor: str) -> asyncio.Queue[Item]:
        watch = self.watches.setdefault(key, Watch(cursor))
        queue: asyncio.Queue[Item] = asyncio.Queue()
        watch.queues.add(queue)
        self.changed.set()
        if self.task is None:
            self.task = asyncio.create_task(self.run())
        return queue

    def unsubscribe(self, key: str, queue: asyncio.Queue[Item]) -> None:
        watch = self.watches.get(key)
        if watch is not None:
            watch.queues.discard(queue)
            if not watch.queues:
                del self.watches[key]

    async def run(self) -> None:
        while True:
            if not self.watches:
                self.changed.clear()
                await self.changed.wait()
            sent = dict(self.watches)
            reply = await self.redis.xread({k: w.cursor for k, w in sent.items()}, count=COUNT, block=BLOCK_MS)
            for key, rows in reply or ():
                watch = self.watches.get(key)
                if watch is not sent[key]:  # dropped (and maybe watched again from its own cursor) meanwhile
                    continue
                for entry_id, fields in rows:
                    item = (entry_id, encode(entry_id, fields["t"], fields["d"]), is_terminal(fields["t"], fields["d"]))
                    for queue in watch.queues:
                        queue.put_nowait(item)
                    watch.cursor = entry_id


def create_app(url: str) -> Starlette:
    redis = redis_client(url, "bench-shared", POOL, BLOCK_MS / 1000)
    reader = Reader(redis_client(url, "bench-shared", 1, BLOCK_MS / 1000))
    events_key = events_key_of(redis, url)

    async def replay(key: str, last: str) -> AsyncIterator[list[Item]]:
        while True:
            rows = await redis.xrange(key, min=f"({last}" if last != "0-0" else "-", max="+", count=COUNT)
            if rows:
                yield [(i, encode(i, f["t"], f["d"]), is_terminal(f["t"], f["d"])) for i, f in rows]
                last = rows[-1][0]
            if len(rows) < COUNT:
                return

    async def chunks(key: str, last: str) -> AsyncIterator[bytes]:
        queue = None
        try:
            for round_ in range(2):  # the replay; then, subscribed, what came meanwhile
                if round_:
                    queue = reader.subscribe(key, last)
                async for items in replay(key, last):
                    last = items[-1][0]
                    ended = [n for n, item in enumerate(items) if item[2]]
                    yield b"".join(item[1] for item in items[: ended[0] + 1 if ended else None])
                    if ended:
                        return
            assert queue is not None
            seen = stream_id(last)
            while True:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                fresh = [item for item in items if stream_id(item[0]) > seen]
                if not fresh:
                    continue
                seen = stream_id(fresh[-1][0])
                yield b"".join(item[1] for item in fresh)
                if any(item[2] for item in fresh):
                    return
        finally:
            if queue is not None:
                reader.unsubscribe(key, queue)

    async def job_events(request: Request) -> EventSourceResponse:
        key = events_key(request.path_params["job_id"])
        return EventSourceResponse(chunks(key, cursor_of(request) or "0-0"), headers=HEADERS, ping=KEEPALIVE_S,
                                   sep="\n")

    return Starlette(routes=app_with(Route("/v1/jobs/{job_id}/events", job_events)))


if __name__ == "__main__":
    serve(create_app, __doc__ or "")
