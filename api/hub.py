"""The per-process fan-out hub: every watched job stream is read once, whatever the number of clients.

    SSE handler ──subscribe(job, C)──▶ Hub ── watch {stream: cursor H, subscribers} ──▶ _Reader i
        ▲                                                                                │ XREAD BLOCK
        └──── bounded list per subscriber ◀── dispatch (never awaits a client) ◀──────────┘ (own connection)

- A few readers, each with its own connection, run ``XREAD BLOCK`` over up to ``keys_per_reader``
  watched streams plus a private wake stream. Adding a watch XADDs to the wake stream, so the
  blocked read returns at once and the next read includes the new stream. Connections used:
  ``max_readers`` per shard with watched jobs, whatever the number of clients; every other command
  goes through the shared pool.
- ``subscribe`` registers within one event-loop step. A stream not yet watched starts at the
  lowest cursor of the subscribers that join before its first read, or at the stream's newest
  entry when that lies past it (the reader checks before the first read: one client's made-up
  cursor must not make XREAD skip what every other subscriber is waiting for; a subscriber that
  knows its cursor is not past it, ``within``, spares the check). Otherwise the subscriber learns
  the hub's cursor H (``Subscription.start``) and everything after H arrives in its list. The
  handler reads the rest itself when H lies past what it sent, and skips ids it already sent, so
  the join is exact both ways.
- Each entry read is parsed and encoded once (``api/entries.py``); every subscriber of the job gets
  the same objects, and its writer wakes once for whatever arrived meanwhile.
- A subscriber that would hold more than ``queue_size`` entries is "lagged": they are dropped
  (memory stays bounded), it gets ``None`` and leaves the watch; its handler catches up with XRANGE
  and subscribes again. No client can stall another or the reader.
- On Redis errors a reader logs, backs off and retries with the same cursors: nothing is skipped.
- XREAD over many keys needs them in one slot, so a reader reads the streams of one shard only
  (``shared/shards.py``): on a Cluster, each shard with watched jobs has readers of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from shared.connection import dedicated
from shared.jobs import parse_stream_id
from shared.keys import Keys
from shared.tasks import cancel_until_done

from .entries import Entry, entry

log = logging.getLogger("backlane.hub")

#: with more streams than one XREAD carries, a reader polls them and blocks this long on its wake key
OVERFLOW_BLOCK_MS = 100


class Subscription:
    """One client's view of the live feed of one job: the entries it is due, and a waiter to wake."""

    __slots__ = ("_waiter", "_watch", "job_id", "lagged", "maxsize", "ready", "start")

    def __init__(self, job_id: str, start: str, maxsize: int) -> None:
        self.job_id = job_id
        #: the hub's cursor when this client joined: everything after it arrives in ``ready``
        self.start = start
        self.maxsize = maxsize
        #: entries read for this client and not yet taken by its writer (a plain list: no queue, no task)
        self.ready: list[Entry] = []
        self.lagged = False
        self._waiter: asyncio.Future[None] | None = None
        self._watch: _Watch | None = None

    def deliver(self, entries: list[Entry]) -> bool:
        """Adds ``entries`` for the client; False when it has fallen too far behind and must catch up
        from the stream (what it had is dropped: memory stays bounded)."""
        if self.lagged:
            return False
        if len(self.ready) + len(entries) > self.maxsize:
            self.lagged = True
            self.ready = []
        else:
            self.ready += entries
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        return not self.lagged

    async def next_batch(self, idle_s: float | None = None) -> list[Entry] | None:
        """Every entry ready, waiting for one if none is; ``[]`` after ``idle_s`` with nothing (time for
        a keep-alive), None once lagged."""
        if not self.ready and not self.lagged:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(idle_s, _wake, waiter) if idle_s is not None else None
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        if self.lagged:
            return None
        batch, self.ready = self.ready, []
        return batch


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass(eq=False)
class _Watch:
    key: str
    cursor: str
    reader: _Reader
    subscribers: set[Subscription] = field(default_factory=set)
    #: the cursor has been checked against the stream's tail (the reader does it before the first read)
    checked: bool = False


@dataclass(eq=False)
class _Reader:
    index: int
    shard: int
    client: Redis
    wake_key: str
    wake_cursor: str = "0-0"
    watches: dict[str, _Watch] = field(default_factory=dict)
    #: inside a blocking read: a new watch must wake it
    blocking: bool = False
    wake_sent: bool = False
    task: asyncio.Task[None] | None = None


class Hub:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        queue_size: int,
        keys_per_reader: int,
        max_readers: int = 4,
        block_ms: int = 1000,
        count: int = 512,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.queue_size = queue_size
        self.keys_per_reader = keys_per_reader
        self.max_readers = max_readers
        self.block_ms = block_ms
        self.count = count
        self.process = secrets.token_hex(6)
        self.lagged_total = 0
        self._readers: list[_Reader] = []
        self._watches: dict[str, _Watch] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    # ---- what the SSE handlers use ------------------------------------------------------

    @property
    def watched(self) -> int:
        return len(self._watches)

    @property
    def readers(self) -> int:
        return len(self._readers)

    @property
    def deepest_queue(self) -> int:
        """The most entries waiting for one subscriber now: never above ``queue_size``, however slow a client."""
        return max((len(s.ready) for w in self._watches.values() for s in w.subscribers), default=0)

    def subscribe(self, job_id: str, cursor: str, *, within: bool = False) -> Subscription:
        """Joins the live feed of ``job_id``; synchronous, so no entry can slip between cursor and list.
        ``within``: the caller knows ``cursor`` is not past the stream's newest entry (an id it read
        from the stream, or a cursor checked against it), so a new watch skips the tail check (a round
        trip before its first read)."""
        if self._closed:
            raise RuntimeError("the hub is stopped")
        key = self.keys.events(job_id)
        watch = self._watches.get(key)
        if watch is None:
            reader = self._pick_reader(self.keys.of_job(job_id).shard)
            watch = _Watch(key=key, cursor=cursor, reader=reader, checked=within)
            reader.watches[key] = watch
            self._watches[key] = watch
            self._wake(reader)
        elif not watch.checked and parse_stream_id(cursor) < parse_stream_id(watch.cursor):
            # not read yet: it starts at the lowest cursor of its subscribers, so the tail check
            # before the first read can only drop what a cursor past the tail would have skipped
            watch.cursor = cursor
        sub = Subscription(job_id, watch.cursor, self.queue_size)
        sub._watch = watch
        watch.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        watch, sub._watch = sub._watch, None
        if watch is not None:
            watch.subscribers.discard(sub)
            self._drop_if_unwatched(watch)

    # ---- life cycle ---------------------------------------------------------------------

    async def stop(self) -> None:
        self._closed = True
        await cancel_until_done({r.task for r in self._readers if r.task is not None} | self._background)
        for reader in self._readers:
            await reader.client.aclose()
        with contextlib.suppress(Exception):
            if self._readers:
                await asyncio.wait_for(asyncio.gather(*(self.redis.delete(r.wake_key) for r in self._readers)), 2)
        self._readers.clear()
        self._watches.clear()

    # ---- bookkeeping --------------------------------------------------------------------

    def _pick_reader(self, shard: int) -> _Reader:
        """A reader of the shard's streams: fill existing ones first; past max_readers (counted per
        shard), the least loaded one takes more than its share."""
        own = [r for r in self._readers if r.shard == shard]
        least = min(own, key=lambda r: len(r.watches), default=None)
        full = least is None or len(least.watches) >= self.keys_per_reader
        if least is not None and (not full or len(own) >= self.max_readers):
            return least
        index = len(self._readers)
        reader = _Reader(
            index=index,
            shard=shard,
            client=dedicated(self.redis, self.block_ms / 1000 + 5),
            wake_key=self.keys.shard(shard).hub_wake(self.process, index),
        )
        reader.task = asyncio.create_task(self._run(reader), name=f"hub-reader-{index}")
        self._readers.append(reader)
        return reader

    def _drop_if_unwatched(self, watch: _Watch) -> None:
        if not watch.subscribers and self._watches.get(watch.key) is watch:
            del self._watches[watch.key]
            watch.reader.watches.pop(watch.key, None)

    def _wake(self, reader: _Reader) -> None:
        # One wake per blocking read is enough: the next read picks up every watch added meanwhile.
        if reader.blocking and not reader.wake_sent:
            reader.wake_sent = True
            task = asyncio.create_task(self._send_wake(reader))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _send_wake(self, reader: _Reader) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xadd(reader.wake_key, {"w": "1"}, maxlen=16, approximate=True)
            pipe.expire(reader.wake_key, 3600)  # a crashed process leaves nothing behind for long
            await pipe.execute()
        except Exception as exc:  # the block timeout bounds the delay anyway
            log.debug("hub wake failed: %s", exc)

    def _dispatch(self, reader: _Reader, reply: Any, sent: dict[str, _Watch]) -> bool:
        """Hands each entry to every subscriber of its watch; True when any job entry arrived."""
        got = False
        for key, entries in reply or ():
            if key == reader.wake_key:
                if entries:
                    reader.wake_cursor = entries[-1][0]
                continue
            watch = reader.watches.get(key)
            # a watch dropped and re-created during the read starts from its own cursor: skip
            if watch is None or watch is not sent.get(key) or not entries:
                continue
            got = True
            batch = [entry(entry_id, fields.get("t", ""), fields.get("d", "")) for entry_id, fields in entries]
            for sub in tuple(watch.subscribers):
                if not sub.deliver(batch):
                    self.lagged_total += 1
                    watch.subscribers.discard(sub)
                    sub._watch = None
            watch.cursor = batch[-1].id
            self._drop_if_unwatched(watch)
        return got

    # ---- the readers --------------------------------------------------------------------

    async def _run(self, reader: _Reader) -> None:
        backoff = 0.05
        while not self._closed:
            try:
                await self._read_once(reader)
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed:
                    return
                log.warning("hub reader %d: %s; retrying in %.2fs", reader.index, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _read_once(self, reader: _Reader) -> None:
        sent = dict(reader.watches)
        await self._clamp_new_watches(reader, sent)
        if len(sent) <= self.keys_per_reader:
            streams = {key: w.cursor for key, w in sent.items()}
            streams[reader.wake_key] = reader.wake_cursor
            reply = await self._blocking_read(reader, streams, self.block_ms)
            self._dispatch(reader, reply, sent)
            return
        # More streams than one command should carry: poll them in chunks, then wait briefly.
        items = list(sent.items())
        pipe = reader.client.pipeline(transaction=False)
        for i in range(0, len(items), self.keys_per_reader):
            pipe.xread({key: w.cursor for key, w in items[i : i + self.keys_per_reader]}, count=self.count)
        got = False
        for reply in await pipe.execute():
            got = self._dispatch(reader, reply, sent) or got
        if not got:
            wake = {reader.wake_key: reader.wake_cursor}
            reply = await self._blocking_read(reader, wake, OVERFLOW_BLOCK_MS)
            self._dispatch(reader, reply, sent)

    async def _clamp_new_watches(self, reader: _Reader, watches: dict[str, _Watch]) -> None:
        """Moves a new watch's cursor back to the stream's newest entry when it starts past it: XREAD
        after a cursor in the future would skip every entry up to it, for every subscriber."""
        new = [w for w in watches.values() if not w.checked]
        if not new:
            return
        pipe = reader.client.pipeline(transaction=False)
        for watch in new:
            pipe.xrevrange(watch.key, count=1)
        for watch, rows in zip(new, await pipe.execute(), strict=True):
            tail = rows[0][0] if rows else "0-0"
            if parse_stream_id(watch.cursor) > parse_stream_id(tail):
                watch.cursor = tail
            watch.checked = True

    async def _blocking_read(self, reader: _Reader, streams: dict[str, str], block_ms: int) -> Any:
        reader.blocking, reader.wake_sent = True, False
        try:
            return await reader.client.xread(streams, count=self.count, block=block_ms)  # type: ignore[arg-type]
        finally:
            reader.blocking = False
