"""Receivers: slots before messages, and surviving SQS outages."""

from __future__ import annotations

import functools
import uuid

import pytest
import trio
import trio.testing

from pipeline._adapters.aws.clients import open_aws_clients
from pipeline._core.backoff import Backoff
from pipeline._core.lanes import Priority
from pipeline._service.lease import Delivery, LeaseKeeper
from pipeline._service.receiver import Slots, run_receiver
from tests.support.faultproxy import Fault, FaultProxy, serve_fault_proxy


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


class TestReceiver:
    async def test_survives_an_outage_longer_than_its_retries(self, aws_endpoint: str) -> None:
        """Receives failing past their retry budget do not end the receiver; it resumes."""
        proxy = FaultProxy(aws_endpoint)
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_fault_proxy, proxy)
            async with open_aws_clients(region="us-east-1", endpoint_url=url, pool_size=4) as aws:
                queue = (await aws.sqs.create_queue(QueueName=f"recv-{uuid.uuid4().hex[:8]}"))[
                    "QueueUrl"
                ]
                await aws.sqs.send_message(QueueUrl=queue, MessageBody="hello")
                proxy.add(Fault("sqs", "ReceiveMessage", "status", times=5, status=500))
                policy = Backoff(max_attempts=2, base=0.01, cap=0.05)
                keeper = LeaseKeeper(aws.sqs, queue, 30, policy)
                send, receive = trio.open_memory_channel[Delivery](0)
                nursery.start_soon(
                    functools.partial(
                        run_receiver,
                        send,
                        sqs=aws.sqs,
                        keeper=keeper,
                        slots=Slots(1),
                        policy=policy,
                    )
                )
                with trio.fail_after(30):
                    delivery = await receive.receive()
                nursery.cancel_scope.cancel()
        assert delivery.message.body == "hello"
        assert proxy.injected[("sqs", "ReceiveMessage", "status")] == 5
