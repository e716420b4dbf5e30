"""What each route declares about itself for the OpenAPI document: parameters, body, answers, security.

A route module decorates its endpoint with ``documented(get=Operation(...), ...)``; ``api/openapi.py``
walks the app's routes and renders each one. Schemas are named by the Python types and JSON Schemas
the code itself uses (the TypedDicts of ``shared/schemas.py``, ``api/validation.py``'s schemas), so
the document says what the code does. A route without a declaration fails the document's test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from shared.json_schema import SchemaSet

#: a type annotation, a JSON Schema, or a ``Derived``
SchemaLike = Any
Security = Literal["api_key", "events", "none"]
F = TypeVar("F", bound=Callable[..., Any])

JSON = "application/json"
SSE = "text/event-stream"
ATTRIBUTE = "__openapi__"


@dataclass(frozen=True)
class Reply:
    """One answer an operation gives: a description, and its body's schema per media type."""

    description: str
    content: Mapping[str, SchemaLike] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Derived:
    """A schema made by a function of the schema set (a dataclass rendered with overrides, …)."""

    make: Callable[[SchemaSet], dict[str, Any]]


def sse_event(data: SchemaLike, description: str, *, with_id: bool = True) -> Derived:
    """The schema of one event of a ``text/event-stream`` answer: its ``event``, ``id`` and ``data`` (JSON
    whose schema is ``data``), as an SSE client parses it."""

    def make(schemas: SchemaSet) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "event": {"type": "string"},
            "data": {"type": "string", "contentMediaType": JSON, "contentSchema": render_schema(schemas, data)},
        }
        if with_id:
            fields["id"] = {"type": "string", "description": "the event's cursor (resume after it)"}
        return {"type": "object", "description": description, "properties": fields, "required": ["data"]}

    return Derived(make)


def reply(description: str, schema: SchemaLike = None, media: str = JSON, **headers: str) -> Reply:
    return Reply(description, {media: schema} if schema is not None else {}, headers)


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    description: str = ""
    #: OpenAPI parameter objects (path parameters are added from the route)
    parameters: tuple[dict[str, Any], ...] = ()
    #: the request body's schema (JSON), and whether a body is needed
    body: SchemaLike = None
    body_required: bool = True
    #: status → the answer (2xx, 3xx)
    replies: Mapping[int, Reply] = field(default_factory=dict)
    #: the error statuses it answers, with the error shape; a description here replaces ``ERRORS``'
    errors: Mapping[int, str] | tuple[int, ...] = ()
    security: Security = "api_key"
    #: the error body: Backlane's, or OpenAI's for the OpenAI-compatible routes
    error_schema: str = "Error"


#: what each error status means unless an operation says more
ERRORS: dict[int, str] = {
    400: "malformed: the body is not JSON, or a header or parameter cannot be read",
    401: "no API key, or an unknown one",
    404: "no such job (another tenant's job is not found either)",
    409: "the job's status does not allow this",
    413: "the body is larger than BACKLANE_MAX_BODY_BYTES",
    415: "the body is not JSON (Content-Type: application/json)",
    422: "a field is not acceptable: the message names it",
    429: "over a limit: try again after Retry-After",
    503: "Redis is unavailable: try again after Retry-After",
}
#: the errors of every route that reads Redis for a tenant
AUTHED = (401, 503)


def documented(**by_method: Operation) -> Callable[[F], F]:
    """Attaches the operations of an endpoint, by HTTP method (``get=``, ``post=``, ``delete=``)."""

    def attach(endpoint: F) -> F:
        setattr(endpoint, ATTRIBUTE, {method.upper(): op for method, op in by_method.items()})
        return endpoint

    return attach


def operations_of(endpoint: Callable[..., Any]) -> dict[str, Operation] | None:
    found: dict[str, Operation] | None = getattr(endpoint, ATTRIBUTE, None)
    return found


def render_schema(schemas: SchemaSet, schema: SchemaLike) -> dict[str, Any]:
    if isinstance(schema, dict):
        return schema
    if isinstance(schema, Derived):
        return schema.make(schemas)
    return schemas.of(schema)
