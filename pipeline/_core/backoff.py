"""When to try again: exponential backoff with full jitter, and a circuit breaker.

Full jitter (a uniform draw between zero and the exponential ceiling) spreads the
retries of many workers that failed together, which is what a throttled API or a
restarted S3 partition needs; the ceiling doubles per attempt up to ``cap``. A
``Retry-After`` from the server is a floor: we never come back sooner than asked.

The policy and the breaker are pure: they take the attempt number, the clock and
the random draw as arguments, so tests drive them without time passing. The loop
that sleeps between attempts is :func:`pipeline._adapters.retry.retry`.
"""

from __future__ import annotations

from collections import deque

import attrs

__all__ = ["Backoff", "CircuitBreaker"]


@attrs.frozen
class Backoff:
    """How often and how long to wait between attempts of one call."""

    max_attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    # A server may ask for an absurd Retry-After; waiting an hour in a file
    # worker is worse than failing the file, so the ask is capped too.
    max_retry_after: float = 120.0

    def __attrs_post_init__(self) -> None:
        if self.max_attempts < 1:
            msg = f"max_attempts must be at least 1, not {self.max_attempts}"
            raise ValueError(msg)

    def delay(self, attempt: int, retry_after: float | None, draw: float) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        ``draw`` is a uniform random number in [0, 1).
        """
        ceiling = min(self.cap, self.base * 2.0 ** (attempt - 1))
        wait = draw * ceiling
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return wait

    def gives_up_after(self, attempt: int) -> bool:
        """Whether attempt number ``attempt`` was the last one allowed."""
        return attempt >= self.max_attempts


@attrs.define
class CircuitBreaker:
    """Stops calling a dependency for ``cooldown`` seconds when most recent calls failed.

    The breaker looks at the last ``window`` outcomes. When at least
    ``min_calls`` of them are known and more than ``failure_ratio`` failed, it
    opens; after ``cooldown`` it lets calls through again (half-open) and the
    next outcome decides: a success closes it, a failure opens it again.
    """

    window: int = 20
    min_calls: int = 10
    failure_ratio: float = 0.5
    cooldown: float = 15.0
    _outcomes: deque[bool] = attrs.field(init=False, factory=deque)
    _open_until: float | None = attrs.field(init=False, default=None)

    def allows(self, now: float) -> bool:
        """Whether a call may be made at time ``now``."""
        return self._open_until is None or now >= self._open_until

    def retry_after(self, now: float) -> float:
        """Seconds until the breaker lets calls through again."""
        return 0.0 if self._open_until is None else max(0.0, self._open_until - now)

    def record(self, ok: bool, now: float) -> None:
        """Record one call's outcome at time ``now``."""
        if self._open_until is not None and now >= self._open_until:
            # Half-open: this outcome alone decides.
            self._open_until = None
            self._outcomes.clear()
            if not ok:
                self._open_until = now + self.cooldown
                return
        self._outcomes.append(ok)
        while len(self._outcomes) > self.window:
            self._outcomes.popleft()
        failures = self._outcomes.count(False)
        if len(self._outcomes) >= self.min_calls and failures > self.failure_ratio * len(
            self._outcomes
        ):
            self._open_until = now + self.cooldown
            self._outcomes.clear()

    @property
    def is_open(self) -> bool:
        """Whether the breaker is currently refusing (or about to half-open)."""
        return self._open_until is not None
