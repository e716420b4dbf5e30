"""A tenant's jobs, newest first, merged over the shards' list indexes with one stable cursor.

Each shard keeps the tenant's index (job id → created ms); a listing reads each newest first, a batch at
a time, and merges them: newest created first, ties in the ms by id, descending. The cursor is
``<created ms>-<id>`` of the last job of the previous page. Entries of jobs whose keys expired are
dropped as they are met.

Search filters the same walk, so it costs no index of its own:

    id_prefix            checked on the index entry itself: a job that does not match is never read
    metadata key=value   checked on the job's record: one HGETALL per entry looked at
    status, type         checked on the job's record

One request looks at no more than SCAN_LIMIT index entries: when a search has not filled its page by
then, it answers with what it found and a ``next_cursor`` that continues the walk where it stopped.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from redis.asyncio import Redis

from .job import Job
from .keys import Keys

LIST_CURSOR = re.compile(r"^(\d{1,20})-([0-9a-f]{32})$")
#: index entries one listing request reads at most (then it answers with what it found and a cursor)
SCAN_LIMIT = 5000
LIST_BATCH = 100


@dataclass
class Page:
    jobs: list[Job] = field(default_factory=list)
    next_cursor: str | None = None


class IndexReader:
    """One shard's list index of a tenant, read newest first a batch at a time (``list_jobs`` merges them)."""

    def __init__(self, redis: Redis, index: str, max_score: str | int, after: tuple[int, str] | None) -> None:
        self.redis, self.index, self.max_score, self.after = redis, index, max_score, after
        self.rows: deque[tuple[int, str]] = deque()
        self.offset = 0
        self.batch = 10
        self.done = False

    async def fill(self) -> None:
        """Reads until a row is buffered or the index is exhausted."""
        while not self.rows and not self.done:
            got = cast(list[tuple[str, float]], await self.redis.zrevrangebyscore(
                self.index, self.max_score, "-inf", start=self.offset, num=self.batch, withscores=True))
            self.offset += len(got)
            self.done = len(got) < self.batch
            self.batch = min(LIST_BATCH, self.batch * 2)
            for job_id, score in got:
                if self.after and int(score) == self.after[0] and job_id >= self.after[1]:
                    continue  # on the previous page
                self.rows.append((int(score), job_id))


def metadata_text(value: Any) -> str:
    """A metadata value as a search compares it: a string as is, anything else as its JSON text."""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _metadata_matches(raw: dict[str, str], wanted: Mapping[str, str]) -> bool:
    try:
        metadata = orjson.loads(raw.get("metadata") or "null")
    except orjson.JSONDecodeError:
        return False
    if not isinstance(metadata, dict):
        return False
    return all(key in metadata and metadata_text(metadata[key]) == value for key, value in wanted.items())


async def list_jobs(
    redis: Redis, keys: Keys, indexes: list[str], *, status: str | None, job_type: str | None,
    cursor: str | None, limit: int, unlist: Callable[[str, list[str]], Awaitable[int]],
    id_prefix: str | None = None, metadata: Mapping[str, str] | None = None,
) -> Page:
    """Up to ``limit`` jobs of the ``indexes`` (one per shard) after ``cursor``, newest first, that have
    ``status``, ``job_type``, an id starting with ``id_prefix`` and every ``metadata`` key with the value
    given (compared as ``metadata_text``), when given; ``unlist`` drops entries whose job expired."""
    max_score: str | int = "+inf"
    after: tuple[int, str] | None = None
    if cursor:
        m = LIST_CURSOR.match(cursor)
        if not m:
            raise ValueError("malformed cursor")
        after = (int(m.group(1)), m.group(2))
        max_score = after[0]
    readers = [IndexReader(redis, index, max_score, after) for index in indexes]
    page = Page()
    scanned = 0
    position: str | None = None  # the last index entry looked at, as a cursor
    while len(page.jobs) < limit:
        if scanned >= SCAN_LIMIT:
            # nothing more matched within what one request may read; older jobs remain
            page.next_cursor = position
            return page
        batch = await _next_entries(readers, min(LIST_BATCH, SCAN_LIMIT - scanned))
        if not batch:
            page.next_cursor = None
            return page
        tail = f"{batch[-1][1][0]}-{batch[-1][1][1]}"
        if id_prefix:
            # the id is in the index entry: a job that does not match is not read at all
            scanned += sum(1 for _, (_, job_id) in batch if not job_id.startswith(id_prefix))
            batch = [entry for entry in batch if entry[1][1].startswith(id_prefix)]
        pipe = redis.pipeline(transaction=False)
        for _, (_, job_id) in batch:
            pipe.hgetall(keys.job(job_id))
        hashes = await pipe.execute() if batch else []
        stale: dict[IndexReader, list[str]] = {}
        for (reader, (score, job_id)), raw in zip(batch, hashes, strict=True):
            scanned += 1
            position = f"{score}-{job_id}"
            if not raw:  # expired after its retention: drop the stale index entry
                stale.setdefault(reader, []).append(job_id)
                continue
            if (status and raw["status"] != status) or (job_type and raw["type"] != job_type):
                continue
            if metadata and not _metadata_matches(raw, metadata):
                continue
            page.jobs.append(Job.from_hash(raw))
            page.next_cursor = position
            if len(page.jobs) == limit:
                break
        else:
            position = tail  # every entry of the batch was looked at, matched or not
        for reader, gone in stale.items():
            # the entries dropped no longer take up ranks: the reader's next batch starts that much earlier
            reader.offset -= await unlist(reader.index, gone)
    return page


async def _next_entries(readers: list[IndexReader], n: int) -> list[tuple[IndexReader, tuple[int, str]]]:
    """Up to ``n`` index entries, newest first over every shard's index."""
    out: list[tuple[IndexReader, tuple[int, str]]] = []
    while len(out) < n:
        await asyncio.gather(*(r.fill() for r in readers if not r.rows and not r.done))
        live = [r for r in readers if r.rows]
        if not live:
            break
        newest = max(live, key=lambda r: r.rows[0])
        out.append((newest, newest.rows.popleft()))
    return out
