"""`backlane dev`'s choice of Redis: configured, a private redis-server, or in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from backlane import embedded
from shared.connection import connect
from shared.jobs import JobStore, NewJob
from shared.settings import Settings

pytestmark = pytest.mark.anyio


def test_a_configured_url_wins(tmp_path: Path) -> None:
    chosen = embedded.choose_redis("redis://example:6379/0", tmp_path)
    assert chosen.url == "redis://example:6379/0" and "BACKLANE_REDIS_URL" in chosen.description


def test_a_private_redis_server_keeps_its_data_with_aof(tmp_path: Path) -> None:
    chosen = embedded.choose_redis(None, tmp_path)
    try:
        assert "private redis-server" in chosen.description and "AOF" in chosen.description
        assert (tmp_path / "redis").is_dir()
    finally:
        chosen.close()


async def test_without_redis_server_an_in_process_redis_runs_the_scripts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)
    chosen = embedded.choose_redis(None, tmp_path)
    try:
        assert "in-process" in chosen.description and "NOTHING is kept" in chosen.description
        redis = connect(chosen.url, 4)
        store = JobStore(redis, Settings(redis_url=chosen.url))
        job_id = (await store.create(NewJob(tenant="t", type="demo.story", input={}, max_attempts=1))).job_id
        assert (await store.load(job_id) or {})["status"] == "queued"
        assert (await store.cancel(job_id, "demo.story")).outcome == "canceled"
        await redis.aclose()
    finally:
        chosen.close()
