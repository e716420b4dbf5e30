"""The SDK client both OpenAI job types use, configured from Backlane's settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import openai

from compute.errors import InternalError

if TYPE_CHECKING:
    from shared.settings import Settings


#: what a worker without OpenAI credentials says at start-up, and what its OpenAI jobs fail with
NO_CREDENTIALS = ("the worker has no OpenAI API key: set BACKLANE_OPENAI_API_KEY (or OPENAI_API_KEY) in its "
                  "environment; the openai.* job types fail until it is set")


def configuration_problem(settings: Settings) -> str | None:
    """Why the OpenAI job types cannot run on this worker, or None: checked at start-up, so an
    operator hears of it before a job fails."""
    try:
        openai.AsyncOpenAI(api_key=settings.openai_api_key, base_url=settings.openai_base_url, max_retries=0)
    except openai.OpenAIError:
        return NO_CREDENTIALS
    return None


def make_client(settings: Settings, http_client: Any = None) -> openai.AsyncOpenAI:
    """No SDK retries: a retried POST would start a second background response or batch
    (reference §2.5); idempotent reads opt back in with ``with_options(max_retries=...)``. Missing
    credentials are the deployment's problem, not the job's input: ``internal``, naming the setting."""
    try:
        return openai.AsyncOpenAI(
            api_key=settings.openai_api_key, base_url=settings.openai_base_url, max_retries=0,
            http_client=http_client,
        )
    except openai.OpenAIError:  # no API key anywhere
        raise InternalError(NO_CREDENTIALS) from None
