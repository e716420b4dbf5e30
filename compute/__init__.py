"""What a handler module needs: ``from compute import job_type, JobContext, TransientError``.

The error tree (see ``compute.errors``) decides what happens after a failure::

    JobError
    ├── InputError       fail, no retry
    ├── TransientError   retry with back-off (retry_after= wins)
    ├── PolicyError      fail, no retry
    ├── DeadlineError    fail (or retry if the type sets retry_on_deadline)
    └── InternalError    fail, no automatic retry
"""

from .context import JobContext, LeaseLost
from .errors import DeadlineError, InputError, InternalError, JobError, PolicyError, TransientError, classify
from .registry import JobType, job_type
from .steps import Retry

__all__ = [
    "DeadlineError",
    "InputError",
    "InternalError",
    "JobContext",
    "JobError",
    "JobType",
    "LeaseLost",
    "PolicyError",
    "Retry",
    "TransientError",
    "classify",
    "job_type",
]
