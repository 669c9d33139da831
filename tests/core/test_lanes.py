"""Two lanes sharing a stage's slots: high first, normal never starved (lanes.py)."""

from __future__ import annotations

import random

import pytest

from pipeline._core.lanes import NORMAL_SHARE, Grant, LanePolicy, Priority

HIGH, NORMAL = Priority.HIGH, Priority.NORMAL


def both_busy() -> LanePolicy:
    """A two-lane policy whose lanes have both found work at their last poll."""
    policy = LanePolicy.of([NORMAL, HIGH])
    for lane in (HIGH, NORMAL):
        grant = policy.grant(10, {lane: 1})
        assert grant == Grant(lane, 1)
        assert policy.polled(lane, 1, 1) == 0
    return policy


class TestOneLane:
    def test_takes_what_it_asks(self) -> None:
        """With one lane a receiver takes as many free slots as it asks for, idle or not."""
        policy = LanePolicy.of([NORMAL])
        assert policy.grant(20, {NORMAL: 10}) == Grant(NORMAL, 10)
        assert policy.grant(20, {NORMAL: 10}) == Grant(NORMAL, 10)
        assert policy.polled(NORMAL, 10, 0) == 0
        assert policy.grant(3, {NORMAL: 10}) == Grant(NORMAL, 3)

    def test_nothing_free(self) -> None:
        """No free slot, no grant; no waiting receiver, no grant."""
        policy = LanePolicy.of([NORMAL])
        assert policy.grant(0, {NORMAL: 10}) is None
        assert policy.grant(5, {}) is None

    def test_needs_a_lane(self) -> None:
        """A policy without lanes is refused."""
        with pytest.raises(ValueError, match="at least one lane"):
            LanePolicy.of([])


class TestTwoLanes:
    def test_idle_lane_polls_with_one_slot_and_one_receiver(self) -> None:
        """A lane with no work known polls with one slot; its second receiver waits."""
        policy = LanePolicy.of([NORMAL, HIGH])
        assert policy.grant(20, {HIGH: 10}) == Grant(HIGH, 1)
        assert policy.grant(19, {HIGH: 10}) is None

    def test_empty_poll_keeps_its_slot(self) -> None:
        """The idle lane's one poller keeps its slot from one empty poll to the next."""
        policy = LanePolicy.of([NORMAL, HIGH])
        policy.grant(20, {HIGH: 10})
        assert policy.polled(HIGH, 1, 0) == 1
        # Still polling with it: a second receiver of the lane still waits.
        assert policy.grant(19, {HIGH: 10}) is None
        assert not policy.busy(HIGH)

    def test_work_found_makes_a_lane_busy(self) -> None:
        """A poll that found work lets the lane's receivers take full batches."""
        policy = LanePolicy.of([NORMAL, HIGH])
        policy.grant(20, {HIGH: 10})
        assert policy.polled(HIGH, 1, 1) == 0
        assert policy.busy(HIGH)
        assert policy.grant(19, {HIGH: 10}) == Grant(HIGH, 10)
        assert policy.grant(9, {HIGH: 10}) == Grant(HIGH, 9)

    def test_failed_poll_changes_nothing(self) -> None:
        """A poll that failed gives its slots back and says nothing of the queue."""
        policy = both_busy()
        policy.grant(10, {HIGH: 10})
        assert policy.polled(HIGH, 3, None) == 0
        assert policy.busy(HIGH)

    def test_high_first(self) -> None:
        """A free slot goes to the waiting high receiver before the normal one."""
        policy = both_busy()
        assert policy.grant(1, {NORMAL: 10, HIGH: 10}) == Grant(HIGH, 1)

    def test_idle_high_lane_gets_its_poll_slot_first(self) -> None:
        """An idle high lane takes the next free slot for its poll, ahead of busy normal work."""
        policy = LanePolicy.of([NORMAL, HIGH])
        policy.grant(20, {NORMAL: 1})
        policy.polled(NORMAL, 1, 1)
        assert policy.grant(1, {NORMAL: 10, HIGH: 10}) == Grant(HIGH, 1)

    def test_one_slot_in_four_to_normal(self) -> None:
        """While both lanes have work, three slots in a row go to high, then one to normal."""
        policy = both_busy()
        given = []
        for _ in range(12):
            grant = policy.grant(1, {NORMAL: 10, HIGH: 10})
            assert grant is not None
            given.append(grant.lane)
        assert given == [HIGH, HIGH, HIGH, NORMAL] * 3

    def test_batch_of_high_stops_at_the_normal_turn(self) -> None:
        """High's batch is cut so that normal's turn comes after three slots."""
        policy = both_busy()
        assert policy.grant(10, {NORMAL: 10, HIGH: 10}) == Grant(HIGH, NORMAL_SHARE - 1)
        assert policy.grant(7, {NORMAL: 10, HIGH: 10}) == Grant(NORMAL, 1)
        assert policy.grant(6, {NORMAL: 10, HIGH: 10}) == Grant(HIGH, 3)

    def test_high_alone_takes_everything(self) -> None:
        """With no normal receiver waiting, high takes every free slot it asks for."""
        policy = both_busy()
        assert policy.grant(10, {HIGH: 10}) == Grant(HIGH, 10)
        assert policy.grant(10, {HIGH: 10}) == Grant(HIGH, 10)

    def test_idle_normal_lane_still_polls(self) -> None:
        """An idle normal lane behind busy high work gets its poll slot within four."""
        policy = LanePolicy.of([NORMAL, HIGH])
        policy.grant(20, {HIGH: 1})
        policy.polled(HIGH, 1, 1)
        lanes = []
        for _ in range(4):
            grant = policy.grant(1, {NORMAL: 10, HIGH: 10})
            assert grant is not None
            lanes.append(grant.lane)
        assert lanes[-1] is NORMAL

    def test_share_holds_under_random_turnover(self) -> None:
        """Slots freed at random, receivers of both lanes always waiting: of the slots
        handed out, at least one in four goes to normal and most go to high."""
        rng = random.Random(20)
        policy = both_busy()
        counts = {HIGH: 0, NORMAL: 0}
        for _ in range(2000):
            free = rng.randint(1, 12)
            while (grant := policy.grant(free, {NORMAL: 10, HIGH: 10})) is not None:
                counts[grant.lane] += grant.count
                free -= grant.count
                # Every poll finds work; the slots stay taken.
                assert policy.polled(grant.lane, grant.count, grant.count) == 0
        total = counts[HIGH] + counts[NORMAL]
        # One in four, give or take the high slots of a last unfinished round.
        assert counts[NORMAL] * NORMAL_SHARE >= total - (NORMAL_SHARE - 1)
        assert counts[HIGH] > counts[NORMAL]

    def test_stopped_poller_lets_another_poll(self) -> None:
        """A receiver that stops holding its poll slot lets the idle lane poll again."""
        policy = LanePolicy.of([NORMAL, HIGH])
        policy.grant(20, {HIGH: 10})
        policy.stopped(HIGH)
        assert policy.grant(20, {HIGH: 10}) == Grant(HIGH, 1)
