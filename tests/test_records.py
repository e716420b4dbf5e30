"""The job record's links: built from the route paths, they say what ``request.url_for`` would."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from api.app import create_app
from api.records import EVENTS_PATH, JOB_PATH, absolute_url
from shared.settings import Settings

JOB_ID = "0123456789abcdef0123456789abcdef"
APP = create_app(Settings(redis_url="redis://127.0.0.1:1/0"))
PARENT = Starlette(routes=[Mount("/jobs-api", APP)])


def _scope(headers: list[tuple[bytes, bytes]], **over: Any) -> dict[str, Any]:
    scope = {"type": "http", "method": "GET", "path": "/v1/jobs", "query_string": b"", "scheme": "http",
             "server": ("127.0.0.1", 8000), "root_path": "", "headers": headers, "app": APP, "router": APP.router}
    return scope | over


SCOPES = {
    "host header": _scope([(b"host", b"api.example")]),
    "host header with a port": _scope([(b"host", b"127.0.0.1:8000")]),
    "https (a proxy's X-Forwarded-Proto, once uvicorn applied it)": _scope([(b"host", b"api.example")],
                                                                           scheme="https"),
    "no host header: the server's address": _scope([]),
    "no host header, IPv6 on the default port": _scope([], server=("::1", 80)),
    "no host header, no server": _scope([], server=None),
    "root path": _scope([(b"host", b"api.example")], root_path="/backlane"),
    "root path with a slash": _scope([(b"host", b"api.example")], root_path="/backlane/"),
    "mounted in another app": _scope([(b"host", b"api.example")], root_path="/jobs-api", app_root_path="",
                                     router=PARENT.router),
    "mounted, under a root path": _scope([(b"host", b"api.example")], root_path="/edge/jobs-api",
                                         app_root_path="/edge", router=PARENT.router),
}


@pytest.mark.parametrize("scope", SCOPES.values(), ids=SCOPES.keys())
@pytest.mark.parametrize(("name", "path"), [("get_job", JOB_PATH), ("job_events", EVENTS_PATH)])
def test_links_say_what_url_for_says(scope: dict[str, Any], name: str, path: str) -> None:
    request = Request(scope)
    assert absolute_url(request, path.format(job_id=JOB_ID)) == str(request.url_for(name, job_id=JOB_ID))
