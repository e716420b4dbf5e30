"""``GET /openapi.json``, the OpenAPI document generated from the routes (``api/openapi.py``), and
``GET /docs``, its reference page: Redoc, vendored in ``static/vendor/redoc`` (no CDN)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from ..openapi import document
from ..operations import Operation, documented, reply
from ..responses import JSONResponse

#: relative URLs, so the page works under a mount prefix too
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Backlane API</title>
  <link rel="icon" href="ui/favicon.svg">
</head>
<body>
  <redoc spec-url="openapi.json"></redoc>
  <script src="ui/vendor/redoc/redoc.standalone.js"></script>
</body>
</html>
"""

TAG = "reference"
OPENAPI = Operation("This OpenAPI document", TAG,
                    replies={200: reply("the OpenAPI 3.1 document", {"type": "object"})}, security="none")
DOCS = Operation("The API reference page", TAG, replies={200: reply("an HTML page", {"type": "string"}, "text/html")},
                 security="none")


def _document(request: Request) -> dict[str, Any]:
    """Built on the first request and kept on the app: the routes do not change while it runs."""
    state = request.app.state
    if getattr(state, "openapi", None) is None:
        state.openapi = document(request.app.routes)
    found: dict[str, Any] = state.openapi
    return found


@documented(get=OPENAPI)
async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(_document(request))


@documented(get=DOCS)
async def docs(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


routes = [
    Route("/openapi.json", openapi_json, methods=["GET"], name="openapi"),
    Route("/docs", docs, methods=["GET"], name="docs"),
]
