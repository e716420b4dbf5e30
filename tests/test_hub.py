"""The fan-out hub's bookkeeping against a real redis-server: cursors at the join, wake-ups, lagged
clients, reader spreading, Redis restarts and shutdown. End to end it is proven by the SSE tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis_server import RedisServer

from api.hub import Entry, Hub, Subscription
from shared.connection import connect
from shared.keys import Keys
from shared.shards import new_job_id

pytestmark = pytest.mark.anyio
KEYS = Keys("bl")


def make_hub(redis: Redis, **kw: int) -> Hub:
    options = {"queue_size": 64, "keys_per_reader": 256, "max_readers": 4, "block_ms": 1000, **kw}
    return Hub(redis, KEYS, **options)


@pytest.fixture
async def hub(redis: Redis) -> AsyncIterator[Hub]:
    hub = make_hub(redis)
    yield hub
    await hub.stop()


async def add(redis: Redis, job_id: str, n: int, start: int = 1) -> list[str]:
    return [
        str(await redis.xadd(KEYS.events(job_id), {"t": "output", "d": f'{{"seq":{seq}}}'}))
        for seq in range(start, start + n)
    ]


async def take(sub: Subscription, n: int, timeout: float = 3) -> list[Entry]:
    got: list[Entry] = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            batch = await sub.next_batch()
            assert batch is not None, "lagged"
            got += batch
    return got


async def test_a_new_watch_starts_at_the_cursor_and_later_joiners_learn_the_hub_cursor(
    hub: Hub, redis: Redis
) -> None:
    job = new_job_id(0, 1)
    first_ids = await add(redis, job, 3)
    first = hub.subscribe(job, first_ids[0])
    assert first.start == first_ids[0] and hub.watched == 1 and hub.readers == 1
    assert [e[0] for e in await take(first, 2)] == first_ids[1:]
    second = hub.subscribe(job, "0-0")
    assert second.start == first_ids[2]  # it reads (0-0, start] itself, the queue brings the rest
    more = await add(redis, job, 2, start=4)
    assert [e[0] for e in await take(first, 2)] == more
    assert [e[0] for e in await take(second, 2)] == more
    hub.unsubscribe(first)
    assert hub.watched == 1
    hub.unsubscribe(second)
    hub.unsubscribe(second)  # twice is harmless
    assert hub.watched == 0


async def test_adding_a_watch_wakes_the_blocked_reader_at_once(redis: Redis) -> None:
    hub = make_hub(redis, block_ms=5000)
    try:
        hub.subscribe(new_job_id(0, 1), "0-0")
        await asyncio.sleep(0.1)  # the reader is now blocked for up to 5 s on the first stream
        job = new_job_id(0, 1)
        ids = await add(redis, job, 1)
        began = time.monotonic()
        sub = hub.subscribe(job, "0-0")
        assert [e[0] for e in await take(sub, 1)] == ids
        assert time.monotonic() - began < 1.0
    finally:
        await hub.stop()


async def test_a_full_queue_marks_the_client_lagged_and_the_others_go_on(redis: Redis) -> None:
    hub = make_hub(redis, queue_size=4)
    try:
        job = new_job_id(0, 1)
        slow, fast = hub.subscribe(job, "0-0"), hub.subscribe(job, "0-0")
        ids: list[str] = []
        for i in range(7):  # the fast client keeps up; the slow one never reads
            batch = await add(redis, job, 3, start=3 * i + 1)
            assert [e[0] for e in await take(fast, 3)] == batch
            ids += batch
        assert slow.lagged and len(slow.ready) <= 4 and not fast.lagged
        assert await slow.next_batch() is None
        assert hub.lagged_total == 1 and hub.deepest_queue == 0
        # the lagged client left the watch; rejoining from its own cursor works as for anyone
        again = hub.subscribe(job, "0-0")
        assert again.start == ids[-1]
        later = await add(redis, job, 1, start=22)
        assert [e[0] for e in await take(again, 1)] == later
    finally:
        await hub.stop()


async def test_a_watch_dropped_and_recreated_mid_read_starts_from_its_own_cursor(redis: Redis) -> None:
    hub = make_hub(redis)
    try:
        job = new_job_id(0, 1)
        ids = await add(redis, job, 5)
        sub = hub.subscribe(job, ids[-1])  # the reader now blocks after the tail
        await asyncio.sleep(0.05)
        hub.unsubscribe(sub)
        again = hub.subscribe(job, "0-0")  # same stream, older cursor, while that read is in flight
        assert [e[0] for e in await take(again, 5)] == ids
    finally:
        await hub.stop()


async def test_streams_spread_over_a_bounded_number_of_readers(redis: Redis) -> None:
    hub = make_hub(redis, keys_per_reader=2, max_readers=2)
    try:
        jobs = [new_job_id(0, 1) for _ in range(7)]  # more than 2 × 2: readers take more than their share
        subs = [hub.subscribe(job, "0-0") for job in jobs]
        assert hub.readers == 2 and hub.watched == 7
        expected = {job: await add(redis, job, 3) for job in jobs}
        for job, sub in zip(jobs, subs, strict=True):
            assert [e[0] for e in await take(sub, 3)] == expected[job]
    finally:
        await hub.stop()


async def test_the_reader_survives_a_redis_restart() -> None:
    server = RedisServer().start()
    redis = connect(server.url, 4)
    hub = make_hub(redis, block_ms=200)
    try:
        job = new_job_id(0, 1)
        sub = hub.subscribe(job, "0-0")
        first = await add(redis, job, 1)
        assert [e[0] for e in await take(sub, 1)] == first
        server.stop()
        await asyncio.sleep(0.5)  # the reader meets connection errors and backs off
        server.start()
        ids = await add(redis, job, 2, start=2)  # a fresh server: new ids, after the old cursor
        assert [e[0] for e in await take(sub, 2, timeout=10)] == ids
    finally:
        await hub.stop()
        await redis.aclose()
        server.cleanup()


async def test_stop_ends_the_readers_and_removes_the_wake_keys(redis: Redis) -> None:
    hub = make_hub(redis)
    hub.subscribe(new_job_id(0, 1), "0-0")
    hub.subscribe(new_job_id(0, 1), "0-0")
    await asyncio.sleep(0.05)
    wake = KEYS.shard(0).hub_wake(hub.process, 0)
    await hub.stop()
    assert hub.readers == 0 and hub.watched == 0
    assert not await redis.exists(wake)
    with pytest.raises(RuntimeError):
        hub.subscribe(new_job_id(0, 1), "0-0")


async def test_a_cursor_past_the_tail_does_not_start_the_watch_in_the_future(hub: Hub, redis: Redis) -> None:
    """Bug: the first subscriber's cursor became the shared watch's XREAD cursor; one past the
    stream's end made the reader skip every new entry, for every subscriber of that job.
    Cause: nothing compared the cursor with the stream's tail.
    Fix: before a new watch's first read, the reader moves its cursor back to the stream's newest
    entry when it lies past it (the SSE route also refuses such a cursor with 400)."""
    job = new_job_id(0, 1)
    old = await add(redis, job, 2)
    bogus = hub.subscribe(job, "99999999999999-0")  # alone: its cursor is the watch's first cursor
    async with asyncio.timeout(3):  # the watch's first read has been made: the reader blocks in XREAD
        while not any(r.blocking for r in hub._readers):
            await asyncio.sleep(0.005)
    honest = hub.subscribe(job, old[-1])  # joins a watch that is already reading
    new = await add(redis, job, 3, start=3)
    assert [e[0] for e in await take(honest, 3)] == new
    assert [e[0] for e in await take(bogus, 3)] == new


async def test_a_watch_whose_cursor_is_known_within_the_stream_reads_from_it_without_the_tail_check(
    hub: Hub, redis: Redis
) -> None:
    """``within``: the caller read its cursor from the stream (the SSE feed after its replay), so the
    new watch is not checked against the tail, one round trip less before its first read; a later
    joiner with an older cursor learns the watch's cursor and reads the gap itself."""
    job = new_job_id(0, 1)
    ids = await add(redis, job, 3)
    first = hub.subscribe(job, ids[1], within=True)
    assert first.start == ids[1]
    later = hub.subscribe(job, ids[0], within=True)  # the watch's cursor stays: nothing moves it back
    assert later.start == ids[1]
    assert [e[0] for e in await take(first, 1)] == ids[2:]
    more = await add(redis, job, 2, start=4)
    assert [e[0] for e in await take(first, 2)] == more
    assert [e[0] for e in (await take(later, 3))] == ids[2:] + more
