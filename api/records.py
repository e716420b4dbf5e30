"""The public job record as the API answers it: ``shared.records`` plus an absolute events link."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request

from shared.ids import is_job_id
from shared.records import to_record
from shared.schemas import JobRecord

from .auth import new_events_token
from .backend import Backend
from .errors import NotFound


def job_id_param(request: Request) -> str:
    """The path's job id; anything that cannot be a job id is simply not found."""
    job_id: str = request.path_params["job_id"]
    if not is_job_id(job_id):
        raise NotFound("no such job")
    return job_id


async def load_owned(request: Request, b: Backend, owner: str) -> dict[str, str]:
    """The job's hash if ``owner`` may see it; another tenant's job is as unknown as a missing one."""
    raw = await b.store.get(owner, job_id_param(request))
    if raw is None:
        raise NotFound("no such job")
    return raw


async def job_record(request: Request, b: Backend, raw: dict[str, str]) -> JobRecord:
    token = new_events_token(b.settings, await b.secret(), raw["tenant"], raw["id"])
    url = f"{request.url_for('job_events', job_id=raw['id'])}?{urlencode({'token': token})}"
    return to_record(raw, url)
