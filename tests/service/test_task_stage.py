"""The task stage on a scripted SQS: poison dead-lettered, a task passed on with its
lease and slot, a send cut short by a shutdown handed back."""

from __future__ import annotations

import trio
import trio.testing

from pipeline._core.backoff import AWS_POLICY
from pipeline._core.messages import DownloadTask, encode_download_task
from pipeline._service.dispatch import FileTask
from pipeline._service.lease import Delivery, LeaseKeeper
from pipeline._service.receiver import Slots
from pipeline._service.task_stage import run_task_stage
from tests.support.fakesqs import FakeSqs

TASK = DownloadTask(
    export_id="exp-1",
    correlation_id="c-1",
    file_id="f-1",
    name="one.zip",
    download_url="https://api.example/one.zip",
    size_bytes=10,
)


async def delivered(
    sqs: FakeSqs, url: str, keeper: LeaseKeeper, slots: Slots, bodies: list[str]
) -> list[Delivery]:
    """``bodies`` sent, received and leased, a slot taken for each."""
    await sqs.send_batch(url, bodies, policy=AWS_POLICY)
    assert await slots.take(len(bodies)) == len(bodies)
    messages = await sqs.receive(url, max_messages=len(bodies), wait_seconds=0, policy=AWS_POLICY)
    return [Delivery(message, keeper.hold(message)) for message in messages]


async def test_poison_goes_and_a_task_is_passed_on_with_its_lease_and_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A body that does not decode is dead-lettered and its slot freed; a valid task
    reaches the file workers still leased, its slot still taken."""
    sqs, slots = FakeSqs(), Slots(2)
    url, dlq = sqs.create_queue("tasks"), sqs.create_queue("tasks-dlq")
    keeper = LeaseKeeper(sqs, url, 30, AWS_POLICY)
    deliveries = await delivered(sqs, url, keeper, slots, ["{not json", encode_download_task(TASK)])
    send_in, receive_in = trio.open_memory_channel[Delivery](2)
    send_out, receive_out = trio.open_memory_channel[FileTask](1)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_task_stage(
                receive_in,
                send_out,
                slots=slots,
                dead_letter_url=dlq,
                task_status=task_status,
            )
        )
        async with send_in:
            for delivery in deliveries:
                await send_in.send(delivery)
        file_task = await receive_out.receive()
    assert file_task.task == TASK
    assert file_task.lease is deliveries[1].lease
    assert file_task.lease.scope is None
    assert not file_task.lease.released
    assert slots.in_use == 1
    assert sqs.depth(url) == (0, 1)
    (moved,) = sqs.messages(dlq)
    assert moved.body == "{not json"


async def test_a_send_cut_short_by_shutdown_hands_the_task_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With the file workers' buffer full at shutdown, the waiting task goes back to
    the queue at once and its slot is freed."""
    sqs, slots = FakeSqs(), Slots(1)
    url = sqs.create_queue("tasks")
    keeper = LeaseKeeper(sqs, url, 30, AWS_POLICY)
    (delivery,) = await delivered(sqs, url, keeper, slots, [encode_download_task(TASK)])
    send_in, receive_in = trio.open_memory_channel[Delivery](1)
    send_out, receive_out = trio.open_memory_channel[FileTask](0)
    await send_in.send(delivery)
    with trio.move_on_after(5) as shutdown:
        await run_task_stage(receive_in, send_out, slots=slots, dead_letter_url=None)
    assert shutdown.cancelled_caught
    assert slots.in_use == 0
    assert keeper.held == 0
    assert sqs.depth(url) == (1, 0)
    receive_out.close()
