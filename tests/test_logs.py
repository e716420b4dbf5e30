"""The two log formats and their settings (shared/logs.py); real processes in tests/integration/test_logs.py."""

from __future__ import annotations

import json
import logging
import os
import sys

import pytest

from shared.logs import JsonFormatter, TextFormatter, log_format, log_level
from shared.settings import SettingsError


def record(message: str = "job started", *args: object, name: str = "backlane.worker", **extra: object,
           ) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.INFO, __file__, 1, message, args or None, None)
    rec.__dict__.update(extra)
    return rec


def test_json_is_one_object_with_the_event_and_its_fields() -> None:
    rec = record(event="job.started", fields={"job_id": "j1", "attempt": 1, "message": "not this one"})
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "job started" and parsed["event"] == "job.started"
    assert parsed["job_id"] == "j1" and parsed["attempt"] == 1 and parsed["logger"] == "backlane.worker"
    assert parsed["level"] == "INFO" and parsed["time"].endswith("Z")


def test_json_carries_an_exception_on_the_same_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("backlane", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    parsed = json.loads(JsonFormatter().format(rec))
    assert "ValueError: boom" in parsed["exception"]


def test_uvicorn_access_lines_get_their_fields() -> None:
    rec = record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/v1/jobs", "1.1", 200, name="uvicorn.access")
    parsed = json.loads(JsonFormatter().format(rec))
    assert parsed["message"] == '127.0.0.1:5000 - "GET /v1/jobs HTTP/1.1" 200'
    assert (parsed["method"], parsed["path"], parsed["status"]) == ("GET", "/v1/jobs", 200)


def test_text_puts_the_fields_after_the_message_as_key_value() -> None:
    rec = record(event="job.failed", fields={"job_id": "j1", "error": 'a "quoted" message', "attempt": 2})
    line = TextFormatter().format(rec)
    assert line.endswith(f' INFO [{os.getpid()}] backlane.worker: job started job_id=j1 error="a \\"quoted\\" message" '
                         'attempt=2')


@pytest.mark.parametrize(("flag", "env", "expected"), [
    (None, {}, "text"), (None, {"BACKLANE_LOG_FORMAT": "JSON"}, "json"),
    ("text", {"BACKLANE_LOG_FORMAT": "json"}, "text"),
])
def test_the_format_comes_from_the_flag_then_the_environment(flag: str | None, env: dict[str, str],
                                                             expected: str) -> None:
    assert log_format(flag, env) == expected


def test_bad_settings_are_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="BACKLANE_LOG_FORMAT='yaml'"):
        log_format(None, {"BACKLANE_LOG_FORMAT": "yaml"})
    with pytest.raises(SettingsError, match="BACKLANE_LOG_LEVEL='chatty'"):
        log_level({"BACKLANE_LOG_LEVEL": "chatty"})
    assert log_level({"BACKLANE_LOG_LEVEL": "warning"}) == logging.WARNING
