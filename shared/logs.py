"""Log lines: one per event in a job's life, and every line (uvicorn's too) in one of two formats.

    text  2026-12-02 16:55:00,123 INFO [4021] backlane.worker: job started job_id=3f1c… type=demo.story
          tenant=acme attempt=1 worker=vm:4021:9ae1c2
    json  {"time":"2026-12-02T16:55:00.123Z","level":"INFO","logger":"backlane.worker","pid":4021,
           "message":"job started","event":"job.started","job_id":"3f1c…","type":"demo.story",…}

``--log-format`` on every command, else ``BACKLANE_LOG_FORMAT``, else text; ``configure_logging`` sets
the root logger up once, and uvicorn logs through it (``backlane/logs.py``: in every API process). The events, each
with ``job_id``, ``type``, ``tenant``, ``attempt`` and ``worker`` where known:

    job.created         backlane.api         a submit (or a retry) made a new job
    job.started         backlane.worker      an attempt began on this worker
    job.completed       backlane.worker      completed (``reason: applied`` after an apply step)
    job.needs_review    backlane.worker      the handler finished; a person decides
    job.retried         backlane.worker      failed, and queued again after ``retry_in_ms``
    job.failed          backlane.worker      failed for good (``error_class``)
    job.canceled        backlane.api/worker  stopped on a cancel request (queued: the API; running:
                                             the worker, once the handler stopped)
    job.handed_back     backlane.worker      a draining worker gave the job back to its queue
    job.stale_write     backlane.worker      a write of an attempt that no longer holds the job was
                                             refused (its lease passed and the job moved on)
    job.refused         backlane.worker      an ending the status table refused (the job moved on)
    job.worker_lost     backlane.supervisor  the worker stopped beating or its lease passed: the job
                                             is restarted, failed or canceled (``outcome``)
    webhook.given_up    backlane.webhooks    a status event's delivery was given up (``seq``)

A job writes a handful of lines over its life, never one per output or progress event; a logger
below the event's level pays one ``isEnabledFor`` check and nothing more.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import orjson

from .serialization import rfc3339
from .settings import PREFIX, SettingsError

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
#: the fields of uvicorn's access log line, by position in its arguments
ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def log_event(logger: logging.Logger, level: int, event: str, message: str, **fields: Any) -> None:
    """One event line: ``message`` for people, ``event`` and ``fields`` for machines (None fields left out)."""
    if not logger.isEnabledFor(level):
        return
    # made and handed on directly: logger.log() would walk the stack for the caller's file and line
    # (a third of a line's cost), which an event line does not need
    record = logger.makeRecord(logger.name, level, "", 0, message, (), None, extra={
        "event": event, "fields": {k: v for k, v in fields.items() if v is not None}})
    logger.handle(record)


def job_event(logger: logging.Logger, event: str, message: str, *, job_id: str, job_type: str, tenant: str,
              attempt: int | None = None, worker: str | None = None, level: int = logging.INFO,
              **more: Any) -> None:
    """An event of one job's life (see the module docstring for the names)."""
    if logger.isEnabledFor(level):
        log_event(logger, level, event, message, job_id=job_id, type=job_type, tenant=tenant, attempt=attempt,
                  worker=worker, **more)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = getattr(record, "fields", None) or {}
    if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == len(ACCESS_FIELDS):
        fields = dict(zip(ACCESS_FIELDS, record.args, strict=True))
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, event (when the line is one), the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": rfc3339(int(record.created * 1000)), "level": record.levelname,
                                "logger": record.name, "pid": record.process, "message": record.getMessage()}
        if event := getattr(record, "event", None):
            line["event"] = event
        for name, value in _fields(record).items():
            line.setdefault(name, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """The plain format, with an event's fields after the message as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = getattr(record, "fields", None)
        if not fields:
            return text
        return text + "".join(f" {name}={_text_value(value)}" for name, value in fields.items())


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    # a value with a space or a quote is quoted, so the line still splits into key=value pairs
    return orjson.dumps(text).decode() if not text or any(c in text for c in ' "=\n') else text


def log_format(flag: str | None, env: Mapping[str, str]) -> str:
    """The format asked for: the flag, else BACKLANE_LOG_FORMAT, else text. A bad value stops start-up."""
    if flag is not None:
        return flag
    raw = env.get(PREFIX + "LOG_FORMAT") or "text"
    if raw.strip().lower() not in LOG_FORMATS:
        raise SettingsError(f"{PREFIX}LOG_FORMAT={raw!r}: expected {' or '.join(LOG_FORMATS)}")
    return raw.strip().lower()


def log_level(env: Mapping[str, str]) -> int:
    """BACKLANE_LOG_LEVEL (a level name: DEBUG, INFO, WARNING, ERROR, CRITICAL), default INFO."""
    raw = env.get(PREFIX + "LOG_LEVEL") or "INFO"
    level = logging.getLevelNamesMapping().get(raw.strip().upper())
    if level is None:
        raise SettingsError(f"{PREFIX}LOG_LEVEL={raw!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def configure_logging(flag: str | None, env: Mapping[str, str]) -> None:
    """The root logger writes to stderr in the chosen format at BACKLANE_LOG_LEVEL. As with
    ``logging.basicConfig``, a root logger that already has handlers (an embedding program's, pytest's)
    keeps them; only its level is set."""
    fmt, level = log_format(flag, env), log_level(env)
    # the processes this one starts (backlane api --workers N) log alike
    os.environ[PREFIX + "LOG_FORMAT"] = fmt
    root = logging.getLogger()
    root.setLevel(level)
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
