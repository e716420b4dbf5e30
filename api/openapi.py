"""The OpenAPI 3.1 document, generated from the app's routes.

    app.routes ── each Route ──▶ its endpoint's ``documented(...)`` operations (api/operations.py)
       │                           ├─ path parameters ◀── the route's own path
       │                           ├─ bodies, queries ◀── the JSON Schemas that check them (validation.py)
       │                           └─ answers ◀── the TypedDicts the code returns (shared/schemas.py)
       └──────────────────────────▶ {"openapi": "3.1.0", "paths", "components"}

Nothing here knows a route by name: a route added without a declaration makes ``document`` raise,
and so fails its test, rather than go missing from the document.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Mount, Route

from shared.json_schema import SchemaSet

from .errors import error_schemas
from .operations import ERRORS, JSON, Operation, Reply, operations_of, render_schema

VERSION = "3.1.0"
#: Retry-After, on the answers that carry it
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}}
_SECURITY_SCHEMES = {
    "apiKey": {"type": "http", "scheme": "bearer", "description": "an API key of BACKLANE_API_KEYS"},
    "eventsToken": {
        "type": "apiKey", "in": "query", "name": "token",
        "description": "the short-lived, read-only token of a job record's links.events, scoped to that "
                       "one job (a browser EventSource cannot send headers)",
    },
}
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "api_key": [{"apiKey": []}], "events": [{"apiKey": []}, {"eventsToken": []}], "none": [],
}


class Undocumented(LookupError):
    """A route has no ``documented`` declaration for one of its methods."""


def _reply(schemas: SchemaSet, r: Reply) -> dict[str, Any]:
    out: dict[str, Any] = {"description": r.description}
    if r.content:
        out["content"] = {media: {"schema": render_schema(schemas, schema)} for media, schema in r.content.items()}
    if r.headers:
        out["headers"] = {name: {"description": text, "schema": {"type": "string"}} for name, text in r.headers.items()}
    return out


def _error(schemas: SchemaSet, op: Operation, status: int, description: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {JSON: {"schema": schemas.ref(op.error_schema)}}}
    if status in (429, 503):
        out["headers"] = _RETRY_AFTER
    elif status == 401:
        out["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return out


def _operation(schemas: SchemaSet, route: Route, method: str, op: Operation) -> dict[str, Any]:
    path_params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.param_convertors
    ]
    out: dict[str, Any] = {
        "operationId": f"{route.name}_{method.lower()}" if len(route.methods or ()) > 2 else route.name,
        "summary": op.summary,
        "tags": [op.tag],
        "security": _SECURITY[op.security],
    }
    if op.description:
        out["description"] = op.description
    if params := [*path_params, *op.parameters]:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required,
                              "content": {JSON: {"schema": render_schema(schemas, op.body)}}}
    responses = {str(status): _reply(schemas, r) for status, r in sorted(op.replies.items())}
    errors = op.errors if isinstance(op.errors, dict) else dict.fromkeys(op.errors, "")
    for status, text in sorted(errors.items()):
        responses[str(status)] = _error(schemas, op, status, text or ERRORS[status])
    out["responses"] = responses
    return out


def document(routes: Sequence[BaseRoute], *, title: str = "Backlane", version: str = "1") -> dict[str, Any]:
    """The OpenAPI document of ``routes`` (a Mount of static files is left out: it serves the UI)."""
    schemas = SchemaSet()
    for name, schema in error_schemas().items():
        schemas.add(name, schema)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if isinstance(route, Mount):
            continue
        if not isinstance(route, Route):
            raise Undocumented(f"{route!r} is neither a Route nor a Mount")
        ops = operations_of(route.endpoint) or {}
        item = paths.setdefault(route.path, {})
        for method in sorted((route.methods or set()) - {"HEAD"}):
            if method not in ops:
                raise Undocumented(f"{method} {route.path} has no documented(...) declaration")
            item[method.lower()] = _operation(schemas, route, method, ops[method])
    return {
        "openapi": VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": "A self-hosted background lane for long-running AI work: durable jobs, "
                           "supervised workers, resumable SSE. Errors are "
                           '`{"error": {"code", "message"}}`; the OpenAI-compatible `/v1/responses` '
                           "routes answer in OpenAI's error shape.",
        },
        "paths": paths,
        "components": {"schemas": schemas.components, "securitySchemes": _SECURITY_SCHEMES},
        "security": _SECURITY["api_key"],
    }
