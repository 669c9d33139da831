"""LeaseKeeper against moto: heartbeats, lost leases, completing and handing back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from pipeline._adapters.aws import sqs as _sqs
from pipeline._adapters.aws.clients import AwsClient, open_aws_clients
from pipeline._core.backoff import AWS_POLICY
from pipeline._service.lease import LIMIT_MARGIN_SECONDS, Lease, LeaseKeeper


@attrs.frozen
class Queue:
    """One fresh queue and a client to reach it."""

    sqs: AwsClient
    url: str

    async def send(self, body: str = "work") -> None:
        await self.sqs.send_message(QueueUrl=self.url, MessageBody=body)

    async def receive_one(self, wait: int = 1) -> _sqs.ReceivedMessage | None:
        messages = await _sqs.receive(
            self.sqs, self.url, max_messages=1, wait_seconds=wait, policy=AWS_POLICY
        )
        return messages[0] if messages else None

    async def depth(self) -> tuple[int, int]:
        """(visible, in flight) messages."""
        response = await self.sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attributes = response["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )


@asynccontextmanager
async def open_queue(aws_endpoint: str, visibility_timeout: int) -> AsyncIterator[Queue]:
    async with open_aws_clients(region="us-east-1", endpoint_url=aws_endpoint, pool_size=5) as aws:
        response = await aws.sqs.create_queue(
            QueueName=f"lease-{uuid.uuid4().hex[:10]}",
            Attributes={"VisibilityTimeout": str(visibility_timeout)},
        )
        yield Queue(aws.sqs, response["QueueUrl"])


async def _received(queue: Queue) -> _sqs.ReceivedMessage:
    message = await queue.receive_one()
    assert message is not None
    return message


class TestHeartbeat:
    async def test_extends_before_expiry(self, aws_endpoint: str) -> None:
        """A held message stays invisible for several visibility timeouts, then is deleted."""
        async with open_queue(aws_endpoint, visibility_timeout=2) as queue:
            await queue.send()
            keeper = LeaseKeeper(queue.sqs, queue.url, 2, AWS_POLICY)
            message = await _received(queue)
            lease = keeper.hold(message)
            first_expiry = lease.expires_at
            async with trio.open_nursery() as nursery:
                await nursery.start(keeper.run)
                # Three timeouts long, nobody else may receive it.
                with trio.move_on_after(6):
                    while True:
                        assert await queue.receive_one(wait=1) is None
                assert lease.expires_at > first_expiry + 2
                assert not lease.lost
                await keeper.complete(lease)
                nursery.cancel_scope.cancel()
            assert keeper.held == 0
            assert await queue.depth() == (0, 0)

    async def test_lost_lease_cancels_its_scope(self, aws_endpoint: str) -> None:
        """When SQS refuses an extension (handle gone), the lease's work is cancelled."""
        async with open_queue(aws_endpoint, visibility_timeout=2) as queue:
            await queue.send()
            keeper = LeaseKeeper(queue.sqs, queue.url, 2, AWS_POLICY)
            message = await _received(queue)
            async with trio.open_nursery() as nursery:
                await nursery.start(keeper.run)
                with trio.CancelScope() as work:
                    lease = keeper.hold(message, work)
                    # Someone else deletes the message: the handle is gone.
                    await queue.sqs.delete_message(
                        QueueUrl=queue.url, ReceiptHandle=message.receipt_handle
                    )
                    with trio.fail_after(10):
                        await trio.sleep_forever()
                nursery.cancel_scope.cancel()
            assert work.cancelled_caught
            assert lease.lost
            assert keeper.held == 0

    async def test_many_leases_in_one_round(self, aws_endpoint: str) -> None:
        """Twelve leases (two batch calls) are all kept past the timeout."""
        async with open_queue(aws_endpoint, visibility_timeout=2) as queue:
            for n in range(12):
                await queue.send(f"m{n}")
            keeper = LeaseKeeper(queue.sqs, queue.url, 2, AWS_POLICY)
            leases: list[Lease] = []
            while len(leases) < 12:
                for message in await _sqs.receive(
                    queue.sqs, queue.url, max_messages=10, wait_seconds=1, policy=AWS_POLICY
                ):
                    leases.append(keeper.hold(message))
            async with trio.open_nursery() as nursery:
                await nursery.start(keeper.run)
                await trio.sleep(4.5)
                assert await queue.depth() == (0, 12)
                assert not any(lease.lost for lease in leases)
                await keeper.hand_back(leases)
                nursery.cancel_scope.cancel()
            assert await queue.depth() == (12, 0)


class TestRelease:
    async def test_hand_back_is_visible_at_once(self, aws_endpoint: str) -> None:
        """A handed-back message is received again at once, not after its timeout."""
        async with open_queue(aws_endpoint, visibility_timeout=60) as queue:
            await queue.send("again")
            keeper = LeaseKeeper(queue.sqs, queue.url, 60, AWS_POLICY)
            lease = keeper.hold(await _received(queue))
            await keeper.hand_back([lease])
            assert keeper.held == 0
            with trio.fail_after(5):
                again = await _received(queue)
            assert again.body == "again"
            assert again.receive_count == 2

    async def test_hand_back_runs_while_cancelled(self, aws_endpoint: str) -> None:
        """Handing back from a cancelled scope (shutdown) still reaches SQS."""
        async with open_queue(aws_endpoint, visibility_timeout=60) as queue:
            await queue.send()
            keeper = LeaseKeeper(queue.sqs, queue.url, 60, AWS_POLICY)
            lease = keeper.hold(await _received(queue))
            with trio.CancelScope() as scope:
                scope.cancel()
                await keeper.hand_back([lease])
            assert await queue.depth() == (1, 0)

    async def test_hand_back_delay_keeps_it_hidden(self, aws_endpoint: str) -> None:
        """A lease handed back with a delay stays invisible for that delay."""
        async with open_queue(aws_endpoint, visibility_timeout=60) as queue:
            await queue.send()
            keeper = LeaseKeeper(queue.sqs, queue.url, 60, AWS_POLICY)
            lease = keeper.hold(await _received(queue))
            lease.hand_back_delay = 2
            await keeper.hand_back([lease])
            assert await queue.receive_one(wait=0) is None
            with trio.fail_after(8):
                while await queue.receive_one(wait=1) is None:
                    pass

    async def test_complete_deletes_while_cancelled(self, aws_endpoint: str) -> None:
        """Completing from a cancelled scope still deletes the message."""
        async with open_queue(aws_endpoint, visibility_timeout=60) as queue:
            await queue.send()
            keeper = LeaseKeeper(queue.sqs, queue.url, 60, AWS_POLICY)
            lease = keeper.hold(await _received(queue))
            with trio.CancelScope() as scope:
                scope.cancel()
                await keeper.complete(lease)
            assert await queue.depth() == (0, 0)

    async def test_lost_lease_is_not_released(self, aws_endpoint: str) -> None:
        """A lost lease is neither deleted nor handed back: it is someone else's now."""
        async with open_queue(aws_endpoint, visibility_timeout=60) as queue:
            await queue.send()
            keeper = LeaseKeeper(queue.sqs, queue.url, 60, AWS_POLICY)
            lease = keeper.hold(await _received(queue))
            lease.lost = True
            await keeper.hand_back([lease])
            await keeper.complete(lease)
            assert await queue.depth() == (0, 1)


class TestRetryLater:
    async def test_handed_back_after_our_failure_stays_away_a_while(
        self, aws_endpoint: str
    ) -> None:
        """After our own failure the message is handed back invisible for 15-30 s, not at once."""
        async with open_queue(aws_endpoint, visibility_timeout=30) as queue:
            await queue.send("work")
            keeper = LeaseKeeper(queue.sqs, queue.url, 30, AWS_POLICY)
            lease = keeper.hold(await _received(queue))
            await keeper.retry_later(lease)
            assert 15 <= lease.hand_back_delay <= 30
            assert await queue.depth() == (0, 1)
            assert await queue.receive_one(wait=1) is None


class TestDeadLetter:
    async def test_poison_moves_once_and_later_releases_do_nothing(self, aws_endpoint: str) -> None:
        """A dead-lettered message goes to the DLQ and is deleted; a later hand-back is a no-op."""
        async with (
            open_queue(aws_endpoint, visibility_timeout=30) as queue,
            open_queue(aws_endpoint, visibility_timeout=30) as dlq,
        ):
            await queue.send("not json")
            keeper = LeaseKeeper(queue.sqs, queue.url, 30, AWS_POLICY)
            lease = keeper.hold(await _received(queue))
            await keeper.dead_letter(lease, "not json", "body is not valid JSON", dlq.url)
            await keeper.hand_back([lease])
            await keeper.complete(lease)
            assert await queue.depth() == (0, 0)
            moved = await dlq.receive_one()
            assert moved is not None
            assert moved.body == "not json"
            assert keeper.held == 0

    async def test_without_a_dlq_the_message_is_parked(self, aws_endpoint: str) -> None:
        """With no DLQ the poison message stays invisible as long as SQS allows, not longer."""
        async with open_queue(aws_endpoint, visibility_timeout=30) as queue:
            await queue.send("not json")
            keeper = LeaseKeeper(queue.sqs, queue.url, 30, AWS_POLICY)
            lease = keeper.hold(await _received(queue))
            await keeper.dead_letter(lease, "not json", "body is not valid JSON", None)
            limit = _sqs.MAX_VISIBILITY - LIMIT_MARGIN_SECONDS
            assert limit - 5 <= lease.hand_back_delay <= limit
            assert await queue.depth() == (0, 1)
            assert await queue.receive_one(wait=1) is None
