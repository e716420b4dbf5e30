"""Job types as a worker serves them: a policy (shared with the API) plus the handler.

A module offers job types by defining ``JobType`` values at module level, usually with the
``job_type`` decorator; ``backlane worker --import pkg.module`` collects every one it finds, so
there is no global registry to reset between tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any

from shared.jobtypes import JobTypePolicy

if TYPE_CHECKING:
    from .context import JobContext

Handler = Callable[["JobContext"], Awaitable[Any]]
#: runs once after approval with the approved result; its return value is recorded as `applied`
ApplyStep = Callable[["JobContext", Any], Awaitable[Any]]


@dataclass(frozen=True)
class JobType:
    policy: JobTypePolicy
    handler: Handler
    apply: ApplyStep | None = None

    @property
    def name(self) -> str:
        return self.policy.name


def job_type(
    name: str, *, policy: JobTypePolicy | None = None, apply: ApplyStep | None = None, **fields: Any
) -> Callable[[Handler], JobType]:
    """Declares a handler: ``@job_type("reports.weekly", max_attempts=5, timeout_s=600)``.

    ``apply`` is the side effect that runs once after a person approves the handler's result. It
    runs at most once unless the type says ``apply_idempotent=True`` (it then gets retries, with
    the same ``ctx.idempotency_key`` on every try).
    """

    def wrap(handler: Handler) -> JobType:
        # without max_attempts here, the operator's BACKLANE_DEFAULT_MAX_ATTEMPTS applies (a given policy
        # keeps its own)
        base = policy or JobTypePolicy(name=name, description=(handler.__doc__ or "").strip().split("\n")[0],
                                       max_attempts_default="max_attempts" not in fields)
        return JobType(policy=replace(base, name=name, has_apply=apply is not None, **fields),
                       handler=handler, apply=apply)

    return wrap


def collect(module: ModuleType) -> list[JobType]:
    return [value for value in vars(module).values() if isinstance(value, JobType)]


def load(module_names: list[str]) -> dict[str, JobType]:
    """Imports each module and returns its job types by name; a name served twice is an error."""
    types: dict[str, JobType] = {}
    for module_name in module_names:
        for jt in collect(importlib.import_module(module_name)):
            if jt.name in types and types[jt.name] is not jt:
                raise ValueError(f"job type {jt.name!r} is defined twice (again in {module_name})")
            types[jt.name] = jt
    return types


BUILTIN_MODULES = ["compute.types.demo", "compute.types.demo_agent", "compute.types.openai_responses",
                   "compute.types.openai_batch"]
