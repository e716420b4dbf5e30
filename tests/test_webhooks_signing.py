"""Our signatures checked by an independent Standard Webhooks implementation (the openai SDK's)."""

from __future__ import annotations

import base64
import time

import openai
import pytest

from compute.supervisor.webhook_delivery import retry_delay_s
from shared import webhook_signing as webhooks

SECRET = "whsec_" + base64.b64encode(b"a-very-secret-key-of-32-bytes!!!").decode()


def test_signature_verifies_with_the_openai_sdk() -> None:
    client = openai.OpenAI(api_key="unused", webhook_secret=SECRET)
    body = b'{"type":"job.completed","seq":7}'
    now = int(time.time())
    client.webhooks.verify_signature(body, webhooks.headers(SECRET, "job1.7", now, body))
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.verify_signature(body + b" ", webhooks.headers(SECRET, "job1.7", now, body))
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.verify_signature(body, webhooks.headers(SECRET, "job1.7", now - 3600, body))


def test_our_verify_accepts_only_the_right_signature_and_fresh_timestamps() -> None:
    body = b"{}"
    h = webhooks.headers(SECRET, "a.1", 1000, body)
    assert webhooks.verify(SECRET, body, h, now_s=1000)
    assert not webhooks.verify(SECRET, b"{ }", h, now_s=1000)
    assert not webhooks.verify(SECRET, body, h, now_s=1000 + 301)
    assert not webhooks.verify("whsec_" + base64.b64encode(b"other").decode(), body, h, now_s=1000)
    assert not webhooks.verify(SECRET, body, {"webhook-id": "a.1"}, now_s=1000)


def test_retry_schedule_grows_from_about_a_second_to_hours_then_gives_up() -> None:
    delays = [retry_delay_s(n) for n in range(1, len(webhooks.SCHEDULE_S) + 1)]
    assert all(d is not None for d in delays)
    assert 0.9 <= delays[0] <= 1.1 and 4.5 <= delays[1] <= 5.5 and 27 <= delays[2] <= 33  # type: ignore[operator]
    assert list(webhooks.SCHEDULE_S) == sorted(webhooks.SCHEDULE_S)
    assert sum(webhooks.SCHEDULE_S) > 20 * 3600
    assert retry_delay_s(len(webhooks.SCHEDULE_S) + 1) is None
