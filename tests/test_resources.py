"""BACKLANE_RESOURCES: parsed into limits, or start-up stops naming the resource and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from compute.registry import job_type
from shared.jobtypes import OPENAI_RESPONSES, JobTypePolicy
from shared.resources import ResourceLimit, resolve
from shared.settings import Settings, SettingsError


def test_resources_parse_from_json_with_every_field_optional() -> None:
    s = Settings.from_env({"BACKLANE_RESOURCES": '{"openai:gpt-4.1-mini": {"concurrency": 20, "requests": 500, '
                                                  '"tokens": 200000, "window_s": 60}, "search": {}}'})
    assert s.resources["openai:gpt-4.1-mini"] == ResourceLimit("openai:gpt-4.1-mini", concurrency=20, requests=500,
                                                               tokens=200000, window_s=60.0)
    assert s.resources["search"] == ResourceLimit("search")
    assert Settings.from_env({}).resources == {}


def test_resources_may_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "resources.json"
    path.write_text('{"db": {"concurrency": 2}}')
    assert Settings.from_env({"BACKLANE_RESOURCES": f"@{path}"}).resources["db"].concurrency == 2


@pytest.mark.parametrize("raw, message", [
    ('{"openai:x": {"window_s": -1}}', "BACKLANE_RESOURCES: openai:x.window_s must be a positive number, got -1"),
    ('{"openai:x": {"window_s": "60"}}', "openai:x.window_s must be a positive number, got '60'"),
    ('{"db": {"concurrency": 0}}', "db.concurrency must be a positive integer, got 0"),
    ('{"db": {"requests": 1.5}}', "db.requests must be a positive integer, got 1.5"),
    ('{"db": {"tokens": true}}', "db.tokens must be a positive integer, got True"),
    ('{"db": {"rps": 5}}', "db.rps is not a known field"),
    ('{"db": 5}', "db must be an object of limits"),
    ('{"a{b}": {}}', "'a{b}' is not a resource name"),
    ("[1]", "expected an object of resources"),
    ("{nope", "not valid JSON"),
    ("@/nonexistent/resources.json", "cannot read '/nonexistent/resources.json'"),
])
def test_a_bad_resources_setting_names_what_is_wrong(raw: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"BACKLANE_RESOURCES": raw})
    assert message in str(caught.value)


def test_a_type_declares_what_it_uses_and_placeholders_fill_from_the_input() -> None:
    @job_type("test.uses", uses=["search", "openai:{model}"])
    async def handler(ctx: object) -> None:
        return None

    assert handler.policy.uses == ("search", "openai:{model}")
    assert JobTypePolicy.from_json(handler.policy.to_json()).uses == handler.policy.uses
    assert resolve(handler.policy.uses, {"model": "gpt-4.1-mini"}) == ("search", "openai:gpt-4.1-mini")
    assert resolve(handler.policy.uses, {}) == ("search",)  # no model: that resource is left out
    assert OPENAI_RESPONSES.uses == ("openai:{model}",)
    with pytest.raises(ValueError, match="not a resource name"):
        job_type("test.bad", uses=["a b"])(handler.handler)
    with pytest.raises(ValueError, match="a list of resource names"):
        job_type("test.bad", uses="search")(handler.handler)
