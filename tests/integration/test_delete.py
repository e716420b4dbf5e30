"""DELETE /v1/jobs/{id} purges a finished job whole; a type's retention_s keeps its finished jobs as long
as it says."""

from __future__ import annotations

import pytest
from http_server import AUTH_GLOBEX, SimWorker, asgi_client
from redis.asyncio import Redis

from api.app import create_app
from compute.registry import job_type
from shared.jobs import JobStore
from shared.jobtypes import JobTypePolicy
from shared.settings import Settings

pytestmark = pytest.mark.anyio
STORY = {"type": "demo.story", "input": {"topic": "otters"}}


async def _job_keys(redis: Redis, store: JobStore, job_id: str) -> list[str]:
    return [key for key in (store.keys.job(job_id), store.keys.events(job_id), store.keys.checkpoint(job_id),
                            store.keys.deliveries(job_id)) if await redis.exists(key)]


async def _indexed(redis: Redis, store: JobStore, job_id: str, tenant: str) -> list[str]:
    shard = store.keys.of_job(job_id)
    found = []
    for index in (shard.tenant_jobs(tenant), shard.leases, shard.deadlines, shard.webhook_outbox,
                  shard.queue("demo.story")):
        if await redis.zscore(index, job_id) is not None:
            found.append(index)
    found += [m for m in await redis.zrange(shard.retiring, 0, -1) if m.startswith(job_id)]
    return found


async def test_a_finished_job_is_purged_whole(settings: Settings, redis: Redis, store: JobStore) -> None:
    async with asgi_client(create_app(settings, redis=redis)) as client:
        job_id = (await client.post("/v1/jobs", json={**STORY, "deadline_s": 600})).json()["id"]
        sim = SimWorker(store)
        token = await sim.start(job_id)
        await sim.output(job_id, token, "Hel", "lo")
        await store.redis.set(store.keys.checkpoint(job_id), '{"at": 1}')
        await store.log_delivery(job_id, {"status": 200}, ok=True, keep=5)
        await sim.finish(job_id, token, result={"text": "Hello"})
        assert (await client.get("/v1/jobs/counts")).json()["counts"]["completed"] == 1
        assert await _job_keys(redis, store, job_id)

        response = await client.delete(f"/v1/jobs/{job_id}")
        assert response.status_code == 204 and response.content == b""

        assert await _job_keys(redis, store, job_id) == []
        assert await _indexed(redis, store, job_id, "acme") == []
        assert (await client.get(f"/v1/jobs/{job_id}")).status_code == 404
        assert (await client.get(f"/v1/jobs/{job_id}/events")).status_code == 404
        assert (await client.get("/v1/jobs")).json()["jobs"] == []
        assert (await client.get("/v1/jobs/counts")).json()["counts"]["completed"] == 0
        assert (await client.delete(f"/v1/jobs/{job_id}")).status_code == 404


async def test_an_unfinished_job_is_a_409_and_stays(settings: Settings, redis: Redis, store: JobStore) -> None:
    async with asgi_client(create_app(settings, redis=redis)) as client:
        job_id = (await client.post("/v1/jobs", json=STORY)).json()["id"]
        response = await client.delete(f"/v1/jobs/{job_id}")
        assert response.status_code == 409
        assert "cancel it first" in response.json()["error"]["message"]
        token = await SimWorker(store).start(job_id)
        assert (await client.delete(f"/v1/jobs/{job_id}")).status_code == 409
        assert (await client.get(f"/v1/jobs/{job_id}")).json()["status"] == "running"
        await client.post(f"/v1/jobs/{job_id}/cancel")
        await SimWorker(store).finish(job_id, token, status="canceled")
        assert (await client.delete(f"/v1/jobs/{job_id}")).status_code == 204


async def test_another_tenant_s_job_or_an_unknown_id_is_a_404(settings: Settings, redis: Redis) -> None:
    async with asgi_client(create_app(settings, redis=redis)) as client:
        job_id = (await client.post("/v1/jobs", json=STORY)).json()["id"]
        await client.post(f"/v1/jobs/{job_id}/cancel")
        assert (await client.delete(f"/v1/jobs/{job_id}", headers=AUTH_GLOBEX)).status_code == 404
        assert (await client.delete("/v1/jobs/" + "0" * 32)).status_code == 404
        assert (await client.delete("/v1/jobs/nope")).status_code == 404
        assert (await client.get(f"/v1/jobs/{job_id}")).status_code == 200


@job_type("test.brief", retention_s=120)
async def brief(ctx: object) -> str:
    return "done"


async def test_a_type_s_retention_overrides_the_setting(settings: Settings, redis: Redis, store: JobStore) -> None:
    await store.register_types([brief.policy])
    async with asgi_client(create_app(settings, redis=redis)) as client:
        short = (await client.post("/v1/jobs", json={"type": "test.brief", "input": {}})).json()["id"]
        usual = (await client.post("/v1/jobs", json=STORY)).json()["id"]
        for job_id, job_type_name in ((short, "test.brief"), (usual, "demo.story")):
            sim = SimWorker(store)
            await sim.finish(job_id, await sim.start(job_id, job_type_name), job_type=job_type_name)
        for job_id, retention_s in ((short, 120), (usual, settings.retention_s)):
            for key in (store.keys.job(job_id), store.keys.events(job_id)):
                ttl = await redis.pttl(key)
                assert retention_s * 1000 - 5000 < ttl <= retention_s * 1000, (key, ttl)
        types = {t["name"]: t for t in (await client.get("/v1/job-types")).json()}
        assert types["test.brief"]["retention_s"] == 120 and types["demo.story"]["retention_s"] is None


@pytest.mark.parametrize("bad", [0, 59, 1.5, "600", True])
def test_a_bad_retention_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="retention_s"):
        JobTypePolicy(name="x", retention_s=bad)  # type: ignore[arg-type]


