"""Checks the fields of requests against JSON Schemas: anything well formed but unacceptable is a 422
that says which field.

The schemas here are the ones ``GET /openapi.json`` publishes (``api/openapi.py``): the document and
the checks are the same data, so neither can drift from the other.

    CREATE_BODY   the body of POST /v1/jobs
    LIST_QUERY    the query of GET /v1/jobs
    a type's input_schema (JobTypePolicy)   the body's ``input``, once the type is known
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import orjson
from jsonschema import validators
from starlette.datastructures import QueryParams

from shared.jobtypes import JobTypePolicy
from shared.listing import LIST_CURSOR
from shared.priority import PRIORITIES, Priority
from shared.status import Status

from .errors import ApiError, BadRequest, InvalidFields

MAX_ATTEMPTS = 100
MAX_DEADLINE_S = 366 * 24 * 3600
MAX_LIST_LIMIT = 200
#: ``metadata.<key>=<value>`` search terms one listing takes, and how long a key or value may be
MAX_METADATA_TERMS = 4
MAX_METADATA_KEY = 100
MAX_METADATA_VALUE = 500
METADATA_PARAM = "metadata."
#: a schema error quotes the value at fault: cut it so a 1 MB string does not come back whole
MAX_MESSAGE = 500

CREATE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["type", "input"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "minLength": 1, "description": "a job type: see GET /v1/job-types"},
        "input": {"description": "the job's input, checked against its type's input_schema"},
        "metadata": {"type": ["object", "null"], "description": "kept with the job and returned as is"},
        "webhook_url": {
            "type": ["string", "null"], "maxLength": 2048, "pattern": r"^[hH][tT][tT][pP][sS]?://\S+$",
            "description": "where every status change is POSTed, signed per Standard Webhooks; it must "
                           "reach a public address, and the tenant must have a webhook secret",
        },
        "deadline_s": {
            "type": ["number", "null"], "exclusiveMinimum": 0, "maximum": MAX_DEADLINE_S,
            "description": "seconds from creation by which the job must have started (and, for a "
                           "reviewed type, been reviewed), else it expires",
        },
        "max_attempts": {
            "type": ["integer", "null"], "minimum": 1, "maximum": MAX_ATTEMPTS,
            "description": "attempts before the job fails (default: the type's)",
        },
        "priority": {
            "type": "string", "enum": list(PRIORITIES),
            "description": "high, normal or low (default: the job type's priority, normal unless it "
                           "sets one): among jobs of its type, a high job is placed as if ready 5 "
                           "minutes sooner, a low one 5 minutes later",
        },
    },
}


@dataclass(frozen=True)
class QueryParam:
    """One query parameter: its JSON Schema checks the value (an integer schema parses it first)."""

    name: str
    schema: dict[str, Any]
    description: str
    #: the error a value that fails the schema gets (a malformed cursor is a 400, not a 422)
    error: type[ApiError] = InvalidFields
    message: str | None = None

    def openapi(self) -> dict[str, Any]:
        # an empty value is read as no value (``?status=`` lists every status): the schema says so
        return {"name": self.name, "in": "query", "required": False, "description": self.description,
                "schema": {"anyOf": [self.schema, {"const": ""}]}}


LIST_QUERY = (
    QueryParam("status", {"type": "string", "enum": [s.value for s in Status]}, "only jobs in this status"),
    QueryParam("type", {"type": "string"}, "only jobs of this type"),
    QueryParam("cursor", {"type": "string", "pattern": LIST_CURSOR.pattern},
               "the next_cursor of the previous page", BadRequest,
               "malformed cursor: pass back the next_cursor of a previous page"),
    QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT, "default": 20},
               "jobs per page"),
    QueryParam("id_prefix", {"type": "string", "pattern": "^[0-9a-fA-F]{1,32}$"},
               "only jobs whose id starts with these hex digits (any case)", InvalidFields,
               "id_prefix must be 1 to 32 hex digits (0-9, a-f)"),
)
#: documents ``metadata.<key>=<value>``, which parse_list reads from every parameter with that prefix
METADATA_QUERY_DOC: dict[str, Any] = {
    "name": "metadata.<key>", "in": "query", "required": False,
    "description": f"only jobs whose metadata has <key> with this value (a string as is, anything else as "
                   f"its JSON text: metadata.n=3 matches {{\"n\": 3}}); up to {MAX_METADATA_TERMS} such "
                   f"parameters, all must match. A search reads the job of each index entry it passes, so "
                   f"one request looks at a bounded number of entries and may answer a short page with a "
                   f"next_cursor to continue.",
    "schema": {"type": "string", "maxLength": MAX_METADATA_VALUE},
}


@dataclass(frozen=True)
class CreateRequest:
    type: str
    input: Any
    metadata: dict[str, Any] | None
    webhook_url: str | None
    deadline_s: float | None
    max_attempts: int | None
    #: None: the type's
    priority: Priority | None = None


@dataclass(frozen=True)
class ListQuery:
    status: str | None
    type: str | None
    cursor: str | None
    limit: int
    id_prefix: str | None = None
    #: key → the value its metadata must have (as ``shared.listing.metadata_text``)
    metadata: dict[str, str] = field(default_factory=dict)


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    schema = orjson.loads(schema_json)
    cls = validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """A checked, cached validator of ``schema`` (SchemaError when the schema itself is invalid)."""
    return _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode())


def _place(root: str, path: Any) -> str:
    place = root
    for part in path:
        place += f"[{part!r}]" if isinstance(part, int) else f".{part}" if place else str(part)
    return place


@dataclass(frozen=True)
class SchemaError:
    #: the failing place, from the root the caller named ("" for the value itself)
    where: str
    message: str


def schema_error(schema: dict[str, Any], value: Any, root: str = "") -> SchemaError | None:
    """Why ``value`` fails ``schema``, naming the failing place from ``root``; None when it passes."""
    error = jsonschema.exceptions.best_match(validator(schema).iter_errors(value))
    if error is None:
        return None
    where = _place(root, error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        unknown = sorted(set(error.instance) - set(known))
        return SchemaError(where, f"unknown fields{' in ' + where if where else ''}: {', '.join(unknown)}")
    if error.validator == "required" and isinstance(error.validator_value, list):
        missing = [name for name in error.validator_value if name not in error.instance][:1]
        place = _place(where, missing)
        return SchemaError(place, f"{where}: {missing[0]!r} is required" if where else f"{place} is required")
    message = error.message if len(error.message) <= MAX_MESSAGE else error.message[:MAX_MESSAGE] + "…"
    return SchemaError(where, f"{where or 'the value'}: {message}")


def _host_of(url: str) -> str | None:
    """The URL's host; None when it has none or cannot be read (``http://[`` is a ValueError)."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def parse_create(body: Any) -> CreateRequest:
    if not isinstance(body, dict):
        raise InvalidFields("the body must be a JSON object")
    if (error := schema_error(CREATE_BODY, body)) is not None:
        raise InvalidFields(error.message, param=error.where.partition(".")[0] or None)
    webhook_url = body.get("webhook_url")
    if webhook_url is not None and not _host_of(webhook_url):
        raise InvalidFields("webhook_url must be an absolute http:// or https:// URL with a host",
                            param="webhook_url")
    deadline, attempts = body.get("deadline_s"), body.get("max_attempts")
    return CreateRequest(
        type=body["type"],
        input=body["input"],
        metadata=body.get("metadata"),
        webhook_url=webhook_url,
        deadline_s=float(deadline) if deadline is not None else None,
        max_attempts=int(attempts) if attempts is not None else None,
        priority=body.get("priority"),
    )


def check_input(policy: JobTypePolicy, value: Any) -> None:
    """``value`` against the type's ``input_schema``; the message names the failing place."""
    try:
        error = schema_error(policy.input_schema, value, "input")
    except jsonschema.SchemaError as exc:
        raise InvalidFields(f"job type {policy.name!r} has an invalid input_schema: {exc.message}") from None
    if error is not None:
        raise InvalidFields(error.message)


_INTEGER = re.compile(r"^[+-]?\d{1,18}$")


def parse_query(params: QueryParams, spec: tuple[QueryParam, ...]) -> dict[str, Any]:
    """The values of the ``spec``'s parameters (None when absent or empty), each checked by its schema."""
    values: dict[str, Any] = {}
    for param in spec:
        raw = params.get(param.name) or None
        value: Any = raw
        if raw is not None and param.schema.get("type") == "integer":
            if not _INTEGER.match(raw.strip()):
                raise param.error(param.message or f"{param.name} must be an integer")
            value = int(raw)
        if value is not None and (error := schema_error(param.schema, value, param.name)) is not None:
            raise param.error(param.message or error.message)
        values[param.name] = value if value is not None else param.schema.get("default")
    return values


def _metadata_terms(params: QueryParams) -> dict[str, str]:
    terms: dict[str, str] = {}
    for name, value in params.multi_items():
        if not name.startswith(METADATA_PARAM):
            continue
        key = name[len(METADATA_PARAM):]
        if not key or len(key) > MAX_METADATA_KEY:
            raise InvalidFields(f"{name!r}: name a metadata key of 1 to {MAX_METADATA_KEY} characters after "
                                f"'metadata.'", param=name)
        if key in terms:
            raise InvalidFields(f"{name} is given twice", param=name)
        if len(value) > MAX_METADATA_VALUE:
            raise InvalidFields(f"{name}: the value is longer than {MAX_METADATA_VALUE} characters", param=name)
        terms[key] = value
    if len(terms) > MAX_METADATA_TERMS:
        raise InvalidFields(f"at most {MAX_METADATA_TERMS} metadata.<key> parameters may be given")
    return terms


def parse_list(params: QueryParams) -> ListQuery:
    values = parse_query(params, LIST_QUERY)
    prefix = values["id_prefix"]
    return ListQuery(status=values["status"], type=values["type"], cursor=values["cursor"], limit=values["limit"],
                     id_prefix=prefix.lower() if prefix else None, metadata=_metadata_terms(params))
