"""The limiter's scripts against a real Redis, with the clock in the test's hands."""

from __future__ import annotations

import pytest

import shared.limiter
from shared.jobs import JobStore
from shared.resources import ResourceLimit

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1_000_000
        monkeypatch.setattr(shared.limiter, "now_ms", lambda: self.now)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


async def test_requests_are_admitted_up_to_the_limit_per_sliding_window(store: JobStore, clock: Clock) -> None:
    limit = ResourceLimit("api", requests=3, window_s=1)
    for i in range(3):
        clock.now += 100
        assert (await store.limiter.admit(limit, f"c{i}")).admitted
    refused = await store.limiter.admit(limit, "c3", job_id="job-1")
    # the first call (at +100) leaves the window at +1100; now is +300
    assert (refused.admitted, refused.reason, refused.wait_ms) == (False, "requests", 800)
    clock.now += 799
    assert not (await store.limiter.admit(limit, "c3")).admitted
    clock.now += 1
    assert (await store.limiter.admit(limit, "c3", job_id="job-1", waited=True)).admitted
    views = await store.limiter.views({"api": limit})
    assert views[0]["in_use"]["requests"] == 3 and views[0]["waiting"] == 0
    assert views[0]["totals"]["admitted"] == 4 and views[0]["totals"]["waits"]["requests"] == 2


async def test_tokens_are_estimated_then_settled_to_the_real_count(store: JobStore, clock: Clock) -> None:
    limit = ResourceLimit("llm", tokens=1000, window_s=10)
    first = await store.limiter.admit(limit, "a", tokens=600)
    assert first.admitted
    refused = await store.limiter.admit(limit, "b", tokens=600)
    assert (refused.admitted, refused.reason, refused.wait_ms) == (False, "tokens", 10_000)
    await store.limiter.settle(limit, first.member, tokens=200)  # it used less than estimated
    assert (await store.limiter.admit(limit, "b", tokens=600)).admitted
    views = await store.limiter.views({"llm": limit})
    assert views[0]["in_use"]["tokens"] == 800 and views[0]["totals"]["tokens"] == 800
    # a call estimated above the whole budget goes once the window is empty
    assert not (await store.limiter.admit(limit, "c", tokens=5000)).admitted
    clock.now += 10_000
    assert (await store.limiter.admit(limit, "c", tokens=5000)).admitted


async def test_a_retry_after_pauses_every_caller_until_then(store: JobStore, clock: Clock) -> None:
    limit = ResourceLimit("api", requests=100)
    call = await store.limiter.admit(limit, "a")
    settled = await store.limiter.settle(limit, call.member, outcome="pause", pause_until_ms=clock.now + 3000)
    assert settled.waits_until(clock.now) == (clock.now + 3000, "paused")
    refused = await store.limiter.admit(limit, "b")
    assert (refused.reason, refused.wait_ms) == ("paused", 3000)
    # a shorter Retry-After does not shorten the pause
    await store.limiter.settle(limit, "-:0", outcome="pause", pause_until_ms=clock.now + 1000)
    clock.now += 2999
    assert (await store.limiter.admit(limit, "b")).reason == "paused"
    clock.now += 1
    assert (await store.limiter.admit(limit, "b")).admitted


async def test_failures_in_a_row_open_the_breaker_then_one_probe_at_a_time(store: JobStore, clock: Clock) -> None:
    limit = ResourceLimit("flaky", breaker_failures=3, breaker_open_s=5)
    for i in range(3):
        call = await store.limiter.admit(limit, f"f{i}")
        assert call.admitted and call.failures == i
        settled = await store.limiter.settle(limit, call.member, outcome="fail")
    assert settled.breaker == "open" and settled.waits_until(clock.now) == (clock.now + 5000, "breaker")
    assert (await store.limiter.admit(limit, "x")).reason == "breaker"
    clock.now += 5000
    probe = await store.limiter.admit(limit, "probe-1")
    assert probe.admitted and probe.failures == -1
    other = await store.limiter.admit(limit, "other")
    assert (other.admitted, other.reason) == (False, "breaker") and other.wait_ms <= 1000
    # the probe fails: open again
    settled = await store.limiter.settle(limit, probe.member, outcome="fail")
    assert settled.breaker == "open"
    clock.now += 5000
    probe = await store.limiter.admit(limit, "probe-2")
    assert probe.failures == -1
    settled = await store.limiter.settle(limit, probe.member, outcome="ok")
    assert settled.breaker == "closed"
    again = await store.limiter.admit(limit, "after")
    assert again.admitted and again.failures == 0
    view = (await store.limiter.views({"flaky": limit}))[0]
    assert view["breaker"] == {"state": "closed", "failures": 0, "open_until": None}
    assert view["totals"]["breaker_opens"] == 2


async def test_a_success_resets_the_failures(store: JobStore, clock: Clock) -> None:
    limit = ResourceLimit("flaky", breaker_failures=2)
    call = await store.limiter.admit(limit, "a")
    await store.limiter.settle(limit, call.member, outcome="fail")
    call = await store.limiter.admit(limit, "b")
    await store.limiter.settle(limit, call.member, outcome="ok")
    call = await store.limiter.admit(limit, "c")
    assert call.failures == 0
    assert (await store.limiter.settle(limit, call.member, outcome="fail")).breaker == "closed"
