"""The short-lived, read-only events tokens carried by ``links.events``.

A browser ``EventSource`` cannot send headers, so the job record's events link carries a token in
its URL: it lets its bearer read one job's events until it expires, and nothing else. Every API
process signs with one secret: ``BACKLANE_TOKEN_SECRET``, else one kept in Redis.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from redis.asyncio import Redis

from shared.keys import Keys


async def shared_secret(redis: Redis, keys: Keys, configured: str | None) -> bytes:
    """The secret that signs events tokens: configured, or one kept in Redis for every API process."""
    if configured:
        return configured.encode()
    await redis.set(keys.secret, secrets.token_hex(32), nx=True)
    value = await redis.get(keys.secret)
    assert value is not None
    return str(value).encode()


def _sign(secret: bytes, message: str) -> str:
    digest = hmac.new(secret, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


def events_token(secret: bytes, tenant: str, job_id: str, expires_s: int) -> str:
    """A token that lets its bearer read one job's events until ``expires_s`` (unix seconds)."""
    body = f"{expires_s}.{tenant}"
    return f"{body}.{_sign(secret, f'{job_id}.{body}')}"


def check_events_token(secret: bytes, token: str, job_id: str, now_s: float) -> str | None:
    """The tenant the token was issued to, or None when it is forged, for another job, or expired."""
    expires, _, rest = token.partition(".")
    tenant, _, signature = rest.rpartition(".")
    if not expires.isdigit() or not tenant or int(expires) < now_s:
        return None
    expected = _sign(secret, f"{job_id}.{expires}.{tenant}")
    return tenant if hmac.compare_digest(expected, signature) else None
