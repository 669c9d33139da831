"""The one loop that tries a call again: sleeps between attempts per a :class:`Backoff`.

The policy (how long, how often) is sans-IO in :mod:`pipeline._core.backoff`;
this is the thin part that sleeps on Trio's clock and logs each retry.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
import trio

from pipeline._core.backoff import Backoff
from pipeline._errors import CircuitOpen, RetriesExhausted, TransientError

__all__ = ["retry"]

T = TypeVar("T")
log = structlog.get_logger("pipeline.backoff")


async def retry(
    call: Callable[[], Awaitable[T]],
    policy: Backoff,
    *,
    what: str,
    rng: random.Random | None = None,
) -> T:
    """Run ``call`` until it succeeds, retrying :class:`TransientError` per ``policy``.

    A :class:`PermanentError` propagates at once. When the last attempt fails
    transiently, :class:`RetriesExhausted` is raised from it, naming ``what``.
    Cancellation is never caught: a cancelled sleep simply ends the retries.
    """
    draw = (rng or random).random
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except TransientError as err:
            if policy.gives_up_after(attempt):
                msg = f"{what}: gave up after {attempt} attempts: {err}"
                raise RetriesExhausted(msg, fault=err.fault) from err
            wait = policy.delay(attempt, err.retry_after, draw())
            log.info(
                "retrying",
                what=what,
                attempt=attempt,
                wait_seconds=round(wait, 3),
                error=str(err),
                circuit_open=isinstance(err, CircuitOpen),
            )
            await trio.sleep(wait)
