"""LeaseKeeper on a scripted SQS and trio's clock: heartbeats, lost leases, releasing.

How a message's work ends (``working``, work.py) is tested in test_work.py.

The queue is :class:`~tests.support.fakesqs.FakeSqs`: visibility timeouts and
long polls count virtual seconds, so the tests assert when things happen
(the heartbeat at 10 s, the cancel at the first refused extension) and take
milliseconds. The real SQS calls are tested against moto in tests/adapters.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from pipeline._adapters.aws import sqs as _sqs
from pipeline._core.backoff import AWS_POLICY
from pipeline._errors import AwsUnavailable
from pipeline._service.lease import (
    CLEANUP_SECONDS,
    DELETE_LINGER_SECONDS,
    LIMIT_MARGIN_SECONDS,
    Lease,
    LeaseKeeper,
)
from tests.support.fakesqs import FakeSqs

TIMEOUT = 30
HEARTBEAT = "change_visibility_batch"


async def received(sqs: FakeSqs, url: str, wait: int = 0) -> _sqs.ReceivedMessage | None:
    messages = await sqs.receive(url, max_messages=1, wait_seconds=wait, policy=AWS_POLICY)
    return messages[0] if messages else None


async def one_held(
    sqs: FakeSqs, body: str = "work", visibility: int = TIMEOUT
) -> tuple[str, LeaseKeeper, _sqs.ReceivedMessage]:
    """A queue with one message received, and a keeper for it."""
    url = sqs.create_queue("work", visibility_timeout=visibility)
    await sqs.send(url, body, policy=AWS_POLICY)
    message = await received(sqs, url)
    assert message is not None
    return url, LeaseKeeper(sqs, url, visibility, AWS_POLICY), message


class TestHeartbeat:
    async def test_extends_before_expiry(self, autojump_clock: trio.testing.MockClock) -> None:
        """Every sixth of the timeout the keeper extends leases with two thirds or less left."""
        sqs = FakeSqs()
        url, keeper, message = await one_held(sqs)
        start = trio.current_time()
        lease = keeper.hold(message)
        async with trio.open_nursery() as nursery:
            await nursery.start(keeper.run)
            # Nearly three timeouts long, nobody else may receive it.
            with trio.move_on_after(3 * TIMEOUT - 5):
                while True:
                    assert await received(sqs, url, wait=20) is None
            # Woken at 5, 10, 15...: first due (20 s left) at 10, then every 10 s.
            beats = [at - start for at in sqs.times(HEARTBEAT)]
            assert beats == pytest.approx([10, 20, 30, 40, 50, 60, 70, 80])
            assert lease.expires_at == pytest.approx(start + 80 + TIMEOUT)
            assert not lease.lost
            await keeper.complete(lease)
            nursery.cancel_scope.cancel()
        assert keeper.held == 0
        assert sqs.depth(url) == (0, 0)

    async def test_lost_lease_cancels_its_scope(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """When SQS refuses an extension (handle gone), the lease's work is cancelled then."""
        sqs = FakeSqs()
        url, keeper, message = await one_held(sqs)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(keeper.run)
            with trio.CancelScope() as work:
                lease = keeper.hold(message, work)
                # Someone else deletes the message: the handle is gone.
                await sqs.delete(url, message.receipt_handle, policy=AWS_POLICY)
                await trio.sleep_forever()
            nursery.cancel_scope.cancel()
        assert work.cancelled_caught
        assert trio.current_time() - start == pytest.approx(10)
        assert lease.lost
        assert keeper.held == 0

    async def test_many_leases_in_one_round(self, autojump_clock: trio.testing.MockClock) -> None:
        """Twelve leases are extended in two batch calls a round and kept past the timeout."""
        sqs = FakeSqs()
        url = sqs.create_queue("many", visibility_timeout=TIMEOUT)
        await sqs.send_batch(url, [f"m{n}" for n in range(12)], policy=AWS_POLICY)
        keeper = LeaseKeeper(sqs, url, TIMEOUT, AWS_POLICY)
        leases: list[Lease] = []
        while len(leases) < 12:
            for message in await sqs.receive(
                url, max_messages=10, wait_seconds=1, policy=AWS_POLICY
            ):
                leases.append(keeper.hold(message))
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(keeper.run)
            await trio.sleep(TIMEOUT * 1.5)
            assert sqs.depth(url) == (0, 12)
            assert not any(lease.lost for lease in leases)
            beats = [at - start for at in sqs.times(HEARTBEAT)]
            assert beats == pytest.approx([10, 10, 20, 20, 30, 30, 40, 40])
            await keeper.hand_back(leases)
            nursery.cancel_scope.cancel()
        assert sqs.depth(url) == (12, 0)

    async def test_stalled_extension_gives_up_and_the_next_round_succeeds(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A heartbeat call that hangs is abandoned after a sixth of the timeout; the next works."""
        sqs = FakeSqs()
        url, keeper, message = await one_held(sqs)
        start = trio.current_time()
        lease = keeper.hold(message)
        sqs.stall(HEARTBEAT, 3600)
        async with trio.open_nursery() as nursery:
            await nursery.start(keeper.run)
            await trio.sleep(TIMEOUT - 2)
            nursery.cancel_scope.cancel()
        # Tried at 10, gave up at 15; tried again at 20 (woken at 15 + 5).
        assert [at - start for at in sqs.times(HEARTBEAT)][:2] == pytest.approx([10, 20])
        assert not lease.lost
        assert lease.expires_at == pytest.approx(start + 20 + TIMEOUT)
        assert sqs.depth(url) == (0, 1)

    async def test_failed_extension_is_tried_again_next_round(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An extension failing on AWS's side keeps the lease, and the next round extends it."""
        sqs = FakeSqs()
        url, keeper, message = await one_held(sqs)
        lease = keeper.hold(message)
        sqs.fail(HEARTBEAT, AwsUnavailable("sqs unreachable"))
        async with trio.open_nursery() as nursery:
            await nursery.start(keeper.run)
            await trio.sleep(TIMEOUT + 1)
            assert await received(sqs, url) is None
            nursery.cancel_scope.cancel()
        assert not lease.lost
        assert len(sqs.times(HEARTBEAT)) >= 3

    async def test_extensions_stop_at_the_twelve_hour_limit(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Near SQS's 12 hours the extension asked for shrinks, so SQS never refuses it."""
        sqs = FakeSqs()
        url, keeper, message = await one_held(sqs, visibility=3600)
        lease = keeper.hold(message)
        async with trio.open_nursery() as nursery:
            await nursery.start(keeper.run)
            await trio.sleep(_sqs.MAX_VISIBILITY - 2 * LIMIT_MARGIN_SECONDS)
            assert not lease.lost
            nursery.cancel_scope.cancel()
        assert sqs.depth(url) == (0, 1)
        (held,) = sqs.messages(url)
        assert held.received_at is not None
        assert held.visible_at - held.received_at <= _sqs.MAX_VISIBILITY - LIMIT_MARGIN_SECONDS


class TestRelease:
    async def test_hand_back_is_visible_at_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A handed-back message is received again at once, not after its timeout."""
        sqs = FakeSqs()
        url, keeper, message = await one_held(sqs, "again", visibility=60)
        lease = keeper.hold(message)
        await keeper.hand_back([lease])
        assert keeper.held == 0
        again = await received(sqs, url)
        assert again is not None
        assert again.body == "again"
        assert again.receive_count == 2

    async def test_hand_back_runs_while_cancelled(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Handing back from a cancelled scope (shutdown) still reaches SQS."""
        sqs = FakeSqs()
        url, keeper, message = await one_held(sqs, visibility=60)
        lease = keeper.hold(message)
        with trio.CancelScope() as scope:
            scope.cancel()
            await keeper.hand_back([lease])
        assert sqs.depth(url) == (1, 0)

    async def test_hand_back_delay_keeps_it_hidden(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A lease handed back with a delay stays invisible exactly that long."""
        sqs = FakeSqs()
        url, keeper, message = await one_held(sqs, visibility=60)
        lease = keeper.hold(message)
        lease.hand_back_delay = 7
        start = trio.current_time()
        await keeper.hand_back([lease])
        assert await received(sqs, url) is None
        assert await received(sqs, url, wait=20) is not None
        assert trio.current_time() - start == pytest.approx(7)

    async def test_stalled_hand_back_gives_up_after_its_deadline(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A hand-back SQS does not answer ends after CLEANUP_SECONDS; the lease is released."""
        sqs = FakeSqs()
        _, keeper, message = await one_held(sqs, visibility=60)
        lease = keeper.hold(message)
        sqs.stall(HEARTBEAT, 3600)
        start = trio.current_time()
        await keeper.hand_back([lease])
        assert trio.current_time() - start == pytest.approx(CLEANUP_SECONDS)
        assert lease.released
        assert keeper.held == 0

    async def test_complete_deletes_while_cancelled(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Completing from a cancelled scope still deletes the message."""
        sqs = FakeSqs()
        url, keeper, message = await one_held(sqs, visibility=60)
        lease = keeper.hold(message)
        with trio.CancelScope() as scope:
            scope.cancel()
            await keeper.complete(lease)
        assert sqs.depth(url) == (0, 0)

    async def test_messages_completed_together_go_in_batches(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Twelve messages completed at once: two delete batches, after the linger, all gone."""
        sqs = FakeSqs()
        url = sqs.create_queue("work", visibility_timeout=60)
        for n in range(12):
            await sqs.send(url, f"work {n}", policy=AWS_POLICY)
        keeper = LeaseKeeper(sqs, url, 60, AWS_POLICY)
        leases = []
        while len(leases) < 12:
            for message in await sqs.receive(
                url, max_messages=10, wait_seconds=0, policy=AWS_POLICY
            ):
                leases.append(keeper.hold(message))
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for lease in leases:
                nursery.start_soon(keeper.complete, lease)
        # The first ten fill a batch and go at once; the last two wait out the linger.
        assert sqs.times("delete_batch") == [started, started + DELETE_LINGER_SECONDS]
        assert sqs.times("delete") == []
        assert sqs.depth(url) == (0, 0)
        assert keeper.held == 0

    async def test_a_lost_handle_in_a_batch_fails_only_itself(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A handle gone from a delete batch is logged for its message; the others are deleted."""
        sqs = FakeSqs()
        url = sqs.create_queue("work", visibility_timeout=60)
        for n in range(2):
            await sqs.send(url, f"work {n}", policy=AWS_POLICY)
        keeper = LeaseKeeper(sqs, url, 60, AWS_POLICY)
        first, second = (
            keeper.hold(m)
            for m in await sqs.receive(url, max_messages=2, wait_seconds=0, policy=AWS_POLICY)
        )
        await sqs.delete(url, first.receipt_handle, policy=AWS_POLICY)  # someone else's now
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keeper.complete, first)
            nursery.start_soon(keeper.complete, second)
        assert len(sqs.times("delete_batch")) == 1
        assert sqs.depth(url) == (0, 0)

    async def test_lost_lease_is_not_released(self, autojump_clock: trio.testing.MockClock) -> None:
        """A lost lease is neither deleted nor handed back: it is someone else's now."""
        sqs = FakeSqs()
        url, keeper, message = await one_held(sqs, visibility=60)
        lease = keeper.hold(message)
        lease.lost = True
        await keeper.hand_back([lease])
        await keeper.complete(lease)
        assert sqs.depth(url) == (0, 1)
        assert sqs.calls[-1].operation == "receive"

    async def test_hand_back_remaining_releases_what_never_started(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """At shutdown every message still held is handed back, visible at once."""
        sqs = FakeSqs()
        url = sqs.create_queue("left", visibility_timeout=60)
        await sqs.send_batch(url, ["a", "b", "c"], policy=AWS_POLICY)
        keeper = LeaseKeeper(sqs, url, 60, AWS_POLICY)
        for message in await sqs.receive(url, max_messages=3, wait_seconds=0, policy=AWS_POLICY):
            keeper.hold(message)
        await keeper.hand_back_remaining()
        assert keeper.held == 0
        assert sqs.depth(url) == (3, 0)


class TestDeadLetter:
    async def test_poison_moves_once_and_later_releases_do_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A dead-lettered message goes to the DLQ and is deleted; a later hand-back is a no-op."""
        sqs = FakeSqs()
        url, keeper, message = await one_held(sqs, "not json")
        dlq = sqs.create_queue("dlq")
        lease = keeper.hold(message)
        await keeper.dead_letter(lease, "not json", "body is not valid JSON", dlq)
        await keeper.hand_back([lease])
        await keeper.complete(lease)
        assert sqs.depth(url) == (0, 0)
        moved = await received(sqs, dlq)
        assert moved is not None
        assert moved.body == "not json"
        assert keeper.held == 0

    async def test_unreachable_dlq_hands_the_message_back(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """When the DLQ cannot be reached the message is handed back, not deleted."""
        sqs = FakeSqs()
        url, keeper, message = await one_held(sqs, "not json")
        dlq = sqs.create_queue("dlq")
        lease = keeper.hold(message)
        sqs.fail("send", AwsUnavailable("sqs unreachable"))
        await keeper.dead_letter(lease, "not json", "body is not valid JSON", dlq)
        assert sqs.depth(url) == (1, 0)
        assert sqs.depth(dlq) == (0, 0)
