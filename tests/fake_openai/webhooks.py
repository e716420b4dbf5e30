"""Webhooks as OpenAI sends them: Standard Webhooks signing (reference §3).

``sig = base64(HMAC_SHA256(key, f"{webhook-id}.{webhook-timestamp}.{raw_body}"))`` with
``key = base64decode(secret[len("whsec_"):])``; header ``webhook-signature: v1,<sig>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

import httpx


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(_key(secret), f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


def build(
    secret: str, event_type: str, data_id: str, *,
    timestamp: int | None = None, webhook_id: str | None = None, event_id: str | None = None,
) -> Delivery:
    """One signed delivery of a thin event ``{"object":"event","id","type","created_at","data":{"id"}}``."""
    ts = int(time.time()) if timestamp is None else timestamp
    wid = webhook_id or f"wh_{secrets.token_hex(16)}"
    body = json.dumps({
        "object": "event", "id": event_id or f"evt_{secrets.token_hex(16)}", "type": event_type,
        "created_at": ts, "data": {"id": data_id},
    }, separators=(",", ":")).encode()
    headers = {
        "user-agent": "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)",
        "content-type": "application/json",
        "webhook-id": wid,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, wid, ts, body),
    }
    return Delivery(headers, body)


def deliver(url: str, delivery: Delivery, *, timeout: float = 5.0) -> httpx.Response:
    return httpx.post(url, content=delivery.body, headers=delivery.headers, timeout=timeout)


async def deliver_async(url: str, delivery: Delivery) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5.0) as client:
        return await client.post(url, content=delivery.body, headers=delivery.headers)
