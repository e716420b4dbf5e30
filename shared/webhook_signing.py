"""Outgoing webhooks, Standard Webhooks style: what is signed and how; the default retry schedule.

A delivery carries the headers ``webhook-id`` (``<job id>.<seq>``: the same on every retry of one
event), ``webhook-timestamp`` (unix seconds) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of
"<id>.<timestamp>.<body>">``). The key is the base64 part of a ``whsec_`` secret, decoded; a secret
without that prefix is used as its raw UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

#: the default of BACKLANE_WEBHOOK_SCHEDULE_S: seconds after the first failure, then after each
#: further one: about 1 s, 5 s, 30 s, then minutes to hours; about a day in all, then it is given up
SCHEDULE_S: tuple[float, ...] = (1, 5, 30, 120, 600, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 8 * 3600)


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: the base64 part of a ``whsec_`` secret, decoded (ValueError when it
    is not base64 or empty); any other secret as its raw bytes."""
    if not secret.startswith("whsec_"):
        return secret.encode()
    try:
        key = base64.b64decode(secret[len("whsec_"):], validate=True)
    except binascii.Error:
        raise ValueError("a whsec_ secret must be whsec_ followed by base64 "
                         "(e.g. whsec_$(openssl rand -base64 32))") from None
    if not key:
        raise ValueError("a whsec_ secret must not be empty after the prefix")
    return key


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    message = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": "Backlane-Webhooks/1",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, webhook_id, timestamp, body),
    }


def verify(secret: str, body: bytes, received: dict[str, str], *, now_s: float, tolerance_s: int = 300) -> bool:
    """What a receiver does (documented in the README): check the timestamp, then any v1 signature."""
    try:
        timestamp = int(received["webhook-timestamp"])
        webhook_id = received["webhook-id"]
        offered = received["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs(now_s - timestamp) > tolerance_s:
        return False
    expected = signature(secret, webhook_id, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)
