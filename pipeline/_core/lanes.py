"""Two lanes of work sharing one stage's slots: who gets the next free slot.

A stage (export jobs, or download tasks) may read two queues, a normal one and
a high one (``SQS_EXPORT_JOBS_HIGH_URL``, ``SQS_DOWNLOAD_TASKS_HIGH_URL``).
Their receivers share the stage's slots (``MAX_CONCURRENT_JOBS``), and this
policy decides, each time a slot is free and receivers of both lanes wait,
which lane takes it and how many at once:

- High first: a waiting high receiver gets free slots before a normal one.
- No starvation: normal keeps at least one slot in ``NORMAL_SHARE`` (rounded
  up). While it holds fewer and has a receiver waiting, a free slot goes to
  normal. The floor counts slots held, not slots handed out. Normal jobs that
  last longer than high ones would otherwise gather most of the slots, since
  their slots come back less often.
- Knowing there is work costs a poll, and a poll must hold the slots its
  messages will run on (a receiver never takes a message it cannot start).
  A lane whose last poll found nothing is *idle*: it polls with one slot and
  one receiver at most, and keeps that slot from one empty poll to the next,
  so new work on it is seen within one long poll whatever the other lane is
  doing. That one slot is the price: a process whose high lane is idle runs
  at most ``MAX_CONCURRENT_JOBS - 1`` normal messages at once.
- With a single slot no lane can keep one, and a share cannot be held.
  Instead, after ``NORMAL_SHARE - 1`` high grants in a row while normal
  waited, the next grant goes to normal.

With one lane none of this applies: a waiting receiver takes as many free
slots as it asks for, as it always did. The policy is a small state machine
over plain values; the trio side (``_service/receiver.py``'s ``Slots``)
parks and wakes receivers as it says, and tells it of every slot given back.
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
    total: int
    # Whether the lane's last poll found work; unknown (idle) at start, so the
    # first poll of each lane holds one slot and finds out.
    _busy: dict[Priority, bool] = attrs.field(init=False)
    # Receivers of the lane holding slots for a poll (taken, not yet polled).
    _polling: dict[Priority, int] = attrs.field(init=False)
    # Slots the lane holds: for polls, and for its messages' work.
    _held: dict[Priority, int] = attrs.field(init=False)
    # One slot only: high grants in a row while normal waited.
    _high_run: int = attrs.field(init=False, default=0)

    @classmethod
    def of(cls, lanes: Iterable[Priority], total: int) -> LanePolicy:
        """A policy for these lanes (normal, and high when configured) over ``total`` slots."""
        return cls(tuple(dict.fromkeys(lanes)), total)

    def __attrs_post_init__(self) -> None:
        if not self.lanes:
            msg = "a LanePolicy needs at least one lane"
            raise ValueError(msg)
        self._busy = dict.fromkeys(self.lanes, False)
        self._polling = dict.fromkeys(self.lanes, 0)
        self._held = dict.fromkeys(self.lanes, 0)

    @property
    def shared(self) -> bool:
        """More than one lane: the rules above apply."""
        return len(self.lanes) > 1

    @property
    def normal_floor(self) -> int:
        """Slots normal work keeps while it has a receiver waiting (one in four, rounded up)."""
        return 0 if self.total < 2 else -(-self.total // NORMAL_SHARE)

    def busy(self, lane: Priority) -> bool:
        """Whether ``lane``'s last poll found work."""
        return self._busy[lane]

    def held(self, lane: Priority) -> int:
        """Slots ``lane`` holds."""
        return self._held[lane]

    def _wants(self, lane: Priority, up_to: int) -> int:
        """How many slots ``lane``'s first waiting receiver may take now (0: none)."""
        if not self.shared or self._busy[lane]:
            return up_to
        # Idle: one receiver polls, with one slot.
        return 0 if self._polling[lane] else min(up_to, 1)

    def _normal_due(self) -> bool:
        if self.total < 2:
            return self._high_run >= NORMAL_SHARE - 1
        return self._held[Priority.NORMAL] < self.normal_floor

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
        if len(wants) > 1:
            if self._normal_due():
                lane = Priority.NORMAL
                count = min(free, wants[lane], max(1, self.normal_floor - self._held[lane]))
                self._high_run = 0
            else:
                lane = Priority.HIGH
                count = min(free, wants[lane])
                self._high_run += 1
        else:
            (lane,) = wants
            count = min(free, wants[lane])
            if lane is Priority.NORMAL:
                self._high_run = 0
        self._polling[lane] += 1
        self._held[lane] += count
        return Grant(lane, count)

    def polled(self, lane: Priority, held: int, received: int | None) -> int:
        """A receiver of ``lane`` polled with ``held`` slots and got ``received``
        messages (None: the poll failed, which says nothing of the queue).
        Returns how many slots it keeps for its next poll; the caller gives
        back ``held - received - kept`` (:meth:`released`)."""
        self._polling[lane] -= 1
        if received is None:
            return 0
        self._busy[lane] = received > 0
        keeps = self.shared and self.total > 1 and received == 0 and held > 0
        if keeps and self._polling[lane] == 0:
            # The idle lane's one poller keeps its slot: see the module docstring.
            self._polling[lane] += 1
            return 1
        return 0

    def stopped(self, lane: Priority) -> None:
        """A receiver of ``lane`` holding slots for a poll ended without polling
        (the caller gives them back)."""
        self._polling[lane] -= 1

    def released(self, lane: Priority, count: int) -> None:
        """``count`` slots of ``lane`` are free again."""
        if count > self._held[lane]:
            msg = f"{count} {lane.value} slots given back, but {self._held[lane]} were held"
            raise RuntimeError(msg)
        self._held[lane] -= count
