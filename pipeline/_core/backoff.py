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

__all__ = ["AWS_POLICY", "Backoff", "CircuitBreaker", "DependencyHealth", "redelivery_delay"]


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


# The one policy of every AWS call (we retry, not botocore: its sleeps are
# asyncio's). Ceilings 0.25, 0.5, 1, 2 and 4 s between six attempts: at most
# 7.75 s of sleep in all, about 4 s on average, which rides out a throttling
# burst or an S3 "SlowDown". A longer outage is not waited out here: the work
# is handed back and comes again later (redelivery_delay).
AWS_POLICY = Backoff(max_attempts=6, base=0.25, cap=4.0)

# A message handed back after our own failure waits this long before its
# first redelivery, four times longer before each next one, up to the cap.
REDELIVERY_BASE_SECONDS = 30
REDELIVERY_FACTOR = 4
REDELIVERY_CAP_SECONDS = 3600


def redelivery_delay(receive_count: int, draw: float) -> int:
    """Seconds a message stays invisible after delivery ``receive_count`` failed on our side.

    The ceiling grows with each delivery (30 s, 2 min, 8 min, 32 min, then an
    hour), so an outage of ours costs a few deliveries spread over its length
    instead of a fast loop into the dead-letter queue. ``draw`` (uniform in
    [0, 1)) places the delay between half and all of the ceiling, so the
    messages of one outage do not all come back at the same moment.
    """
    if receive_count < 1:
        msg = f"receive_count must be at least 1, not {receive_count}"
        raise ValueError(msg)
    ceiling = min(
        REDELIVERY_CAP_SECONDS, REDELIVERY_BASE_SECONDS * REDELIVERY_FACTOR ** (receive_count - 1)
    )
    return max(1, int(ceiling * (0.5 + draw / 2)))


@attrs.define
class CircuitBreaker:
    """Stops calling a dependency for ``cooldown`` seconds when most recent calls failed.

    The breaker looks at the last ``window`` outcomes. When at least
    ``min_calls`` of them are known and more than ``failure_ratio`` failed, it
    opens; after ``cooldown`` it lets one call through (half-open) and that
    call's outcome decides: a success closes it, a failure opens it again.
    """

    window: int = 20
    min_calls: int = 10
    failure_ratio: float = 0.5
    cooldown: float = 15.0
    # How long a caller refused during a probe waits before asking again.
    probe_wait: float = 1.0
    _outcomes: deque[bool] = attrs.field(init=False, factory=deque)
    _open_until: float | None = attrs.field(init=False, default=None)
    _probe_since: float | None = attrs.field(init=False, default=None)

    def allows(self, now: float) -> bool:
        """Whether a call may be made at time ``now``; counts it as the probe when half-open.

        Half-open admits one call at a time: the probe. Every other caller is
        refused until the probe's outcome is recorded (or, if it never is, a
        cooldown later), so a recovering dependency is not hit by everyone
        who waited.
        """
        if self._open_until is None:
            return True
        if now < self._open_until:
            return False
        if self._probe_since is not None and now - self._probe_since < self.cooldown:
            return False
        self._probe_since = now
        return True

    def retry_after(self, now: float) -> float:
        """Seconds until the breaker may let a call through again."""
        if self._open_until is None:
            return 0.0
        if self._probe_since is not None:
            return max(0.0, min(self.probe_wait, self._probe_since + self.cooldown - now))
        return max(0.0, self._open_until - now)

    def record(self, ok: bool, now: float) -> None:
        """Record one call's outcome at time ``now``."""
        if self._open_until is not None and now >= self._open_until:
            # Half-open: this outcome alone decides.
            self._open_until = None
            self._probe_since = None
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


@attrs.define
class DependencyHealth:
    """Which dependencies are failing, as the attempts of their calls tell.

    A dependency is failing once ``threshold`` attempts in a row, across all
    its calls, failed transiently (by default as many as one call's whole
    retry policy); any answer clears it. A throttling burst that some calls
    ride out therefore never counts, an outage does within seconds. The
    intake gate reads it; it decides nothing by itself.
    """

    threshold: int = AWS_POLICY.max_attempts
    _streaks: dict[str, int] = attrs.field(init=False, factory=dict)

    def record(self, dependency: str, *, ok: bool) -> None:
        """One attempt of a call to ``dependency`` answered (``ok``) or failed transiently."""
        self._streaks[dependency] = 0 if ok else self._streaks.get(dependency, 0) + 1

    def is_failing(self, dependency: str) -> bool:
        """Whether ``dependency`` has failed ``threshold`` attempts in a row."""
        return self._streaks.get(dependency, 0) >= self.threshold
