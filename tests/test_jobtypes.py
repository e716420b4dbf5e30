"""Job type policies: review by authority, the sampled review draw, the back-off it implies."""

from __future__ import annotations

import random

import pytest

from compute.outcomes import backoff_s
from shared.jobtypes import JobTypePolicy


@pytest.mark.parametrize("authority, policy", [
    ("read_only", "none"), ("draft", "required"), ("low_risk_write", "sampled"), ("external_side_effect", "required"),
])
def test_each_authority_has_its_default_review_policy(authority: str, policy: str) -> None:
    assert JobTypePolicy(name="t", authority=authority).review_policy == policy  # type: ignore[arg-type]


def test_a_sample_rate_of_0_or_1_is_deterministic() -> None:
    never = JobTypePolicy(name="t", authority="low_risk_write", review_sample_rate=0.0)
    always = JobTypePolicy(name="t", authority="low_risk_write", review_sample_rate=1.0)
    rng = random.Random(7)
    assert not any(never.draw_review(rng) for _ in range(1000))
    assert all(always.draw_review(rng) for _ in range(1000))


def test_the_default_sample_rate_reviews_about_one_in_ten() -> None:
    sampled = JobTypePolicy(name="t", authority="low_risk_write")
    rng = random.Random(42)
    share = sum(sampled.draw_review(rng) for _ in range(10_000)) / 10_000
    assert 0.08 < share < 0.12


def test_backoff_doubles_within_its_jitter_and_stops_at_the_cap() -> None:
    policy = JobTypePolicy(name="t", retry_base_s=1.0, retry_cap_s=5.0)
    rng = random.Random(3)
    for attempt, base in ((1, 1.0), (2, 2.0), (3, 4.0)):
        delays = [backoff_s(policy, attempt, None, rng) for _ in range(200)]
        assert all(base * 0.75 <= d <= min(5.0, base * 1.25) for d in delays), (attempt, min(delays), max(delays))
    assert all(backoff_s(policy, n, None, rng) <= 5.0 for n in range(4, 40) for _ in range(20))
    assert max(backoff_s(policy, 30, None, rng) for _ in range(200)) > 4.0  # capped, not collapsed


def test_a_retry_after_wins_over_the_backoff() -> None:
    policy = JobTypePolicy(name="t", retry_base_s=30.0)
    assert backoff_s(policy, 1, 0.25) == 0.25
