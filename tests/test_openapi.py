"""The OpenAPI document: valid 3.1, every route in it, and built from the schemas that check requests."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

import pytest
from http_server import asgi_client
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from api.app import create_app
from api.openapi import Undocumented, document
from api.routes.jobs import REVIEW_BODY
from api.validation import CREATE_BODY, LIST_QUERY, MAX_METADATA_VALUE, METADATA_QUERY_DOC
from shared.json_schema import SchemaSet
from shared.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def app(settings: Settings) -> Starlette:
    return create_app(settings)


@pytest.fixture
def doc(app: Starlette) -> dict[str, Any]:
    return document(app.routes)


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_every_route_of_the_app_is_in_the_document(app: Starlette, doc: dict[str, Any]) -> None:
    served = set()
    for route in app.routes:
        if isinstance(route, Mount):  # the UI's static files
            continue
        assert isinstance(route, Route)
        served |= {(route.path, m.lower()) for m in route.methods or () if m != "HEAD"}
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert served == documented
    for path in ("/v1/jobs", "/v1/jobs/{job_id}/events", "/v1/job-types", "/v1/responses/{response_id}",
                 "/v1/webhooks/openai", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert path in doc["paths"], path


def test_request_schemas_are_the_ones_that_validate(doc: dict[str, Any]) -> None:
    jobs = doc["paths"]["/v1/jobs"]
    assert jobs["post"]["requestBody"]["content"]["application/json"]["schema"] is CREATE_BODY
    *plain, metadata = jobs["get"]["parameters"]
    assert [p["schema"]["anyOf"][0] for p in plain] == [q.schema for q in LIST_QUERY]
    assert metadata == METADATA_QUERY_DOC and metadata["schema"]["maxLength"] == MAX_METADATA_VALUE
    approve = doc["paths"]["/v1/jobs/{job_id}/approve"]["post"]
    assert approve["requestBody"]["content"]["application/json"]["schema"] is REVIEW_BODY
    assert approve["requestBody"]["required"] is False


def test_errors_security_and_path_parameters_are_declared(doc: dict[str, Any]) -> None:
    get_job = doc["paths"]["/v1/jobs/{job_id}"]["get"]
    assert get_job["parameters"][0] == {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    assert set(get_job["responses"]) == {"200", "401", "404", "503"}
    error_schema = get_job["responses"]["404"]["content"]["application/json"]["schema"]
    assert error_schema == {"$ref": "#/components/schemas/Error"}
    assert "Retry-After" in get_job["responses"]["503"]["headers"]
    assert get_job["security"] == [{"apiKey": []}]
    events = doc["paths"]["/v1/jobs/{job_id}/events"]["get"]
    assert events["security"] == [{"apiKey": []}, {"eventsToken": []}]
    assert set(events["responses"]["200"]["content"]) == {"text/event-stream"}
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    openai = doc["paths"]["/v1/responses"]["post"]["responses"]["400"]
    assert openai["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OpenAIError"}
    record = doc["components"]["schemas"]["JobRecord"]
    assert record["properties"]["status"]["enum"][0] == "queued"
    assert set(record["required"]) == set(record["properties"])  # every field always present


def test_a_route_without_a_declaration_is_refused() -> None:
    async def plain(request: Any) -> PlainTextResponse:
        return PlainTextResponse("")

    with pytest.raises(Undocumented, match="GET /plain"):
        document([Route("/plain", plain)])


async def test_the_app_serves_the_document_and_the_reference_page(app: Starlette) -> None:
    async with asgi_client(app, headers={}) as client:
        response = await client.get("/openapi.json")
        assert response.status_code == 200
        assert response.json() == document(app.routes)
        page = await client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'spec-url="openapi.json"' in page.text
        script = await client.get("/ui/vendor/redoc/redoc.standalone.js")
        assert script.status_code == 200 and len(script.content) > 500_000
        assert (await client.get("/ui/vendor/redoc/LICENSE")).status_code == 200


class _Inner(TypedDict):
    #: how many
    n: int


class _Outer(TypedDict):
    #: the name,
    #: on two lines
    name: str | None
    inner: _Inner
    tags: list[str]
    extra: NotRequired[dict[str, float]]


def test_typed_dicts_become_schemas_with_their_comments() -> None:
    schemas = SchemaSet()
    assert schemas.of(_Outer) == {"$ref": "#/components/schemas/_Outer"}
    outer = schemas.components["_Outer"]
    assert outer["required"] == ["inner", "name", "tags"]
    assert outer["properties"]["name"] == {"anyOf": [{"type": "string"}, {"type": "null"}],
                                           "description": "the name, on two lines"}
    assert outer["properties"]["inner"] == {"$ref": "#/components/schemas/_Inner"}
    assert outer["properties"]["extra"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert schemas.components["_Inner"]["properties"]["n"] == {"type": "integer", "description": "how many"}


async def test_bad_review_bodies_are_422_naming_the_field(app: Starlette) -> None:
    async with asgi_client(app) as client:
        created = await client.post("/v1/jobs", json={"type": "demo.story", "input": {"topic": "x"}})
        job_id = created.json()["id"]
        for body, mentions in (({"note": 5}, "note"), ({"by": ""}, "by"), ({"colour": 1}, "colour")):
            response = await client.post(f"/v1/jobs/{job_id}/approve", json=body)
            assert response.status_code == 422, body
            assert mentions in response.json()["error"]["message"]


