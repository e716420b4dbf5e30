"""The SDK client both OpenAI job types use, configured from Backlane's settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

import openai

from compute.errors import InputError

if TYPE_CHECKING:
    from shared.settings import Settings


def make_client(settings: Settings) -> openai.AsyncOpenAI:
    """No SDK retries: a retried POST would start a second background response or batch
    (reference §2.5); idempotent reads opt back in with ``with_options(max_retries=...)``."""
    try:
        return openai.AsyncOpenAI(
            api_key=settings.openai_api_key, base_url=settings.openai_base_url, max_retries=0,
        )
    except openai.OpenAIError as exc:  # no API key anywhere
        raise InputError(f"OpenAI client: {exc}") from None
