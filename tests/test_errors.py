"""classify: which failure class each kind of exception gets (it decides retry or fail)."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from compute.errors import (
    DeadlineError,
    InputError,
    InternalError,
    PolicyError,
    TransientError,
    classify,
    parse_retry_after,
)

REQUEST = httpx.Request("POST", "https://provider.example/v1/things")


def status_error(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    response = httpx.Response(status, headers=headers, request=REQUEST)
    return httpx.HTTPStatusError(f"HTTP {status}", request=REQUEST, response=response)


@pytest.mark.parametrize("exc", [
    httpx.ReadError("connection reset", request=REQUEST),
    httpx.WriteError("broken pipe", request=REQUEST),
    httpx.RemoteProtocolError("peer closed connection without sending complete message body", request=REQUEST),
    httpx.ConnectError("refused", request=REQUEST),
    httpx.ReadTimeout("slow", request=REQUEST),
    httpx.PoolTimeout("pool full", request=REQUEST),
    httpx.ProxyError("proxy said no", request=REQUEST),
    ConnectionResetError(104, "Connection reset by peer"),
    BrokenPipeError(32, "Broken pipe"),
    ConnectionRefusedError(111, "Connection refused"),
    ConnectionAbortedError(),
    socket.gaierror(-3, "Temporary failure in name resolution"),
    asyncio.IncompleteReadError(b"", 10),
    TimeoutError(),
])
def test_network_errors_are_transient(exc: BaseException) -> None:
    """Bug: httpx.ReadError, WriteError and RemoteProtocolError (a receiver or provider cutting the
    connection) came out `internal`, so they were never retried. Cause: classify matched names with
    "Timeout" or "Connect…Error" only. Fix: httpx.TransportError and the OSError connection family
    are transient."""
    failure = classify(exc)
    assert (failure.error_class, failure.retryable) == ("transient", True), failure


def test_an_unsupported_url_scheme_is_input() -> None:
    failure = classify(httpx.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'."))
    assert (failure.error_class, failure.retryable) == ("input", False)


@pytest.mark.parametrize("status", [429, 408, 500, 502, 503, 504])
def test_rate_limits_timeouts_and_5xx_are_transient_with_their_retry_after(status: int) -> None:
    failure = classify(status_error(status, {"Retry-After": "7"}))
    assert (failure.error_class, failure.retryable, failure.retry_after) == ("transient", True, 7.0)
    assert failure.message.startswith(f"HTTP {status}")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_other_4xx_are_input(status: int) -> None:
    failure = classify(status_error(status))
    assert (failure.error_class, failure.retryable, failure.retry_after) == ("input", False, None)


def test_a_status_error_without_retry_after_has_none() -> None:
    assert classify(status_error(503)).retry_after is None


@pytest.mark.parametrize("exc, error_class, retryable", [
    (InputError("bad"), "input", False),
    (TransientError("later", retry_after=3), "transient", True),
    (PolicyError("refused"), "policy", False),
    (DeadlineError("too slow"), "deadline", False),
    (InternalError("bug"), "internal", False),
])
def test_job_errors_keep_their_class(exc: Exception, error_class: str, retryable: bool) -> None:
    failure = classify(exc)
    assert (failure.error_class, failure.retryable, failure.message) == (error_class, retryable, str(exc))


def test_a_transient_error_carries_its_retry_after() -> None:
    assert classify(TransientError("429", retry_after=3)).retry_after == 3


@pytest.mark.parametrize("exc", [KeyError("x"), ValueError("bad"), ZeroDivisionError(), AttributeError("a")])
def test_everything_else_is_internal(exc: Exception) -> None:
    failure = classify(exc)
    assert (failure.error_class, failure.retryable) == ("internal", False)
    assert failure.message.startswith(type(exc).__name__)


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("-5") == 0.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    seconds = parse_retry_after(later)
    assert seconds is not None and 100 <= seconds <= 121
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
