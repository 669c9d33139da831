"""``working``: a message's work runs in the lease's scope and ends once, on a scripted SQS.

The queue is :class:`~tests.support.fakesqs.FakeSqs` on trio's clock, so each
test says when the message comes back (at once, in 2-5 s, in 15-30 s, never)
and takes milliseconds. The decision itself is tested without I/O in
tests/core/test_ending.py; these check that each way a work can stop reaches
SQS as that decision says, and that the slot comes back exactly once.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from pipeline._adapters.aws import sqs as _sqs
from pipeline._core.backoff import AWS_POLICY
from pipeline._core.ending import OUTAGE_HAND_BACK_SECONDS
from pipeline._errors import AwsRejected, AwsUnavailable
from pipeline._service.lease import CLEANUP_SECONDS, LIMIT_MARGIN_SECONDS, Delivery, LeaseKeeper
from pipeline._service.receiver import Slots
from pipeline._service.work import working
from tests.support.fakesqs import FakeSqs

TIMEOUT = 30


async def one_delivery(
    sqs: FakeSqs, body: str = "work", *, slots: Slots | None = None
) -> tuple[str, LeaseKeeper, Delivery]:
    """A queue with one message received and leased, its slot taken from ``slots``."""
    url = sqs.create_queue("work", visibility_timeout=TIMEOUT)
    await sqs.send(url, body, policy=AWS_POLICY)
    if slots is not None:
        assert await slots.take(1) == 1
    (message,) = await sqs.receive(url, max_messages=1, wait_seconds=0, policy=AWS_POLICY)
    keeper = LeaseKeeper(sqs, url, TIMEOUT, AWS_POLICY)
    return url, keeper, Delivery(message, keeper.hold(message))


async def back_after(sqs: FakeSqs, url: str) -> float:
    """Seconds until the message is received again."""
    start = trio.current_time()
    while not await sqs.receive(url, max_messages=1, wait_seconds=20, policy=AWS_POLICY):
        pass
    return trio.current_time() - start


class TestEndings:
    async def test_done_deletes_and_gives_the_slot_back(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Work said done: the message is deleted, its slot free again, the keeper holds none."""
        sqs, slots = FakeSqs(), Slots(1)
        url, keeper, delivery = await one_delivery(sqs, slots=slots)
        async with working(delivery, slots=slots) as work:
            await trio.sleep(1)
            work.done()
        assert sqs.depth(url) == (0, 0)
        assert slots.in_use == 0
        assert keeper.held == 0

    async def test_a_failure_comes_back_after_a_growing_delay(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An error of the work is not raised; its first redelivery comes 15-30 s later."""
        sqs, slots = FakeSqs(), Slots(1)
        url, _, delivery = await one_delivery(sqs, slots=slots)
        async with working(delivery, slots=slots):
            raise AwsRejected("AccessDenied")
        assert slots.in_use == 0
        assert sqs.depth(url) == (0, 1)
        assert 15 <= await back_after(sqs, url) <= 30
        assert 15 <= delivery.lease.hand_back_delay <= 30

    async def test_a_dependency_down_comes_back_within_seconds(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Work that met an outage is handed back for 2-5 s, whatever its deliveries."""
        sqs = FakeSqs()
        url, _, delivery = await one_delivery(sqs)
        async with working(delivery):
            raise AwsUnavailable("dynamodb unreachable")
        low, high = OUTAGE_HAND_BACK_SECONDS
        assert low <= await back_after(sqs, url) <= high

    async def test_an_outage_does_not_count_toward_the_redrive_policy(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Three outages in a row: the message comes back each time as a fresh copy,
        its deliveries counted from one again, so maxReceiveCount never sees them."""
        sqs = FakeSqs()
        url, keeper, delivery = await one_delivery(sqs, body="task-1")
        for _ in range(3):
            async with working(delivery):
                raise AwsUnavailable("s3 503")
            (message,) = await sqs.receive(url, max_messages=1, wait_seconds=20, policy=AWS_POLICY)
            assert message.body == "task-1"
            assert message.receive_count == 1
            delivery = Delivery(message, keeper.hold(message))
        assert sqs.depth(url) == (0, 1)

    async def test_a_copy_that_cannot_be_sent_hands_the_original_back(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """SendMessage refused: the original is made visible again instead (counted)."""
        sqs = FakeSqs()
        url, _, delivery = await one_delivery(sqs)
        sqs.fail("send_batch", AwsUnavailable("sqs 500"))
        async with working(delivery):
            raise AwsUnavailable("dynamodb unreachable")
        low, high = OUTAGE_HAND_BACK_SECONDS
        assert low <= await back_after(sqs, url) <= high
        (message,) = sqs.messages(url)
        assert message.receive_count == 2

    async def test_a_shutdown_hands_back_at_once_and_still_cancels(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Cancelled from outside, the work hands its message back visible at once and
        the cancel goes on to its scope."""
        sqs, slots = FakeSqs(), Slots(1)
        url, _, delivery = await one_delivery(sqs, slots=slots)
        with trio.move_on_after(5) as shutdown:
            async with working(delivery, slots=slots):
                await trio.sleep_forever()
        assert shutdown.cancelled_caught
        assert slots.in_use == 0
        assert sqs.depth(url) == (1, 0)

    async def test_returning_unsaid_hands_back_at_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Work that ends without saying it is done is not done: back at once."""
        sqs = FakeSqs()
        url, _, delivery = await one_delivery(sqs)
        async with working(delivery):
            await trio.sleep(1)
        assert sqs.depth(url) == (1, 0)

    async def test_a_stalled_hand_back_gives_up_after_its_deadline(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """At shutdown, an SQS that does not answer holds the exit CLEANUP_SECONDS, no more."""
        sqs = FakeSqs()
        _, keeper, delivery = await one_delivery(sqs)
        sqs.stall("send_batch", 3600)
        start = trio.current_time()
        with trio.CancelScope() as shutdown:
            shutdown.cancel()
            async with working(delivery):
                await trio.sleep_forever()
        assert trio.current_time() - start == pytest.approx(CLEANUP_SECONDS)
        assert keeper.held == 0


class TestLostLease:
    async def test_a_lost_lease_cancels_the_work_and_leaves_the_message(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """When the heartbeat finds the handle gone, the work stops; the message (someone
        else's now) is neither deleted nor handed back, and the slot is free."""
        sqs, slots = FakeSqs(), Slots(1)
        url, keeper, delivery = await one_delivery(sqs, slots=slots)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(keeper.run)
            async with working(delivery, slots=slots) as work:
                # Someone else deleted it meanwhile: our handle is gone.
                await sqs.delete(url, delivery.message.receipt_handle, policy=AWS_POLICY)
                await trio.sleep_forever()
            nursery.cancel_scope.cancel()
        assert work.said is None
        # The first heartbeat due (two thirds of the timeout left) finds it gone.
        assert trio.current_time() - start == pytest.approx(TIMEOUT / 3)
        assert slots.in_use == 0
        assert [call.operation for call in sqs.calls].count("delete_batch") == 0

    async def test_lost_before_the_work_starts_it_never_runs(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A lease lost while its task waited cancels the work at its first checkpoint."""
        sqs, slots = FakeSqs(), Slots(1)
        url, _, delivery = await one_delivery(sqs, slots=slots)
        delivery.lease.lost = True
        reached = False
        async with working(delivery, slots=slots) as work:
            await trio.lowlevel.checkpoint()
            reached = True
            work.done()
        assert not reached
        assert slots.in_use == 0
        assert sqs.depth(url) == (0, 1)


class TestPoison:
    async def test_poison_is_dead_lettered_with_its_reason(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A message said poison is copied to the DLQ with its reason and deleted."""
        sqs, slots = FakeSqs(), Slots(1)
        url, _, delivery = await one_delivery(sqs, "not json", slots=slots)
        dlq = sqs.create_queue("dlq")
        async with working(delivery, slots=slots, dead_letter_url=dlq) as work:
            work.poison("body is not valid JSON")
        assert sqs.depth(url) == (0, 0)
        (moved,) = sqs.messages(dlq)
        assert moved.body == "not json"
        assert moved.attributes[_sqs.REASON_ATTRIBUTE] == "body is not valid JSON"
        assert slots.in_use == 0

    async def test_without_a_dlq_the_message_is_parked(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With no DLQ a poison message stays invisible as long as SQS allows, not longer."""
        sqs = FakeSqs()
        url, _, delivery = await one_delivery(sqs, "not json")
        async with working(delivery) as work:
            work.poison("body is not valid JSON")
        limit = _sqs.MAX_VISIBILITY - LIMIT_MARGIN_SECONDS
        assert limit - 5 <= delivery.lease.hand_back_delay <= limit
        assert sqs.depth(url) == (0, 1)
        (parked,) = sqs.messages(url)
        assert parked.received_at is not None
        assert parked.visible_at - parked.received_at <= limit

    async def test_only_a_delivery_can_be_said_poison(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Work on a bare lease (a file task) has no body to dead-letter: saying so is a bug,
        logged, and the message comes back later."""
        sqs = FakeSqs()
        url, _, delivery = await one_delivery(sqs, "not json")
        async with working(delivery.lease) as work:
            work.poison("body is not valid JSON")
        assert work.said is None
        assert sqs.depth(url) == (0, 1)


class TestPassedOn:
    async def test_the_next_holder_ends_it_and_returns_the_slot(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Passed on, the message stays in flight and its slot taken; the worker that
        takes it over deletes it and frees the slot, once."""
        sqs, slots = FakeSqs(), Slots(1)
        url, keeper, delivery = await one_delivery(sqs, slots=slots)
        async with working(delivery, slots=slots) as work:
            work.passed_on()
        assert sqs.depth(url) == (0, 1)
        assert slots.in_use == 1
        assert keeper.held == 1
        async with working(delivery.lease, slots=slots) as work:
            work.done()
        assert sqs.depth(url) == (0, 0)
        assert slots.in_use == 0

    async def test_a_lease_lost_while_waiting_cancels_the_next_holder(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A lease lost between passing on and taking over is seen by the new holder."""
        sqs = FakeSqs()
        url, keeper, delivery = await one_delivery(sqs)
        async with trio.open_nursery() as nursery:
            await nursery.start(keeper.run)
            async with working(delivery) as work:
                work.passed_on()
            await sqs.delete(url, delivery.message.receipt_handle, policy=AWS_POLICY)
            await trio.sleep(TIMEOUT)
            assert delivery.lease.lost
            nursery.cancel_scope.cancel()
        async with working(delivery.lease) as work:
            await trio.sleep_forever()
        assert work.said is None


class TestWithoutAMessage:
    async def test_work_without_a_lease_runs_and_its_errors_end_there(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A file listed for this process's workers runs the same way: an error is logged
        once and goes no further; a cancel from outside still does."""
        with capture_logs() as logs:
            async with working(None):
                raise AwsUnavailable("s3 unreachable")
            with trio.move_on_after(1) as shutdown:
                async with working(None):
                    await trio.sleep_forever()
        assert shutdown.cancelled_caught
        (line,) = logs
        assert line["event"] == "work failed; it will be tried again"
        assert "s3 unreachable" in line["error"]
