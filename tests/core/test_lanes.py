"""Two lanes sharing a stage's slots: high first, normal never starved (lanes.py)."""

from __future__ import annotations

import random

import pytest

from pipeline._core.lanes import Grant, LanePolicy, Priority

HIGH, NORMAL = Priority.HIGH, Priority.NORMAL


def both_busy(total: int = 20) -> LanePolicy:
    """A two-lane policy whose lanes have both found work at their last poll, and
    hold nothing any more."""
    policy = LanePolicy.of([NORMAL, HIGH], total)
    for lane in (HIGH, NORMAL):
        grant = policy.grant(total, {lane: 1})
        assert grant == Grant(lane, 1)
        assert policy.polled(lane, 1, 1) == 0
        policy.released(lane, 1)
    return policy


class TestOneLane:
    def test_takes_what_it_asks(self) -> None:
        """With one lane a receiver takes as many free slots as it asks for, idle or not."""
        policy = LanePolicy.of([NORMAL], 20)
        assert policy.grant(20, {NORMAL: 10}) == Grant(NORMAL, 10)
        assert policy.grant(20, {NORMAL: 10}) == Grant(NORMAL, 10)
        assert policy.polled(NORMAL, 10, 0) == 0
        assert policy.grant(3, {NORMAL: 10}) == Grant(NORMAL, 3)

    def test_nothing_free(self) -> None:
        """No free slot, no grant; no waiting receiver, no grant."""
        policy = LanePolicy.of([NORMAL], 20)
        assert policy.grant(0, {NORMAL: 10}) is None
        assert policy.grant(5, {}) is None

    def test_needs_a_lane(self) -> None:
        """A policy without lanes is refused."""
        with pytest.raises(ValueError, match="at least one lane"):
            LanePolicy.of([], 20)


class TestTwoLanes:
    def test_idle_lane_polls_with_one_slot_and_one_receiver(self) -> None:
        """A lane with no work known polls with one slot; its second receiver waits."""
        policy = LanePolicy.of([NORMAL, HIGH], 20)
        assert policy.grant(20, {HIGH: 10}) == Grant(HIGH, 1)
        assert policy.grant(19, {HIGH: 10}) is None

    def test_empty_poll_keeps_its_slot(self) -> None:
        """The idle lane's one poller keeps its slot from one empty poll to the next."""
        policy = LanePolicy.of([NORMAL, HIGH], 20)
        policy.grant(20, {HIGH: 10})
        assert policy.polled(HIGH, 1, 0) == 1
        # Still polling with it: a second receiver of the lane still waits.
        assert policy.grant(19, {HIGH: 10}) is None
        assert not policy.busy(HIGH)

    def test_work_found_makes_a_lane_busy(self) -> None:
        """A poll that found work lets the lane's receivers take full batches."""
        policy = LanePolicy.of([NORMAL, HIGH], 20)
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
        """Once normal holds its floor, a free slot goes to the waiting high receiver."""
        policy = both_busy(total=4)
        assert policy.grant(1, {NORMAL: 10, HIGH: 10}) == Grant(NORMAL, 1)
        assert policy.grant(3, {NORMAL: 10, HIGH: 10}) == Grant(HIGH, 3)

    def test_idle_high_lane_gets_its_poll_slot_first(self) -> None:
        """An idle high lane takes the next free slot for its poll, ahead of busy normal
        work that holds its floor."""
        policy = LanePolicy.of([NORMAL, HIGH], 4)
        policy.grant(4, {NORMAL: 1})
        policy.polled(NORMAL, 1, 1)
        assert policy.grant(3, {NORMAL: 10, HIGH: 10}) == Grant(HIGH, 1)

    def test_normal_keeps_one_slot_in_four(self) -> None:
        """While both lanes wait, normal is first given its floor (a quarter of the
        slots, rounded up), then high all the rest; a normal slot that comes back goes
        to normal again, a high one to high."""
        policy = both_busy(total=10)
        assert policy.normal_floor == 3
        assert policy.grant(10, {NORMAL: 10, HIGH: 10}) == Grant(NORMAL, 3)
        assert policy.grant(7, {NORMAL: 10, HIGH: 10}) == Grant(HIGH, 7)
        policy.released(NORMAL, 1)
        assert policy.grant(1, {NORMAL: 10, HIGH: 10}) == Grant(NORMAL, 1)
        policy.released(HIGH, 1)
        assert policy.grant(1, {NORMAL: 10, HIGH: 10}) == Grant(HIGH, 1)

    def test_single_slot_takes_turns(self) -> None:
        """With one slot, three grants in a row go to high, then one to normal."""
        policy = both_busy(total=1)
        given = []
        for _ in range(8):
            grant = policy.grant(1, {NORMAL: 10, HIGH: 10})
            assert grant is not None
            given.append(grant.lane)
            policy.polled(grant.lane, 1, 1)
            policy.released(grant.lane, 1)
        assert given == [HIGH, HIGH, HIGH, NORMAL] * 2

    def test_single_slot_is_never_kept(self) -> None:
        """With one slot an idle lane's empty poll gives it back (keeping it would
        stop the other lane)."""
        policy = LanePolicy.of([NORMAL, HIGH], 1)
        policy.grant(1, {HIGH: 10})
        assert policy.polled(HIGH, 1, 0) == 0

    def test_over_release_is_a_bug(self) -> None:
        """Giving back more of a lane's slots than it holds raises."""
        policy = both_busy()
        with pytest.raises(RuntimeError, match="given back"):
            policy.released(HIGH, 1)

    def test_high_alone_takes_everything(self) -> None:
        """With no normal receiver waiting, high takes every free slot it asks for."""
        policy = both_busy()
        assert policy.grant(10, {HIGH: 10}) == Grant(HIGH, 10)
        assert policy.grant(10, {HIGH: 10}) == Grant(HIGH, 10)

    def test_idle_normal_lane_still_polls(self) -> None:
        """An idle normal lane behind busy high work gets its poll slot (its floor)."""
        policy = LanePolicy.of([NORMAL, HIGH], 20)
        policy.grant(20, {HIGH: 1})
        policy.polled(HIGH, 1, 1)
        assert policy.grant(19, {NORMAL: 10, HIGH: 10}) == Grant(NORMAL, 1)

    def test_share_holds_under_random_turnover(self) -> None:
        """Slots given back at random, receivers of both lanes always waiting: once the
        free slots are handed out, normal holds its quarter and high the rest."""
        rng = random.Random(20)
        policy = both_busy(total=20)
        free = 20
        for _ in range(2000):
            while (grant := policy.grant(free, {NORMAL: 10, HIGH: 10})) is not None:
                free -= grant.count
                # Every poll finds work; the slots stay taken.
                assert policy.polled(grant.lane, grant.count, grant.count) == 0
            assert free == 0
            assert (policy.held(NORMAL), policy.held(HIGH)) == (policy.normal_floor, 15)
            lane = NORMAL if rng.random() < 0.3 else HIGH
            if policy.held(lane):
                policy.released(lane, 1)
                free += 1

    def test_stopped_poller_lets_another_poll(self) -> None:
        """A receiver that stops holding its poll slot lets the idle lane poll again."""
        policy = LanePolicy.of([NORMAL, HIGH], 20)
        policy.grant(20, {HIGH: 10})
        policy.stopped(HIGH)
        policy.released(HIGH, 1)
        assert policy.grant(20, {HIGH: 10}) == Grant(HIGH, 1)
