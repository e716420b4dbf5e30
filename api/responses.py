"""JSON responses written by orjson: the job routes answer records of some thirty fields (a list page up
to 200 of them), which the standard library's encoder takes about ten times longer to write. The bytes
mean the same JSON: stored values were written by orjson in the first place."""

from __future__ import annotations

from typing import Any

import orjson
from starlette import responses


class JSONResponse(responses.JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
