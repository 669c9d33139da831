"""EXPORT_API_RATE_PER_SECOND: every request to the Export API's own host waits its turn.

An httpx request hook, so every request the process sends to that host is
paced in one place, whichever call sends it (status, listing, downloads from
the API's host, resumes, retries), and one pacer is shared by every task of
the process. Requests to other hosts (presigned storage URLs) are not paced:
the limit is the Export API's. Waiting shapes the traffic; nothing fails.
"""

from __future__ import annotations

import httpx
import trio

from pipeline._adapters.exportapi.boundary import Origin
from pipeline._core.ratelimit import StartWindow

__all__ = ["Pacer"]


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
        async with self._turn:
            # Under the lock nobody else starts: after this wait a place is free.
            await trio.sleep(self._window.wait(trio.current_time()))
            self._window.start(trio.current_time())
