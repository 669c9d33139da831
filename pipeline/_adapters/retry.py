"""The one place that waits before trying a call again, per a :class:`Backoff`.

The policy (how long, how often) is sans-IO in :mod:`pipeline._core.backoff`;
this is the thin part that sleeps on Trio's clock, logs each retry and tells
the service's observer. :func:`retry` is the loop for a single call; loops
whose notion of an attempt is their own (a batch where some entries went
through, a download resumed from where it broke off) keep their own progress
but wait through :func:`pause`, so every retry in the service draws its
jitter, logs, counts and sleeps the same way.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Protocol, TypeVar

import structlog
import trio

from pipeline._core.backoff import Backoff, DependencyHealth
from pipeline._errors import CircuitOpen, PermanentError, RetriesExhausted, TransientError

__all__ = ["RetryObserver", "observe_health", "observe_retries", "pause", "retry"]

T = TypeVar("T")
log = structlog.get_logger("pipeline.backoff")

# Jitter has its own generator: the module-level `random` functions share one
# state with anything else that seeds or draws from it (a test, a library).
_JITTER = random.Random()


class RetryObserver(Protocol):
    """Who hears about retries and breaker changes (the service's metrics)."""

    def retried(self, dependency: str) -> None:
        """One call to ``dependency`` ("s3", "sqs", "dynamodb", "export_api") is tried again."""

    def circuit_changed(self, dependency: str, is_open: bool) -> None:
        """The breaker in front of ``dependency`` opened or closed."""


# A context variable, not a module global: each service sets its own observer
# around its nursery, and Trio hands the context down to every task it starts.
_OBSERVER: ContextVar[RetryObserver | None] = ContextVar("pipeline_retry_observer", default=None)


@contextlib.contextmanager
def observe_retries(observer: RetryObserver) -> Iterator[None]:
    """Report the retries of every call made inside this block (and its tasks) to ``observer``."""
    token = _OBSERVER.set(observer)
    try:
        yield
    finally:
        _OBSERVER.reset(token)


# The health view every retried call reports its attempts to (the intake gate reads it).
_HEALTH: ContextVar[DependencyHealth | None] = ContextVar("pipeline_health", default=None)


@contextlib.contextmanager
def observe_health(health: DependencyHealth) -> Iterator[None]:
    """Record the outcome of every attempt made by :func:`retry` in this block in ``health``."""
    token = _HEALTH.set(health)
    try:
        yield
    finally:
        _HEALTH.reset(token)


def _attempted(dependency: str, *, ok: bool) -> None:
    health = _HEALTH.get()
    if health is not None:
        health.record(dependency, ok=ok)


def circuit_changed(dependency: str, is_open: bool) -> None:
    """Tell the current observer, if any, that ``dependency``'s breaker opened or closed."""
    observer = _OBSERVER.get()
    if observer is not None:
        observer.circuit_changed(dependency, is_open)


async def pause(
    policy: Backoff,
    attempt: int,
    *,
    dependency: str,
    what: str,
    error: str,
    retry_after: float | None = None,
    circuit_open: bool = False,
    rng: random.Random | None = None,
    failures: int | None = None,
) -> None:
    """Wait before attempt ``attempt + 1`` of ``what``, which failed with ``error``.

    The caller has already decided that there is a next attempt
    (``policy.gives_up_after(attempt)`` is false). A loop that never gives up,
    around calls that spent their own retries, passes its count of
    ``failures`` in a row: the line then says so, instead of calling a
    round an attempt beside an error that says "gave up after 6 attempts".
    """
    wait = policy.delay(attempt, retry_after, (rng or _JITTER).random())
    if failures is None:
        log.info(
            "retrying",
            dependency=dependency,
            what=what,
            attempt=attempt,
            wait_seconds=round(wait, 3),
            error=error,
            circuit_open=circuit_open,
        )
    else:
        log.warning(
            "failed again; trying later",
            dependency=dependency,
            what=what,
            failures_in_a_row=failures,
            wait_seconds=round(wait, 3),
            error=error,
        )
    observer = _OBSERVER.get()
    if observer is not None:
        observer.retried(dependency)
    await trio.sleep(wait)


async def retry(
    call: Callable[[], Awaitable[T]],
    policy: Backoff,
    *,
    what: str,
    dependency: str,
    rng: random.Random | None = None,
) -> T:
    """Run ``call`` until it succeeds, retrying :class:`TransientError` per ``policy``.

    A :class:`PermanentError` propagates at once. When the last attempt fails
    transiently, :class:`RetriesExhausted` is raised from it, naming ``what``
    and carrying the fault of the last error. Cancellation is never caught: a
    cancelled sleep simply ends the retries.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            result = await call()
        except PermanentError:
            # A refusal is the dependency answering: it is up.
            _attempted(dependency, ok=True)
            raise
        except TransientError as err:
            _attempted(dependency, ok=False)
            if policy.gives_up_after(attempt):
                msg = f"{what}: gave up after {attempt} attempts: {err}"
                raise RetriesExhausted(msg, fault=err.fault) from err
            await pause(
                policy,
                attempt,
                dependency=dependency,
                what=what,
                error=str(err),
                retry_after=err.retry_after,
                circuit_open=isinstance(err, CircuitOpen),
                rng=rng,
            )
        else:
            _attempted(dependency, ok=True)
            return result
