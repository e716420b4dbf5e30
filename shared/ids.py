"""Job ids: unguessable, and safe inside a Redis hash tag and a URL."""

from __future__ import annotations

import re
import secrets

JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def new_job_id() -> str:
    """128 random bits, hex: unguessable and safe inside a Redis hash tag and a URL."""
    return secrets.token_hex(16)


def is_job_id(value: str) -> bool:
    return bool(JOB_ID.match(value))
