"""Waiting on state another process holds (moto, a service's HTTP side).

Such state has no event a test could await, so it is asked again until it
holds: here, and only here, outside ``tests/system`` (``test_layout`` keeps it
so). What runs in the test's own process is awaited on its events instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

T = TypeVar("T")


def poll_interval(waited: float) -> float:
    """How long a poll waits before the next, ``waited`` seconds into it.

    A tenth of a second for the first two, a quarter after: a read of moto costs
    about 7 ms of CPU (the worker's and moto's), and the suite has hundreds of
    waits for jobs that take several seconds (system tests, run concurrently).
    """
    return 0.1 if waited < 2 else 0.25


async def eventually(probe: Callable[[], Awaitable[T | None]], *, within: float) -> T:
    """The first truthy answer of ``probe``; ``trio.TooSlowError`` once ``within``
    seconds pass without one."""
    started = trio.current_time()
    with trio.fail_after(within):
        while True:
            answer = await probe()
            if answer:
                return answer
            await trio.sleep(poll_interval(trio.current_time() - started))
