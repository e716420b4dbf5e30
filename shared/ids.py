"""Job ids: 32 hex digits, safe inside a Redis key and a URL (``shared/shards.new_job_id`` makes them)."""

from __future__ import annotations

import re

JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def is_job_id(value: str) -> bool:
    return bool(JOB_ID.match(value))
