"""Checks the fields of requests: anything well formed but unacceptable is a 422 that says which field."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import orjson
from jsonschema import validators
from starlette.datastructures import QueryParams

from shared.jobtypes import JobTypePolicy
from shared.status import Status

from .errors import InvalidFields

CREATE_FIELDS = frozenset({"type", "input", "metadata", "webhook_url", "deadline_s", "max_attempts"})
MAX_ATTEMPTS = 100
MAX_DEADLINE_S = 366 * 24 * 3600
MAX_LIST_LIMIT = 200
STATUSES = frozenset(s.value for s in Status)


@dataclass(frozen=True)
class CreateRequest:
    type: str
    input: Any
    metadata: dict[str, Any] | None
    webhook_url: str | None
    deadline_s: float | None
    max_attempts: int | None


@dataclass(frozen=True)
class ListQuery:
    status: str | None
    type: str | None
    cursor: str | None
    limit: int


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _webhook_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 2048 or any(c.isspace() for c in value):
        raise InvalidFields("webhook_url must be an http(s) URL of at most 2048 characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidFields("webhook_url must be an absolute http:// or https:// URL")
    return value


def parse_create(body: Any) -> CreateRequest:
    if not isinstance(body, dict):
        raise InvalidFields("the body must be a JSON object")
    unknown = sorted(set(body) - CREATE_FIELDS)
    if unknown:
        raise InvalidFields(f"unknown fields: {', '.join(unknown)}")
    job_type = body.get("type")
    if not isinstance(job_type, str) or not job_type:
        raise InvalidFields("type is required: the name of a job type")
    if "input" not in body:
        raise InvalidFields("input is required")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidFields("metadata must be a JSON object")
    deadline = body.get("deadline_s")
    if deadline is not None and (
        not _is_number(deadline) or not math.isfinite(deadline) or not 0 < deadline <= MAX_DEADLINE_S
    ):
        raise InvalidFields(f"deadline_s must be a number of seconds above 0 and at most {MAX_DEADLINE_S}")
    attempts = body.get("max_attempts")
    if attempts is not None and (
        not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= MAX_ATTEMPTS
    ):
        raise InvalidFields(f"max_attempts must be an integer from 1 to {MAX_ATTEMPTS}")
    return CreateRequest(
        type=job_type,
        input=body["input"],
        metadata=metadata,
        webhook_url=_webhook_url(body.get("webhook_url")),
        deadline_s=float(deadline) if deadline is not None else None,
        max_attempts=attempts,
    )


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    schema = orjson.loads(schema_json)
    cls = validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def check_input(policy: JobTypePolicy, value: Any) -> None:
    """``value`` against the type's ``input_schema``; the message names the failing place."""
    try:
        validator = _validator(orjson.dumps(policy.input_schema, option=orjson.OPT_SORT_KEYS).decode())
    except jsonschema.SchemaError as exc:
        raise InvalidFields(f"job type {policy.name!r} has an invalid input_schema: {exc.message}") from None
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "input" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise InvalidFields(f"{where}: {error.message}")


def parse_list(params: QueryParams) -> ListQuery:
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidFields(f"status must be one of: {', '.join(s.value for s in Status)}")
    raw_limit = params.get("limit")
    limit = 20
    if raw_limit is not None:
        if not raw_limit.strip().lstrip("-").isdigit():
            raise InvalidFields("limit must be an integer")
        limit = int(raw_limit)
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidFields(f"limit must be from 1 to {MAX_LIST_LIMIT}")
    job_type, cursor = params.get("type") or None, params.get("cursor") or None
    return ListQuery(status=status, type=job_type, cursor=cursor, limit=limit)
