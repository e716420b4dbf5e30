"""Named resources and their limits: what ``BACKLANE_RESOURCES`` declares and job types use.

    BACKLANE_RESOURCES='{"openai:gpt-4.1-mini": {"concurrency": 20, "requests": 500,
                                                 "tokens": 200000, "window_s": 60}}'
    (or '@/etc/backlane/resources.json')

Every field is optional: a resource without ``requests`` admits any number of calls, one without
``concurrency`` any number of running jobs. A job type names what it uses (``uses=[...]``); a name may
hold ``{field}`` placeholders filled from the job's input (``openai:{model}``), so one type can use
the resource of the model each job asks for. A name that no operator configured has no limits.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: what a resource may be called: it goes into Redis key names (between braces, as a hash tag)
NAME = re.compile(r"^[A-Za-z0-9._:/@+-]{1,120}$")
#: a ``{field}`` placeholder of a type's ``uses``, filled from the job's input
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_WINDOW_S = 60.0
DEFAULT_BREAKER_FAILURES = 5
DEFAULT_BREAKER_OPEN_S = 30.0


class ResourcesError(ValueError):
    """``BACKLANE_RESOURCES`` cannot be used; the message names the resource and the field."""


@dataclass(frozen=True)
class ResourceLimit:
    name: str
    #: jobs using it that may run at once, over every worker (None: no limit); enforced at claim
    concurrency: int | None = None
    #: calls admitted per window (None: no limit); enforced per call by ``ctx.limit``
    requests: int | None = None
    #: tokens admitted per window (estimates, settled to the real count after each call)
    tokens: int | None = None
    window_s: float = DEFAULT_WINDOW_S
    #: transient failures in a row that open the breaker, and how long it stays open before one probe
    breaker_failures: int = DEFAULT_BREAKER_FAILURES
    breaker_open_s: float = DEFAULT_BREAKER_OPEN_S

    @property
    def window_ms(self) -> int:
        return max(1, int(self.window_s * 1000))

    def to_json(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "requests": self.requests, "tokens": self.tokens,
                "window_s": self.window_s, "breaker_failures": self.breaker_failures,
                "breaker_open_s": self.breaker_open_s}


def _positive_int(name: str, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ResourcesError(f"{name}.{field} must be a positive integer, got {value!r}")
    return value


def _positive_number(name: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ResourcesError(f"{name}.{field} must be a positive number, got {value!r}")
    return float(value)


FIELDS = {"concurrency": _positive_int, "requests": _positive_int, "tokens": _positive_int,
          "window_s": _positive_number, "breaker_failures": _positive_int, "breaker_open_s": _positive_number}


def parse(raw: str) -> dict[str, ResourceLimit]:
    """The resources of ``BACKLANE_RESOURCES``: JSON, or ``@path`` of a JSON file."""
    text = raw.strip()
    if not text:
        return {}
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise ResourcesError(f"cannot read {text[1:]!r}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ResourcesError(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ResourcesError('expected an object of resources, e.g. {"openai:gpt-4.1-mini": {"requests": 500}}')
    resources: dict[str, ResourceLimit] = {}
    for name, spec in data.items():
        if not NAME.match(name):
            raise ResourcesError(f"{name!r} is not a resource name (1 to 120 of A-Z a-z 0-9 . _ : / @ + -)")
        if not isinstance(spec, dict):
            raise ResourcesError(f"{name} must be an object of limits, got {spec!r}")
        unknown = sorted(set(spec) - set(FIELDS))
        if unknown:
            raise ResourcesError(f"{name}.{unknown[0]} is not a known field (known: {', '.join(FIELDS)})")
        values: dict[str, Any] = {field: FIELDS[field](name, field, value)
                                  for field, value in spec.items() if value is not None}
        resources[name] = ResourceLimit(name=name, **values)
    return resources


def check_uses(uses: Iterable[str]) -> tuple[str, ...]:
    """A type's ``uses`` as declared: resource names, each possibly with ``{field}`` placeholders."""
    if isinstance(uses, str):
        raise ValueError("uses must be a list of resource names, not one string")
    names = tuple(uses)
    for name in names:
        if not isinstance(name, str) or not NAME.match(PLACEHOLDER.sub("x", name)):
            raise ValueError(f"uses: {name!r} is not a resource name (placeholders like {{model}} allowed)")
    return names


def resolve(uses: Iterable[str], job_input: Any) -> tuple[str, ...]:
    """The resources one job uses: its type's ``uses`` with placeholders filled from its input. A
    placeholder whose field is missing (or not a plain string) leaves that resource out."""
    out: list[str] = []
    for template in uses:
        if "{" not in template:
            out.append(template)
            continue
        missing = False

        def fill(match: re.Match[str]) -> str:
            nonlocal missing
            value = job_input.get(match.group(1)) if isinstance(job_input, Mapping) else None
            if not isinstance(value, str) or not value:
                missing = True
                return ""
            return value

        name = PLACEHOLDER.sub(fill, template)
        if not missing and NAME.match(name):
            out.append(name)
    return tuple(dict.fromkeys(out))
