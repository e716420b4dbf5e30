"""How a handler says why it failed. The class decides what happens next:

    JobError                 base: carries message and an optional retry_after (seconds)
    ├── InputError           "input"      bad input: fail, no retry
    ├── TransientError       "transient"  network, provider 5xx, rate limit, timeout: retry with back-off
    ├── PolicyError          "policy"     refused by a rule or a provider's filter: fail, no retry
    ├── DeadlineError        "deadline"   ran past its time: fail (or retry if the type says so)
    └── InternalError        "internal"   a bug: fail, no automatic retry

Any other exception is classified by ``classify``:

    HTTP error with a status        429, 408, 5xx → transient (with their Retry-After); other 4xx → input
    httpx.TransportError            transient (connect, read, write, pool, remote protocol, proxy),
                                    except UnsupportedProtocol → input
    TimeoutError, ConnectionError   transient (also BrokenPipeError, ConnectionResetError, …, DNS, and
                                    Redis out of reach for longer than BACKLANE_REDIS_OUTAGE_S)
    a name with Timeout / Connect…Error  transient (other clients' errors, e.g. openai.APIConnectionError)
    anything else                   internal
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.schemas import ErrorClass


class JobError(Exception):
    error_class: ErrorClass = "internal"
    retryable: bool = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InputError(JobError):
    error_class = "input"


class TransientError(JobError):
    error_class = "transient"
    retryable = True


class PolicyError(JobError):
    error_class = "policy"


class DeadlineError(JobError):
    error_class = "deadline"


class InternalError(JobError):
    error_class = "internal"


#: the network failing under a request: connect, read, write, a connection cut half-way, a
#: malformed response (RemoteProtocolError), DNS; retrying may well succeed
TRANSIENT: tuple[type[BaseException], ...] = (
    httpx.TransportError, TimeoutError, asyncio.TimeoutError, ConnectionError, socket.gaierror,
    asyncio.IncompleteReadError, RedisConnectionError, RedisTimeoutError,
)


@dataclass(frozen=True)
class Failure:
    error_class: ErrorClass
    message: str
    retryable: bool
    retry_after: float | None = None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _http_status(exc: BaseException) -> tuple[int | None, Any]:
    """Status code and headers of an HTTP error from httpx, httpx2 or the openai SDK, duck-typed."""
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None) or getattr(response, "status_code", None)
    headers = getattr(response, "headers", None) or {}
    return (int(status) if isinstance(status, int) else None), headers


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, JobError):
        return Failure(exc.error_class, exc.message, exc.retryable, exc.retry_after)
    name = type(exc).__name__
    message = str(exc) or name
    status, headers = _http_status(exc)
    if status is not None:
        retry_after = parse_retry_after(headers.get("retry-after") if hasattr(headers, "get") else None)
        if status == 429 or status >= 500 or status == 408:
            return Failure("transient", f"HTTP {status}: {message}", True, retry_after)
        return Failure("input", f"HTTP {status}: {message}", False)
    if isinstance(exc, httpx.UnsupportedProtocol):  # a URL no retry can fix
        return Failure("input", f"{name}: {message}", False)
    if isinstance(exc, TRANSIENT) or "Timeout" in name or ("Connect" in name and "Error" in name):
        return Failure("transient", f"{name}: {message}", True)
    return Failure("internal", f"{name}: {message}", False)
