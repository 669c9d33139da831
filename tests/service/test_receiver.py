"""Receivers on a scripted SQS and trio's clock: slots before messages, outages, stopping."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from pipeline._core.backoff import AWS_POLICY, Backoff
from pipeline._core.lanes import Priority
from pipeline._errors import Fault, RetriesExhausted
from pipeline._service.intake import IntakeGate
from pipeline._service.lease import Delivery, LeaseKeeper
from pipeline._service.pause import PauseGate
from pipeline._service.receiver import Slots, run_receiver
from tests.support.fakesqs import FakeSqs


class TestSlots:
    async def test_takes_up_to_what_is_free(self) -> None:
        """A take gets at most what is free, and at most what was asked."""
        slots = Slots(5)
        assert await slots.take(3) == 3
        assert await slots.take(10) == 2
        assert slots.in_use == 5

    async def test_waits_for_a_free_slot(self) -> None:
        """With no free slot a take waits until one is given back."""
        slots = Slots(1)
        assert await slots.take(10) == 1
        got: list[int] = []

        async def taker() -> None:
            got.append(await slots.take(10))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(taker)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            slots.give_back()
        assert got == [1]

    async def test_take_is_a_checkpoint(self) -> None:
        """Taking a free slot still yields to the scheduler (a cancellable checkpoint)."""
        slots = Slots(2)
        with trio.testing.assert_checkpoints():
            await slots.take(1)

    def test_over_return_is_a_bug(self) -> None:
        """Giving back more than was taken raises."""
        slots = Slots(1)
        with pytest.raises(RuntimeError):
            slots.give_back()

    def test_needs_a_slot(self) -> None:
        """A stage with no capacity is refused up front."""
        with pytest.raises(ValueError, match="at least one slot"):
            Slots(0)


class TestLanes:
    async def test_freed_slot_goes_to_high_first(self) -> None:
        """Receivers of both lanes waiting: a slot given back goes to the high one, unless
        normal is left below its floor (one slot in four, here one)."""
        slots = Slots(2, lanes=(Priority.NORMAL, Priority.HIGH))
        for lane in (Priority.HIGH, Priority.NORMAL):
            assert await slots.take(10, lane) == 1
            # Each lane's poll found one message: both lanes have work.
            assert slots.polled(lane, 1, 1) == 0
        got: list[Priority] = []

        async def taker(lane: Priority) -> None:
            await slots.take(10, lane)
            got.append(lane)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(taker, Priority.NORMAL)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(taker, Priority.HIGH)
            await trio.testing.wait_all_tasks_blocked()
            slots.give_back(lane=Priority.HIGH)
            await trio.testing.wait_all_tasks_blocked()
            assert got == [Priority.HIGH]
            slots.give_back(lane=Priority.NORMAL)
        assert got == [Priority.HIGH, Priority.NORMAL]

    async def test_idle_lane_keeps_one_slot(self) -> None:
        """An empty poll of an idle lane keeps one slot for its next poll and gives back
        the rest; a receiver ending with it gives it back."""
        slots = Slots(4, lanes=(Priority.NORMAL, Priority.HIGH))
        assert await slots.take(10, Priority.HIGH) == 1
        assert slots.polled(Priority.HIGH, 1, 0) == 1
        assert slots.in_use == 1
        slots.stopped(Priority.HIGH, 1)
        assert slots.in_use == 0

    async def test_cancelled_taker_takes_nothing(self) -> None:
        """A receiver cancelled while it waits leaves the slots to the others."""
        slots = Slots(1, lanes=(Priority.NORMAL, Priority.HIGH))
        assert await slots.take(10, Priority.NORMAL) == 1
        slots.polled(Priority.NORMAL, 1, 1)
        with trio.move_on_after(0.01):
            await slots.take(10, Priority.HIGH)
        slots.give_back()
        assert slots.in_use == 0
        assert await slots.take(10, Priority.NORMAL) == 1


@asynccontextmanager
async def deliveries_of(
    sqs: FakeSqs,
    url: str,
    slots: Slots,
    *,
    policy: Backoff = AWS_POLICY,
    wait_seconds: int = 5,
    gate: IntakeGate | None = None,
) -> AsyncIterator[tuple[trio.MemoryReceiveChannel[Delivery], LeaseKeeper, trio.CancelScope]]:
    """A receiver on ``url`` in the background: its deliveries, its keeper, its cancel scope."""
    keeper = LeaseKeeper(sqs, url, 30, policy)
    send, receive = trio.open_memory_channel[Delivery](0)
    async with trio.open_nursery() as nursery:
        intake = trio.CancelScope()

        async def receiver() -> None:
            with intake:
                await run_receiver(
                    send,
                    sqs=sqs,
                    keeper=keeper,
                    slots=slots,
                    policy=policy,
                    wait_seconds=wait_seconds,
                    gate=gate,
                )

        nursery.start_soon(receiver)
        yield receive, keeper, intake
        nursery.cancel_scope.cancel()


class TestReceiver:
    async def test_survives_an_outage_longer_than_its_retries(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Receives failing past their retry budget do not end the receiver; it resumes."""
        sqs = FakeSqs()
        url = sqs.create_queue("recv")
        await sqs.send(url, "hello", policy=AWS_POLICY)
        sqs.fail("receive", RetriesExhausted("sqs down", fault=Fault.INFRASTRUCTURE), times=5)
        async with deliveries_of(sqs, url, Slots(1)) as (receive, _, _):
            delivery = await receive.receive()
        assert delivery.message.body == "hello"
        polls = sqs.times("receive")
        assert len(polls) == 6
        # It waits between rounds rather than spinning.
        assert all(later > earlier for earlier, later in itertools.pairwise(polls))

    async def test_asks_for_no_more_than_its_free_slots(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With two slots, two messages are received; the rest stay in the queue until one ends."""
        sqs = FakeSqs()
        url = sqs.create_queue("slots")
        await sqs.send_batch(url, ["a", "b", "c", "d", "e"], policy=AWS_POLICY)
        slots = Slots(2)
        async with deliveries_of(sqs, url, slots) as (receive, keeper, _):
            first = await receive.receive()
            await receive.receive()
            await trio.sleep(10)
            assert sqs.depth(url) == (3, 2)
            assert keeper.held == 2
            await keeper.complete(first.lease)
            slots.give_back()
            third = await receive.receive()
            assert third.message.body == "c"
            assert sqs.depth(url) == (2, 2)

    async def test_stopping_hands_back_what_was_not_passed_on(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Cancelled while passing messages on, the receiver hands back the rest and their slots."""
        sqs = FakeSqs()
        url = sqs.create_queue("stop")
        await sqs.send_batch(url, ["a", "b", "c"], policy=AWS_POLICY)
        slots = Slots(3)
        async with deliveries_of(sqs, url, slots) as (receive, keeper, intake):
            await receive.receive()
            await trio.testing.wait_all_tasks_blocked()
            intake.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert sqs.depth(url) == (2, 1)
            assert slots.in_use == 1
            assert keeper.held == 1

    async def test_a_poll_in_flight_finishes_and_what_it_brings_is_handed_back(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A long poll under way at stop is let finish; a message it returns goes back at once,
        as a fresh copy."""
        sqs = FakeSqs()
        url = sqs.create_queue("poll")
        async with deliveries_of(sqs, url, Slots(1), wait_seconds=5) as (
            _,
            keeper,
            intake,
        ):
            await trio.sleep(1)
            intake.cancel()
            await trio.sleep(1)
            await sqs.send(url, "late", policy=AWS_POLICY)
            await trio.testing.wait_all_tasks_blocked()
            assert keeper.held == 0
            (late,) = sqs.messages(url)
            # A fresh copy: the poll's delivery does not count toward maxReceiveCount.
            assert (late.body, late.receive_count) == ("late", 0)
            assert sqs.depth(url) == (1, 0)
        assert sqs.times("receive") == pytest.approx([0.0])

    async def test_what_a_poll_brings_after_a_pause_goes_back_to_the_queue(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A message a poll under way returns after its queue was paused is not passed on
        but made visible again at once, and taken once the queue is resumed."""
        sqs = FakeSqs()
        url = sqs.create_queue("paused")
        pauses = PauseGate()
        pauses.apply({})
        slots = Slots(1)
        async with deliveries_of(sqs, url, slots, gate=IntakeGate([pauses])) as (
            receive,
            keeper,
            _,
        ):
            await trio.sleep(1)
            pauses.apply({"queue": True})
            await sqs.send(url, "sent while paused", policy=AWS_POLICY)
            await trio.testing.wait_all_tasks_blocked()
            assert keeper.held == 0
            assert slots.in_use == 0
            assert sqs.depth(url) == (1, 0)
            await trio.sleep(30)
            assert sqs.depth(url) == (1, 0)
            pauses.apply({"queue": False})
            delivery = await receive.receive()
            assert delivery.message.body == "sent while paused"
