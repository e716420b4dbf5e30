"""Job ids and the short-lived, read-only events tokens carried by ``links.events``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def new_job_id() -> str:
    """128 random bits, hex: unguessable and safe inside a Redis hash tag and a URL."""
    return secrets.token_hex(16)


def is_job_id(value: str) -> bool:
    return bool(JOB_ID.match(value))


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
