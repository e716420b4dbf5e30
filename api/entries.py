"""One stream entry as the API hands it out: parsed and encoded once, shared by every client.

The hub reads an entry once for all the subscribers of its job; whatever each client needs from it
is computed here, at that one read: the id as numbers (to compare cursors without string work per
client), whether it ends the job, and the SSE bytes of the event. A client's writer then only joins
the bytes of the entries it is due and sends them in one write.
"""

from __future__ import annotations

from typing import NamedTuple

from shared.jobs import parse_stream_id
from shared.serialization import loads
from shared.status import TERMINAL

_TERMINAL = frozenset(s.value for s in TERMINAL)

#: what an idle event stream sends every keep-alive interval: a comment, which clients ignore
KEEPALIVE = b": keep-alive\n\n"


class Entry(NamedTuple):
    id: str
    type: str
    data: str
    #: the id as (milliseconds, sequence): comparable without parsing again
    key: tuple[int, int]
    #: the status event that ends the job
    terminal: bool
    #: the event as SSE sends it: ``id:``, ``event:``, ``data:`` and the blank line
    wire: bytes


def entry(entry_id: str, event_type: str, data: str) -> Entry:
    terminal = event_type == "status" and loads(data).get("status") in _TERMINAL
    wire = f"id: {entry_id}\nevent: {event_type}\ndata: {data}\n\n".encode()
    return Entry(entry_id, event_type, data, parse_stream_id(entry_id), terminal, wire)


def entries(rows: list[tuple[str, str, str]]) -> list[Entry]:
    """Entries of rows as the store reads them: (stream id, type, data JSON)."""
    return [entry(*row) for row in rows]


def encode(batch: list[Entry]) -> bytes:
    """The SSE bytes of a batch, in one chunk; a keep-alive comment for an empty batch."""
    return b"".join(e.wire for e in batch) if batch else KEEPALIVE
