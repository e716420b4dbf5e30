"""RideThrough's rules, and the scripts that make a resend harmless (checkpoint, beat) and measure a
silence (contact). End-to-end outages: tests/integration/test_outages.py."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError

from compute.errors import classify
from compute.leases import Attempts
from compute.supervisor.contact import Contact
from shared.jobs import JobStore, NewJob
from shared.ride_through import RedisOutOfReach, RideThrough, out_of_reach
from shared.settings import Settings

pytestmark = pytest.mark.anyio


class Flaky:
    """Fails ``failures`` times as Redis out of reach would, then answers."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures, self.calls = failures, 0
        self.error = error or RedisConnectionError("Error 111 connecting")

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "answer"


async def test_a_call_is_tried_again_until_redis_answers() -> None:
    ride, flaky = RideThrough(30), Flaky(3)
    assert await ride.call(flaky, "test") == "answer"
    assert flaky.calls == 4 and ride.outages == 1


async def test_an_error_reply_is_raised_at_once() -> None:
    ride, flaky = RideThrough(30), Flaky(1, ResponseError("STALE lease token 3 no longer holds this job"))
    with pytest.raises(ResponseError, match="STALE"):
        await ride.call(flaky, "test")
    assert flaky.calls == 1


async def test_past_the_outage_allowed_the_call_gives_up_and_counts_as_transient() -> None:
    ride, flaky = RideThrough(0.3), Flaky(10**6)
    with pytest.raises(RedisOutOfReach, match=r"BACKLANE_REDIS_OUTAGE_S=0\.3") as raised:
        await ride.call(flaky, "test")
    assert 3 <= flaky.calls < 100
    assert classify(raised.value).error_class == "transient"


async def test_a_try_that_hangs_is_bounded_by_the_outage_allowed() -> None:
    async def hangs() -> None:
        await asyncio.sleep(60)  # a stopped Redis: the connection is accepted and never answered

    with pytest.raises(RedisOutOfReach):
        await asyncio.wait_for(RideThrough(0.2).call(hangs, "test"), 5)


async def test_calls_waiting_out_one_outage_give_up_together() -> None:
    ride = RideThrough(0.6)
    first = asyncio.create_task(ride.call(Flaky(10**6), "first"))
    await asyncio.sleep(0.4)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RedisOutOfReach):
        await ride.call(Flaky(10**6), "second")  # began late: the outage had lasted 0.4 s already
    assert loop.time() - started < 0.5
    with pytest.raises(RedisOutOfReach):
        await first


async def test_zero_tries_once_and_unbounded_waits_on() -> None:
    flaky = Flaky(1)
    with pytest.raises(RedisOutOfReach):
        await RideThrough(0).call(flaky, "test")
    assert flaky.calls == 1
    assert await RideThrough(0).call(Flaky(5), "test", patience_s=math.inf) == "answer"


@pytest.mark.parametrize("error, away", [
    (RedisConnectionError("Error 111"), True),
    (ReadOnlyError("You can't write against a read only replica."), True),
    (ResponseError("MASTERDOWN Link with MASTER is down"), True),
    (ResponseError("Error running script (call to f_1): @user_script:3: READONLY You can't write"), True),
    (ResponseError("GAP batch starts at 5 but the attempt has written 3"), False),
    (ValueError("bug"), False),
])
def test_what_counts_as_out_of_reach(error: Exception, away: bool) -> None:
    assert out_of_reach(error) is away


async def started_job(store: JobStore, worker: str) -> tuple[Attempts, str, int]:
    job_id = (await store.create(NewJob(tenant="acme", type="demo.story", input={}, max_attempts=3))).job_id
    attempts = Attempts(store, worker)
    taken, _ = await attempts.take(["demo.story"], 1, 10_000)
    assert taken and taken[0].job_id == job_id
    return attempts, job_id, taken[0].token


async def test_a_checkpoint_sent_again_or_overtaken_changes_nothing(store: JobStore) -> None:
    attempts, job_id, token = await started_job(store, "w")
    await attempts.save_checkpoint(job_id, token, {"n": 2}, 2)
    await attempts.save_checkpoint(job_id, token, {"n": 1}, 1)  # sent before, arriving after
    await attempts.save_checkpoint(job_id, token, {"n": 2, "resent": True}, 2)
    assert await store.checkpoint(job_id) == {"n": 2}
    await attempts.save_checkpoint(job_id, token, {"n": 3}, 3)
    assert await store.checkpoint(job_id) == {"n": 3}


async def test_a_late_beat_never_moves_a_worker_back(store: JobStore) -> None:
    shard = store.keys.shard(0)
    late: list[Any] = [([shard.workers, shard.notices("w")], ["w", 5_000])]
    fresh: list[Any] = [([shard.workers, shard.notices("w")], ["w", 9_000])]
    await store.scripts.run_many("beat", fresh)
    await store.scripts.run_many("beat", late)
    assert await store.redis.zscore(shard.workers, "w") == 9_000


async def test_a_silence_longer_than_the_gap_starts_a_grace_of_one_lease(store: JobStore, settings: Settings) -> None:
    contact = Contact(store, settings)
    await store.agree_on_shards()  # as a supervisor starts (a Cluster client maps its nodes first)
    assert await contact.touch() == {}  # the first touch: nothing to measure yet
    assert await contact.touch() == {}  # a touch right after: no silence
    for shard in store.keys.all_shards:  # as if the last touch was 5 s ago (Redis away since)
        seen = int(await store.redis.hget(shard.contact, "seen") or 0)
        await store.redis.hset(shard.contact, "seen", seen - 5_000)
    graced = await contact.touch()
    assert set(graced) == {s.shard for s in store.keys.all_shards}
    assert all(settings.lease_ms - 500 < left <= settings.lease_ms for left in graced.values())
    again = await contact.touch()  # the grace holds for every supervisor until it ends, not only for the first
    assert set(again) == set(graced) and all(again[s] <= graced[s] for s in graced)
