"""Every error the API answers with, and how each maps to HTTP.

    ApiError                      {"error": {"code", "message"}} with the class's status
    ├── BadRequest            400 malformed: not JSON, a bad cursor
    ├── Unauthorized          401 no or bad credentials
    ├── NotFound              404 unknown, or another tenant's (never reveal it exists)
    ├── MethodNotAllowed      405
    ├── Conflict              409 invalid transition, idempotency key reused with another body
    ├── PayloadTooLarge       413
    ├── UnsupportedMediaType  415 not application/json
    ├── InvalidFields         422 the JSON is well formed but its fields are not acceptable
    ├── RateLimited           429 with Retry-After
    └── Unavailable           503 Redis unreachable (or a change not yet confirmed by the replicas
                                  BACKLANE_REDIS_MIN_REPLICAS asks for), with Retry-After

The OpenAI-compatible routes (``/v1/responses*``) answer the same errors in OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``, with 400 for every malformed or invalid
request as OpenAI does, so the official SDK raises its own exception (``BadRequestError``,
``AuthenticationError``, ``NotFoundError``, …) with the message.

Handlers raise these; only this module builds error JSON. Starlette's own HTTPException
(unknown route, wrong method, static file missing) and redis-py's connection errors are
translated here too, so no client ever sees an HTML or plain-text error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

from shared.replicas import NotReplicated

__all__ = [
    "ApiError",
    "BadRequest",
    "Conflict",
    "InvalidFields",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "error_schemas",
    "exception_handlers",
]

log = logging.getLogger("backlane.api")

#: what a client should wait before trying again when Redis is unreachable
REDIS_RETRY_AFTER_S = 2


class ApiError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})
        #: the request field at fault, where one is (OpenAI's shape carries it)
        self.param = param


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str = "missing or invalid credentials") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class NotFound(ApiError):
    status, code = 404, "not_found"

    def __init__(self, message: str = "not found") -> None:
        super().__init__(message)


class MethodNotAllowed(ApiError):
    status, code = 405, "method_not_allowed"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class InvalidFields(ApiError):
    status, code = 422, "invalid_fields"


class RateLimited(ApiError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after_s))})


class Unavailable(ApiError):
    status, code = 503, "unavailable"

    def __init__(self, message: str = "Redis is unavailable",
                 retry_after_s: int = REDIS_RETRY_AFTER_S) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


def _response(status: int, code: str, message: str, headers: Mapping[str, str] | None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


#: the routes that answer in OpenAI's error shape (the OpenAI-compatible background API)
OPENAI_PATH = "/v1/responses"
#: OpenAI answers a malformed or invalid request with 400, never 413/415/422
_OPENAI_STATUS = {413: 400, 415: 400, 422: 400}
_OPENAI_CODE = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


def _openai_response(status: int, message: str, headers: Mapping[str, str] | None = None, *,
                     param: str | None = None) -> JSONResponse:
    status = _OPENAI_STATUS.get(status, status)
    kind = "server_error" if status >= 500 else "requests" if status == 429 else "invalid_request_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": _OPENAI_CODE.get(status)}}
    return JSONResponse(body, status_code=status, headers=headers)


def _answer(request: Request, status: int, code: str, message: str, headers: Mapping[str, str] | None,
            param: str | None = None) -> JSONResponse:
    path = request.url.path
    if path == OPENAI_PATH or path.startswith(OPENAI_PATH + "/"):
        return _openai_response(status, message, headers, param=param)
    return _response(status, code, message, headers)


_CODES: dict[int, str] = {
    cls.status: cls.code
    for cls in (BadRequest, Unauthorized, NotFound, MethodNotAllowed, Conflict, PayloadTooLarge,
                UnsupportedMediaType, InvalidFields, RateLimited, Unavailable)
}


def error_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schemas of the two error bodies this module builds, for the OpenAPI document."""
    text = {"type": "string"}
    backlane = {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"enum": sorted({*_CODES.values(), "http_error", ApiError.code}),
                         "description": "what kind of error; stable, for programs"},
                "message": {**text, "description": "what is wrong, for people"},
            },
        }},
    }
    openai = {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": text,
                "type": {"enum": ["invalid_request_error", "requests", "server_error"]},
                "param": {"type": ["string", "null"]},
                "code": {"enum": [*sorted(set(_OPENAI_CODE.values())), None]},
            },
        }},
    }
    return {"Error": backlane, "OpenAIError": openai}


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _answer(request, exc.status, exc.code, exc.message, exc.headers, exc.param)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _CODES.get(exc.status_code, "http_error")
    return _answer(request, exc.status_code, code, exc.detail, exc.headers)


async def _redis_down(request: Request, exc: Exception) -> Response:
    log.warning("Redis unavailable during %s %s: %s", request.method, request.url.path, exc)
    return await _api_error(request, Unavailable())


async def _not_replicated(request: Request, exc: Exception) -> Response:
    # the change is on the master but may not survive its failover: the client retries (with its
    # Idempotency-Key a create finds the job instead of making another); docs/scaling.md, "Failover"
    log.warning("%s %s not confirmed by the replicas: %s", request.method, request.url.path, exc)
    return await _api_error(request, Unavailable(f"{exc}; retry (with the same Idempotency-Key)",
                                                 retry_after_s=1))


async def _internal(request: Request, exc: Exception) -> Response:
    # Reached only for bugs: every create is one atomic script, so a 500 never half-creates a job.
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return await _api_error(request, ApiError("internal error"))


def exception_handlers() -> dict[type[Exception] | int, ExceptionHandler]:
    return {
        ApiError: _api_error,
        HTTPException: _http_exception,
        RedisConnectionError: _redis_down,
        RedisTimeoutError: _redis_down,
        ReadOnlyError: _redis_down,  # a master demoted by a failover, before the client reconnects
        NotReplicated: _not_replicated,
        500: _internal,
    }
