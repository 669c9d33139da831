"""SQS wrappers against the moto server: receive, leases, batches, dead-letter queue."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

import pipeline._adapters.aws.sqs as sqs_module
from pipeline._adapters.aws.clients import AwsClients
from pipeline._adapters.aws.sqs import (
    ReceivedMessage,
    change_visibility,
    change_visibility_batch,
    dead_letter_queue_url,
    delete,
    delete_batch,
    queue_visibility_timeout,
    receive,
    send,
    send_batch,
)
from pipeline._core.backoff import Backoff
from pipeline._errors import AwsRejected, LeaseLost

FAST = Backoff(max_attempts=3, base=0.001, cap=0.01)


@pytest.fixture
async def queue(clients: AwsClients) -> str:
    """A fresh queue with a 30 s visibility timeout."""
    response = await clients.sqs.create_queue(
        QueueName=f"q-{uuid.uuid4().hex}", Attributes={"VisibilityTimeout": "30"}
    )
    return str(response["QueueUrl"])


async def drain(clients: AwsClients, url: str, expected: int) -> list[ReceivedMessage]:
    """Receive until ``expected`` messages came (or a poll comes back empty)."""
    got: list[ReceivedMessage] = []
    while len(got) < expected:
        batch = await receive(clients.sqs, url, max_messages=10, wait_seconds=0, policy=FAST)
        if not batch:
            break
        got += batch
    return got


def test_public_surface_is_complete() -> None:
    """Every name in __all__ exists, once."""
    assert len(set(sqs_module.__all__)) == len(sqs_module.__all__)
    assert all(hasattr(sqs_module, name) for name in sqs_module.__all__)


class TestReceive:
    async def test_receive_gives_our_type(self, clients: AwsClients, queue: str) -> None:
        """A received message carries its body, handle, receive count and sent time."""
        message_id = await send(clients.sqs, queue, '{"a": 1}', policy=FAST)
        (message,) = await receive(clients.sqs, queue, max_messages=10, wait_seconds=1)
        assert message.message_id == message_id
        assert message.body == '{"a": 1}'
        assert message.receive_count == 1
        assert message.sent_at is not None
        assert abs(message.sent_at - datetime.now(UTC)) < timedelta(minutes=1)
        assert message.first_received_at is not None

    async def test_redelivery_counts_up(self, clients: AwsClients, queue: str) -> None:
        """A message handed back (visibility 0) comes again with receive count 2."""
        await send(clients.sqs, queue, "again")
        (first,) = await receive(clients.sqs, queue, max_messages=1, wait_seconds=0)
        await change_visibility(clients.sqs, queue, first.receipt_handle, 0)
        (second,) = await receive(clients.sqs, queue, max_messages=1, wait_seconds=0)
        assert second.message_id == first.message_id
        assert second.receive_count == 2

    async def test_empty_poll_is_an_empty_list(self, clients: AwsClients, queue: str) -> None:
        """A poll of an empty queue returns no messages."""
        assert await receive(clients.sqs, queue, max_messages=5, wait_seconds=0) == []

    async def test_deleted_message_is_gone(self, clients: AwsClients, queue: str) -> None:
        """After delete, a handed-back message no longer comes."""
        await send(clients.sqs, queue, "once")
        (message,) = await receive(
            clients.sqs, queue, max_messages=1, wait_seconds=0, visibility_timeout=0
        )
        await delete(clients.sqs, queue, message.receipt_handle)
        assert await receive(clients.sqs, queue, max_messages=1, wait_seconds=0) == []

    async def test_delete_batch_deletes_and_names_the_bad_handle(
        self, clients: AwsClients, queue: str
    ) -> None:
        """A delete batch deletes every message across chunks of ten; only a bad handle fails."""
        await send_batch(clients.sqs, queue, [f"m{i}" for i in range(12)])
        messages = await drain(clients, queue, 12)
        handles = [m.receipt_handle for m in messages]
        failed = await delete_batch(clients.sqs, queue, [*handles, "bogus-handle"], policy=FAST)
        assert list(failed) == ["bogus-handle"]
        await change_visibility_batch(clients.sqs, queue, [(h, 0) for h in handles])
        assert await receive(clients.sqs, queue, max_messages=10, wait_seconds=0) == []

    @pytest.mark.parametrize(("count", "wait"), [(0, 0), (11, 0), (1, 21), (1, -1)])
    async def test_arguments_are_checked(
        self, clients: AwsClients, queue: str, count: int, wait: int
    ) -> None:
        """Out-of-range batch sizes and waits raise ValueError before any call."""
        with pytest.raises(ValueError, match="must be"):
            await receive(clients.sqs, queue, max_messages=count, wait_seconds=wait)


class TestLeases:
    async def test_bad_handle_is_lease_lost(self, clients: AwsClients, queue: str) -> None:
        """change_visibility with an invalid receipt handle raises LeaseLost."""
        with pytest.raises(LeaseLost) as info:
            await change_visibility(clients.sqs, queue, "not-a-handle", 10)
        assert isinstance(info.value.__cause__, AwsRejected)
        assert info.value.__cause__.code == "ReceiptHandleIsInvalid"

    async def test_batch_reports_the_bad_handle(self, clients: AwsClients, queue: str) -> None:
        """A visibility batch returns only the handles that failed, across chunks of ten."""
        await send_batch(clients.sqs, queue, [f"m{i}" for i in range(12)])
        messages = await drain(clients, queue, 12)
        assert len(messages) == 12
        entries = [(m.receipt_handle, 60) for m in messages] + [("bogus-handle", 60)]
        failed = await change_visibility_batch(clients.sqs, queue, entries, policy=FAST)
        assert failed == {"bogus-handle"}

    async def test_batch_of_nothing(self, clients: AwsClients, queue: str) -> None:
        """An empty visibility batch makes no call and fails nothing."""
        assert await change_visibility_batch(clients.sqs, queue, []) == set()

    async def test_batch_hands_messages_back(self, clients: AwsClients, queue: str) -> None:
        """Visibility 0 in a batch makes the messages receivable again at once."""
        await send_batch(clients.sqs, queue, ["a", "b"])
        messages = await drain(clients, queue, 2)
        failed = await change_visibility_batch(
            clients.sqs, queue, [(m.receipt_handle, 0) for m in messages]
        )
        assert failed == set()
        again = await drain(clients, queue, 2)
        assert sorted(m.body for m in again) == ["a", "b"]


class TestSend:
    async def test_send_batch_sends_everything(self, clients: AwsClients, queue: str) -> None:
        """25 bodies (some with a delay of 0 given as pairs) all arrive."""
        bodies: list[str | tuple[str, int]] = [f"b{i}" for i in range(20)]
        bodies += [(f"d{i}", 0) for i in range(5)]
        await send_batch(clients.sqs, queue, bodies, policy=FAST)
        got = await drain(clients, queue, 25)
        assert sorted(m.body for m in got) == sorted(
            [f"b{i}" for i in range(20)] + [f"d{i}" for i in range(5)]
        )

    async def test_send_batch_splits_by_size(self, clients: AwsClients, queue: str) -> None:
        """Ten 100 KB bodies exceed one call's 256 KiB and still all arrive."""
        bodies = [f"{i}" + "x" * 100_000 for i in range(10)]
        await send_batch(clients.sqs, queue, bodies, policy=FAST)
        got = await drain(clients, queue, 10)
        assert sorted(m.body for m in got) == sorted(bodies)

    async def test_send_batch_checks_delays(self, clients: AwsClients, queue: str) -> None:
        """A delay over SQS's 900 s raises ValueError."""
        with pytest.raises(ValueError, match="delay_seconds"):
            await send_batch(clients.sqs, queue, [("x", 901)])

    async def test_send_to_missing_queue_is_rejected(self, clients: AwsClients) -> None:
        """Sending to a queue that does not exist raises AwsRejected."""
        url = f"{clients.sqs.meta.endpoint_url}/123456789012/nope-{uuid.uuid4().hex}"
        with pytest.raises(AwsRejected):
            await send(clients.sqs, url, "x", policy=FAST)


class TestQueueAttributes:
    async def test_visibility_timeout(self, clients: AwsClients, queue: str) -> None:
        """The queue's default visibility timeout is read back."""
        assert await queue_visibility_timeout(clients.sqs, queue) == 30

    async def test_no_redrive_policy_means_no_dlq(self, clients: AwsClients, queue: str) -> None:
        """A queue without a redrive policy has no dead-letter queue."""
        assert await dead_letter_queue_url(clients.sqs, queue) is None

    async def test_dlq_is_found_from_the_redrive_policy(self, clients: AwsClients) -> None:
        """The dead-letter queue's URL is resolved from the redrive policy's ARN."""
        name = f"q-{uuid.uuid4().hex}"
        dlq_url = (await clients.sqs.create_queue(QueueName=f"{name}-dead"))["QueueUrl"]
        attrs = await clients.sqs.get_queue_attributes(
            QueueUrl=dlq_url, AttributeNames=["QueueArn"]
        )
        redrive = {"deadLetterTargetArn": attrs["Attributes"]["QueueArn"], "maxReceiveCount": "3"}
        url = (
            await clients.sqs.create_queue(
                QueueName=name, Attributes={"RedrivePolicy": json.dumps(redrive)}
            )
        )["QueueUrl"]
        assert await dead_letter_queue_url(clients.sqs, url) == dlq_url
