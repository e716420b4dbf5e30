"""Reading JSON request bodies within the size limit."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from .errors import BadRequest, PayloadTooLarge, UnsupportedMediaType


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    return "transfer-encoding" in request.headers


async def read_json(request: Request, max_bytes: int, *, optional: bool = False) -> Any:
    """The parsed body. ``optional``: an empty body is None. The declared length is checked first
    and the bytes are counted while reading, so a chunked or lying client cannot get past it."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(length) > max_bytes:
            raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    if optional and not _has_body(request):
        return None
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise UnsupportedMediaType("the body must be JSON (Content-Type: application/json)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if optional and not body.strip():
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
