"""EXPORT_API_RATE_PER_SECOND: every request to the Export API's own host waits its turn.

An httpx request hook, so every request the process sends to that host is
paced in one place, whichever call sends it (status, listing, downloads from
the API's host, resumes, retries), and one pacer is shared by every task of
the process. Requests to other hosts (presigned storage URLs) are not paced:
the limit is the Export API's. Waiting shapes the traffic; nothing fails.

The turn is taken when the request's headers are about to be written on an
open connection (httpcore's ``trace`` extension), not when the request is
handed to the client: a request that first waits for a pooled connection or
opens one (the first requests do, later ones reuse kept-alive connections)
would otherwise reach the API later than it was counted, and arrive in one
second with requests counted in the next.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio

from pipeline._adapters.exportapi.boundary import Origin
from pipeline._core.ratelimit import StartWindow

__all__ = ["Pacer"]

Trace = Callable[[str, dict[str, Any]], Awaitable[None]]

# httpcore's trace events for "the request's first bytes go out now".
_SENDING = frozenset({"http11.send_request_headers.started", "http2.send_request_headers.started"})


class Pacer:
    """Holds requests to one origin to at most ``rate`` starts in any one-second window."""

    def __init__(self, base_url: str, rate: float) -> None:
        self._origin = Origin.of(httpx.URL(base_url))
        self._window = StartWindow(rate)
        # One waiter at a time: the window is checked and a start recorded as
        # one step, so two tasks never take the same free place.
        self._turn = trio.Lock()

    async def __call__(self, request: httpx.Request) -> None:
        if Origin.of(request.url) != self._origin:
            return
        outer: Trace | None = request.extensions.get("trace")

        async def trace(event: str, info: dict[str, Any]) -> None:
            if event in _SENDING:
                await self.take_turn()
            if outer is not None:
                await outer(event, info)

        request.extensions["trace"] = trace

    async def take_turn(self) -> None:
        """Wait until one more request may start, and count it as started now."""
        async with self._turn:
            # Under the lock nobody else starts: after this wait a place is free.
            await trio.sleep(self._window.wait(trio.current_time()))
            self._window.start(trio.current_time())
