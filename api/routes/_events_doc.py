"""The OpenAPI declaration of ``GET /v1/jobs/{id}/events`` (kept apart from the streaming code)."""

from __future__ import annotations

from shared.jobs import CURSOR
from shared.json_schema import SchemaSet
from shared.schemas import Event

from ..operations import SSE, Derived, Operation, documented, reply

__all__ = ["EVENTS", "documented"]

_CURSOR = {"type": "string", "pattern": CURSOR.pattern}


def _stream(schemas: SchemaSet) -> dict[str, object]:
    schemas.add("Event", schemas.of(Event))
    return {
        "type": "string",
        "description": "SSE: each event is `id: <cursor>`, `event: <type>`, `data: <JSON>`, the data an "
                       "`Event` (components/schemas/Event); a comment line at least every BACKLANE_KEEPALIVE_S "
                       "while idle; the response ends after the terminal status event.",
    }


EVENTS = Operation(
    "Follow a job's events (SSE)", "jobs",
    "Every event after the cursor (Last-Event-ID, else `after`, else from the first), in order, then live. "
    "Works in a plain browser EventSource with the record's links.events URL (it carries `token`).",
    parameters=(
        {"name": "Last-Event-ID", "in": "header", "required": False, "schema": _CURSOR,
         "description": "resume after this event's id (EventSource sends it when it reconnects)"},
        {"name": "after", "in": "query", "required": False, "schema": _CURSOR,
         "description": "resume after this event's id (the header wins)"},
    ),
    replies={200: reply("the events", Derived(_stream), SSE),
             204: reply("the cursor is at or after the job's terminal event: nothing more will come")},
    errors={400: "a malformed cursor, or one past the job's newest event", 401: "", 404: "",
            429: "the tenant holds BACKLANE_SSE_MAX_PER_TENANT streams on this process already", 503: ""},
    security="events",
)
