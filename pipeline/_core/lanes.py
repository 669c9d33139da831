"""Two lanes of work sharing one stage's slots: who gets the next free slot.

A stage (export jobs, or download tasks) may read two queues, a normal one and
a high one (``SQS_EXPORT_JOBS_HIGH_URL``, ``SQS_DOWNLOAD_TASKS_HIGH_URL``).
Their receivers share the stage's slots (``MAX_CONCURRENT_JOBS``), and this
policy decides, each time a slot is free and receivers of both lanes wait,
which lane takes it and how many at once:

- High first: a waiting high receiver gets free slots before a normal one.
- No starvation: while both lanes have work, at most
  ``NORMAL_SHARE - 1`` slots in a row go to high; the next goes to normal.
  So normal work gets at least one slot in ``NORMAL_SHARE`` of those handed
  out, and the same share of the capacity when jobs last alike.
- Knowing there is work costs a poll, and a poll must hold the slots its
  messages will run on (a receiver never takes a message it cannot start).
  A lane whose last poll found nothing is *idle*: it polls with one slot and
  one receiver at most, and keeps that slot from one empty poll to the next,
  so new work on it is seen within one long poll whatever the other lane is
  doing. That one slot is the price: a process whose high lane is idle runs
  at most ``MAX_CONCURRENT_JOBS - 1`` normal messages at once.

With one lane none of this applies: a waiting receiver takes as many free
slots as it asks for, as it always did. The policy is a small state machine
over plain values; the trio side (``_service/receiver.py``'s ``Slots``)
parks and wakes receivers as it says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

import attrs

__all__ = ["NORMAL_SHARE", "Grant", "LanePolicy", "Priority"]

# Normal work gets at least one slot in this many while both lanes have work.
NORMAL_SHARE = 4


class Priority(StrEnum):
    """A message's lane: ``"priority"`` in its body (default normal)."""

    NORMAL = "normal"
    HIGH = "high"


@attrs.frozen
class Grant:
    """``count`` free slots go to the first waiting receiver of ``lane``."""

    lane: Priority
    count: int


@attrs.define
class LanePolicy:
    """Which lane's receiver takes free slots; see the module docstring."""

    lanes: tuple[Priority, ...]
    # Whether the lane's last poll found work; unknown (idle) at start, so the
    # first poll of each lane holds one slot and finds out.
    _busy: dict[Priority, bool] = attrs.field(init=False)
    # Receivers of the lane holding slots for a poll (taken, not yet polled).
    _polling: dict[Priority, int] = attrs.field(init=False)
    # Slots given to high in a row while normal was waiting for one.
    _high_run: int = attrs.field(init=False, default=0)

    @classmethod
    def of(cls, lanes: Iterable[Priority]) -> LanePolicy:
        """A policy for these lanes (normal, and high when configured)."""
        return cls(tuple(dict.fromkeys(lanes)))

    def __attrs_post_init__(self) -> None:
        if not self.lanes:
            msg = "a LanePolicy needs at least one lane"
            raise ValueError(msg)
        self._busy = dict.fromkeys(self.lanes, False)
        self._polling = dict.fromkeys(self.lanes, 0)

    @property
    def shared(self) -> bool:
        """More than one lane: the rules above apply."""
        return len(self.lanes) > 1

    def busy(self, lane: Priority) -> bool:
        """Whether ``lane``'s last poll found work."""
        return self._busy[lane]

    def _wants(self, lane: Priority, up_to: int) -> int:
        """How many slots ``lane``'s first waiting receiver may take now (0: none)."""
        if not self.shared or self._busy[lane]:
            return up_to
        # Idle: one receiver polls, with one slot.
        return 0 if self._polling[lane] else min(up_to, 1)

    def grant(self, free: int, waiting: Mapping[Priority, int]) -> Grant | None:
        """Who takes how many of ``free`` slots; ``waiting`` maps each lane with a
        waiting receiver to what its first one asks for. None: no one, for now.

        The grant counts as taken: the receiver polls with it and then tells
        :meth:`polled` what it found.
        """
        if free < 1:
            return None
        wants = {lane: self._wants(lane, up_to) for lane, up_to in waiting.items()}
        wants = {lane: n for lane, n in wants.items() if n > 0}
        if not wants:
            return None
        high, normal = wants.get(Priority.HIGH, 0), wants.get(Priority.NORMAL, 0)
        if high and normal:
            if self._high_run >= NORMAL_SHARE - 1:
                lane, count = Priority.NORMAL, 1
                self._high_run = 0
            else:
                lane = Priority.HIGH
                count = min(free, high, NORMAL_SHARE - 1 - self._high_run)
                self._high_run += count
        else:
            lane = Priority.HIGH if high else Priority.NORMAL
            count = min(free, wants[lane])
            if lane is Priority.NORMAL:
                self._high_run = 0
        self._polling[lane] += 1
        return Grant(lane, count)

    def polled(self, lane: Priority, held: int, received: int | None) -> int:
        """A receiver of ``lane`` polled with ``held`` slots and got ``received``
        messages (None: the poll failed, which says nothing of the queue).
        Returns how many slots it keeps for its next poll; it gives back
        ``held - received - kept``."""
        self._polling[lane] -= 1
        if received is None:
            return 0
        self._busy[lane] = received > 0
        if self.shared and received == 0 and held > 0 and self._polling[lane] == 0:
            # The idle lane's one poller keeps its slot: see the module docstring.
            self._polling[lane] += 1
            return 1
        return 0

    def stopped(self, lane: Priority) -> None:
        """A receiver of ``lane`` holding slots for a poll ended without polling."""
        self._polling[lane] -= 1
