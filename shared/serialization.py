"""JSON and time helpers shared by both sides: orjson everywhere, RFC 3339 UTC timestamps."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(raw: str | bytes) -> Any:
    return orjson.loads(raw)


def members(value: dict[str, Any]) -> str:
    """A JSON object's members without the braces, for events whose seq is added in Lua."""
    return dumps(value)[1:-1] if value else ""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ms_of(at: Any) -> int | None:
    """ms since the epoch of an RFC 3339 time (as ``rfc3339`` writes it); None for anything else."""
    if not isinstance(at, str):
        return None
    try:
        return int(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def rfc3339(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
