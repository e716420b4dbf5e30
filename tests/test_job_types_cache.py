"""The API's cache of job types (``api/job_types.py``) against a real redis-server."""

from __future__ import annotations

import dataclasses

import pytest

from api.job_types import JobTypes
from shared.jobs import JobStore
from shared.jobtypes import JobTypePolicy

pytestmark = pytest.mark.anyio


async def test_a_type_registered_after_the_first_read_is_known_at_once(store: JobStore) -> None:
    types = JobTypes(store, refresh_s=3600)
    assert await types.get("reports.weekly") is None and "demo.story" in await types.all()
    await store.register_types([JobTypePolicy(name="reports.weekly", max_attempts=5)])
    found = await types.get("reports.weekly")
    assert found is not None and found.max_attempts == 5


async def test_a_changed_policy_is_read_again_after_the_refresh_interval(store: JobStore) -> None:
    policy = JobTypePolicy(name="notes.tag", max_attempts=2)
    await store.register_types([policy])
    cached, fresh = JobTypes(store, refresh_s=3600), JobTypes(store, refresh_s=0)
    assert (await cached.get("notes.tag") or policy).max_attempts == 2
    assert (await fresh.get("notes.tag") or policy).max_attempts == 2
    await store.register_types([dataclasses.replace(policy, max_attempts=7)])
    assert (await cached.get("notes.tag") or policy).max_attempts == 2  # within its interval: no read
    assert (await fresh.get("notes.tag") or policy).max_attempts == 7
