"""How fast requests may begin: at most N starts in any one-second window.

A sliding log of recent start times, not a token bucket: a bucket lets a burst
of its whole capacity through at once after a quiet spell, and two bursts can
then fall in one second. Here a request may start only when fewer than
``capacity`` starts lie in the ``window`` before it, so no window of that
length ever holds more, bursts included. Rates of one or more a second allow
``floor(rate)`` starts a second; slower rates allow one start every
``1 / rate`` seconds.

Starts are also spread: one every ``window / capacity`` seconds at most (0.2 s
at a rate of 5). A burst let through at once reaches the other side spread out
by its own queueing (the last of five answered a quarter second after the
first on a loaded machine), and could then meet the next burst inside one
second at the far end; requests sent one by one arrive as they were sent.
"""

from __future__ import annotations

import math
from collections import deque

import attrs

__all__ = ["StartWindow"]

# A request reaches the other side a little after it starts here, some later
# than others (a connection to open, a busy loop): a window's worth of starts
# is kept this much further apart, so the arrivals keep to the rate too. 0.1 s
# was not enough on two busy cores (7 arrivals in a second at a rate of 5).
_EDGE = 0.25


@attrs.define
class StartWindow:
    """The starts of the last window, and how long the next one must wait (sans-IO)."""

    rate: float
    _starts: deque[float] = attrs.field(init=False, factory=deque)

    def __attrs_post_init__(self) -> None:
        if not self.rate > 0:
            msg = f"rate must be greater than 0, not {self.rate}"
            raise ValueError(msg)

    @property
    def capacity(self) -> int:
        """Starts allowed per window."""
        return max(1, math.floor(self.rate))

    @property
    def window(self) -> float:
        """The window's length in seconds."""
        return 1.0 if self.rate >= 1 else 1.0 / self.rate

    def wait(self, now: float) -> float:
        """Seconds until a request may start at ``now`` (0 when it may start now)."""
        # A start leaves the window at the very moment wait() named for it (the
        # 1e-9 absorbs the float rounding of having slept exactly that long).
        while self._starts and self._starts[0] + self.window + _EDGE <= now + 1e-9:
            self._starts.popleft()
        # The last start is still in the log: the spacing is shorter than the window.
        spaced = self._starts[-1] + self.spacing - now if self._starts else 0.0
        if len(self._starts) < self.capacity:
            return max(0.0, spaced)
        return max(spaced, self._starts[0] + self.window + _EDGE - now)

    @property
    def spacing(self) -> float:
        """The least time between two starts."""
        return self.window / self.capacity

    def start(self, now: float) -> None:
        """Record a request that starts at ``now`` (after :meth:`wait` said 0)."""
        self._starts.append(now)
