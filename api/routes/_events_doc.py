"""The OpenAPI declaration of ``GET /v1/jobs/{id}/events`` (kept apart from the streaming code)."""

from __future__ import annotations

from typing import Any

from shared.jobs import CURSOR
from shared.json_schema import SchemaSet
from shared.schemas import Event

from ..operations import SSE, Derived, Operation, documented, reply, sse_event

__all__ = ["EVENTS", "documented"]

#: an empty value is read as none
_CURSOR = {"anyOf": [{"type": "string", "pattern": CURSOR.pattern}, {"const": ""}]}


def _event(schemas: SchemaSet) -> dict[str, Any]:
    return schemas.add("Event", schemas.of(Event))


STREAM = sse_event(
    Derived(_event),
    "one SSE event: `id: <cursor>`, `event: <type>`, `data: <Event JSON>`; a comment line at least every "
    "BACKLANE_KEEPALIVE_S while idle; the response ends after the terminal status event",
)


EVENTS = Operation(
    "Follow a job's events (SSE)", "jobs",
    "Every event after the cursor (Last-Event-ID, else `after`, else from the first), in order, then live. "
    "Works in a plain browser EventSource with the record's links.events URL (it carries `token`).",
    parameters=(
        {"name": "Last-Event-ID", "in": "header", "required": False, "schema": _CURSOR,
         "description": "resume after this event's id (EventSource sends it when it reconnects)"},
        {"name": "after", "in": "query", "required": False, "schema": _CURSOR,
         "description": "resume after this event's id (the header wins)"},
        {"name": "compact", "in": "query", "required": False, "schema": {"enum": ["true", "false"]},
         "description": "true (the default): a client more than a page (500 events) behind first gets one "
                        "`snapshot` event (the newest attempt's output so far, status, progress, and the "
                        "cursor it covers), then the events after it; false: every event"},
    ),
    replies={200: reply("the events", STREAM, SSE),
             204: reply("the cursor is at or after the job's terminal event: nothing more will come")},
    errors={400: "a malformed cursor, or one past the job's newest event; compact not true or false",
            401: "", 404: "",
            429: "the tenant holds BACKLANE_SSE_MAX_PER_TENANT streams on this process already", 503: ""},
    security="events",
)
