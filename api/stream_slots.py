"""A cap on the event streams one tenant holds open in one API process.

Each open stream holds a connection, a hub subscription and a queue: without a cap, one tenant's
runaway client (a reconnect loop, a page opened a thousand times) could use up the process for every
tenant. A stream takes a slot before its response is sent and gives it back when the response ends,
however it ends (finished, client gone, server stopping), also when its body never started. Counted
per process: N API processes allow N times the cap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .errors import RateLimited

#: what a refused client is told to wait before trying again
RETRY_AFTER_S = 5


class StreamSlots:
    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._open: Counter[str] = Counter()

    def open(self, tenant: str) -> int:
        return self._open[tenant]

    def hold(self, tenant: str, response: Response) -> Response:
        """``response``, holding one of ``tenant``'s slots until it ends; 429 when none is free."""
        if self._open[tenant] >= self.per_tenant:
            raise RateLimited(
                f"this tenant already has {self.per_tenant} event streams open on this API process "
                "(BACKLANE_SSE_MAX_PER_TENANT): close one, or retry later", RETRY_AFTER_S)
        self._open[tenant] += 1
        return _Held(response, lambda: self._release(tenant))

    def _release(self, tenant: str) -> None:
        self._open[tenant] -= 1
        if self._open[tenant] <= 0:
            del self._open[tenant]


class _Held(Response):
    """Sends the wrapped response, then gives its slot back."""

    def __init__(self, inner: Response, release: Callable[[], None]) -> None:
        self.inner, self.release = inner, release
        self.status_code, self.raw_headers, self.background = inner.status_code, inner.raw_headers, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.inner(scope, receive, send)
        finally:
            self.release()
