"""How every Backlane process logs: one line format, with the id of the process that wrote it
(``backlane api --workers N`` runs several processes behind one port; the log says which answered)."""

from __future__ import annotations

import logging
import os
from typing import Any

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def configure() -> None:
    logging.basicConfig(level=os.environ.get("BACKLANE_LOG_LEVEL", "INFO"), format=FORMAT)


def level() -> int:
    """BACKLANE_LOG_LEVEL as configure() set it, for uvicorn too: its access log writes a line per
    request at INFO, which a server run at WARNING does not want (and pays for on every request)."""
    return logging.getLogger().getEffectiveLevel()


def uvicorn_config(log_level: int) -> dict[str, Any]:
    """uvicorn's ``log_config``: its lines in our format, through the root logger. uvicorn applies it
    in each process it starts, so Backlane's own loggers are set up there too."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"backlane": {"format": FORMAT}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "backlane",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": log_level},
        "loggers": {name: {"handlers": [], "propagate": True}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }
