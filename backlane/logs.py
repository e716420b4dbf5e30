"""uvicorn's logging in every API process: its lines through the root logger, in Backlane's format.

``backlane api --workers N`` runs the app in processes uvicorn starts; each applies the ``log_config``
given here, so Backlane's own loggers are set up there too, in the format the command chose
(``shared/logs.py``; the choice reaches them as BACKLANE_LOG_FORMAT)."""

from __future__ import annotations

import logging
import os
from typing import Any

from shared.logs import log_format


def level() -> int:
    """The level main() set, for uvicorn too: its access log writes a line per request at INFO, which
    a server run at WARNING does not want (and pays for on every request)."""
    return logging.getLogger().getEffectiveLevel()


def uvicorn_config(log_level: int) -> dict[str, Any]:
    """uvicorn's ``log_config``: a stderr handler on the root logger with the chosen formatter."""
    formatter = "shared.logs.JsonFormatter" if log_format(None, os.environ) == "json" else "shared.logs.TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"backlane": {"()": formatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "backlane",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": log_level},
        "loggers": {name: {"handlers": [], "propagate": True}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }
