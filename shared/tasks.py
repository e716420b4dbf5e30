"""Stopping background tasks for certain.

On Python 3.11, ``asyncio.wait_for`` (inside redis-py's command send, and so inside ``subscribe`` and
``XREAD``) swallows a cancel that lands just as the awaited call completes; the task then goes on
reading or listening for ever. Cancelling once is not enough: cancel until the task has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RECANCEL_S = 0.1


async def cancel_until_done(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancels ``tasks`` and waits for them all, cancelling again any that shrugged a cancel off."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
