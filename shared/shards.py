"""Shards: a fixed number of hash tags that spread Backlane's keys over the masters of a Redis Cluster.

Every job lives in one shard, and so do the indexes its scripts touch (queues, leases, deadlines,
outbox, counts, the tenant's list): every key of a shard carries the shard's hash tag, so each script
runs atomically in one cluster slot. The job id says its shard (``shard_of``), so any process finds
a job's keys from its id alone.

Each shard's tag is chosen to hash to a slot near the middle of its own 1/n of the 16,384 slots. A
cluster made by ``redis-cli --cluster create`` splits the slots into equal ranges, so n shards land on
its masters evenly (12 shards on 3 masters: 4 each).

One Redis is one shard; a Cluster gets ``CLUSTER_SHARDS`` unless ``BACKLANE_SHARDS`` says otherwise.
The count is fixed for the life of the data: key names depend on it (``agree_on_shards``).
"""

from __future__ import annotations

import secrets
import zlib
from functools import cache

from redis.crc import key_slot

SLOTS = 16384
#: shards on a Cluster by default: divisible by 2, 3, 4 and 6 masters, and room to grow onto more
CLUSTER_SHARDS = 12
MAX_SHARDS = 256


@cache
def shard_tags(n: int) -> tuple[str, ...]:
    """The hash tag of each of ``n`` shards, e.g. ``{s3.17}``: its slot lies in the middle half of
    the shard's own slot range."""
    if not 1 <= n <= MAX_SHARDS:
        raise ValueError(f"the number of shards must be between 1 and {MAX_SHARDS}, got {n}")
    width = SLOTS / n
    tags = []
    for shard in range(n):
        low, high = shard * width + width / 4, shard * width + 3 * width / 4
        k = 0
        while not low <= key_slot(f"s{shard}.{k}".encode()) < high:
            k += 1
        tags.append(f"{{s{shard}.{k}}}")
    return tuple(tags)


def shard_of(job_id: str, n: int) -> int:
    """The shard a job id was made in (its first 16 bits, modulo the number of shards)."""
    return int(job_id[:4], 16) % n


def new_job_id(shard: int, n: int) -> str:
    """128 bits, hex (unguessable: 112 of them random), whose first 16 bits name ``shard``."""
    head = shard + n * secrets.randbelow(0x10000 // n)
    return f"{head:04x}{secrets.token_hex(14)}"


def shard_for(n: int, *parts: str) -> int:
    """A stable shard for a name (an idempotency key, a tenant): every process picks the same one."""
    return zlib.crc32("\0".join(parts).encode()) % n
