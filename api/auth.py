"""Who is asking: an API key (``Authorization: Bearer <key>``) names a tenant.

The events route also takes ``?token=``: the short-lived, read-only token of ``links.events``,
scoped to one job, because a browser ``EventSource`` cannot send headers.
"""

from __future__ import annotations

import time

from starlette.requests import Request

from shared.settings import Settings

from .errors import Unauthorized
from .events_tokens import check_events_token, events_token


def _bearer(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def tenant(request: Request, settings: Settings) -> str:
    """The tenant of the request's API key; 401 when it is missing or unknown."""
    key = _bearer(request)
    found = settings.api_keys.get(key) if key else None
    if found is None:
        raise Unauthorized()
    return found


def events_tenant(request: Request, settings: Settings, secret: bytes, job_id: str) -> str:
    """The tenant allowed to read ``job_id``'s events: by API key, else by a valid events token."""
    if request.headers.get("authorization"):
        return tenant(request, settings)
    token = request.query_params.get("token")
    found = check_events_token(secret, token, job_id, time.time()) if token else None
    if found is None:
        raise Unauthorized("missing, invalid or expired credentials for this job's events")
    return found


def new_events_token(settings: Settings, secret: bytes, owner: str, job_id: str) -> str:
    return events_token(secret, owner, job_id, int(time.time()) + settings.events_token_ttl_s)
