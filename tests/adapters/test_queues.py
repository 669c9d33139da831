"""The Queues seam: SqsQueues against moto, and the scripted fake held to the same behaviour.

The lease, receiver, sweeper and dispatch tests run on
:class:`~tests.support.fakesqs.FakeSqs`; each test here runs once on SQS (moto,
real HTTP) and once on the fake, so the fake answers as SQS does wherever the
service relies on it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from pipeline._adapters.aws.clients import open_aws_clients
from pipeline._adapters.aws.queues import Queues, SqsQueues
from pipeline._adapters.aws.sqs import ReceivedMessage
from pipeline._core.backoff import AWS_POLICY
from tests.support.fakesqs import FakeSqs


@pytest.fixture(params=["moto", "fake"])
async def queue(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Queues, str]]:
    """A fresh queue with a 60 s visibility timeout, on moto or on the fake."""
    name = f"seam-{uuid.uuid4().hex[:10]}"
    if request.param == "fake":
        fake = FakeSqs()
        yield fake, fake.create_queue(name, visibility_timeout=60)
        return
    # Only the moto runs start the moto server.
    endpoint = request.getfixturevalue("aws_endpoint")
    async with open_aws_clients(region="us-east-1", endpoint_url=endpoint, pool_size=4) as aws:
        created = await aws.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})
        yield SqsQueues(aws.sqs), created["QueueUrl"]


async def receive_all(sqs: Queues, url: str) -> list[ReceivedMessage]:
    """Everything visible now, in as many receives as it takes."""
    received: list[ReceivedMessage] = []
    while batch := await sqs.receive(url, max_messages=10, wait_seconds=0, policy=AWS_POLICY):
        received += batch
    return received


async def test_a_message_sent_is_received_once(queue: tuple[Queues, str]) -> None:
    """A sent message comes back with its ID and body, first delivery; then it is in flight."""
    sqs, url = queue
    message_id = await sqs.send(url, "hello", policy=AWS_POLICY)
    (message,) = await receive_all(sqs, url)
    assert (message.message_id, message.body, message.receive_count) == (message_id, "hello", 1)
    assert message.sent_at is not None
    assert message.first_received_at is not None
    assert await receive_all(sqs, url) == []


async def test_handed_back_comes_again_with_a_new_handle(queue: tuple[Queues, str]) -> None:
    """Visibility 0 hands a message back: the next receive is its second, with a new handle."""
    sqs, url = queue
    await sqs.send(url, "again", policy=AWS_POLICY)
    (first,) = await receive_all(sqs, url)
    assert (
        await sqs.change_visibility_batch(url, [(first.receipt_handle, 0)], policy=AWS_POLICY)
        == set()
    )
    (second,) = await receive_all(sqs, url)
    assert second.receive_count == 2
    assert second.receipt_handle != first.receipt_handle


async def test_extending_a_deleted_message_fails_for_its_handle(queue: tuple[Queues, str]) -> None:
    """After a delete, a visibility change with that handle is reported failed; others succeed."""
    sqs, url = queue
    await sqs.send_batch(url, ["gone", "kept"], policy=AWS_POLICY)
    received = {m.body: m for m in await receive_all(sqs, url)}
    gone, kept = received["gone"].receipt_handle, received["kept"].receipt_handle
    await sqs.delete(url, gone, policy=AWS_POLICY)
    failed = await sqs.change_visibility_batch(url, [(gone, 60), (kept, 60)], policy=AWS_POLICY)
    assert failed == {gone}
    assert await receive_all(sqs, url) == []


async def test_batches_past_ten(queue: tuple[Queues, str]) -> None:
    """Twelve bodies go in one send_batch, and twelve handles in one visibility change."""
    sqs, url = queue
    bodies = [f"m{n}" for n in range(12)]
    await sqs.send_batch(url, bodies, policy=AWS_POLICY)
    received = await receive_all(sqs, url)
    assert sorted(m.body for m in received) == sorted(bodies)
    handles = [(m.receipt_handle, 0) for m in received]
    assert await sqs.change_visibility_batch(url, handles, policy=AWS_POLICY) == set()
    assert len(await receive_all(sqs, url)) == 12


async def test_visibility_out_of_range_is_refused_up_front(queue: tuple[Queues, str]) -> None:
    """A visibility above 12 hours is a ValueError before any call."""
    sqs, url = queue
    with pytest.raises(ValueError, match="visibility timeout must be"):
        await sqs.change_visibility_batch(url, [("handle", 13 * 3600)], policy=AWS_POLICY)
