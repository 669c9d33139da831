"""The task stage: download-task messages become file tasks for the workers.

Each delivery from the download-task queue is decoded; a valid one goes to the
file workers with its lease (the worker deletes the message when the file's
result is recorded, or hands it back). A body that cannot be decoded is poison:
logged once, moved to the dead-letter queue, deleted here.
"""

from __future__ import annotations

import structlog
import trio

from . import _sqs
from ._deps import Deps
from ._dispatch import FileTask
from ._errors import PipelineError, PoisonMessage
from ._lease import Delivery, LeaseKeeper
from ._messages import decode_download_task
from ._receiver import Slots

__all__ = ["run_task_stage"]

log = structlog.get_logger("pipeline.tasks")

# SQS caps a message's visibility timeout at 12 hours.
MAX_VISIBILITY = 43200


async def run_task_stage(
    receive: trio.MemoryReceiveChannel[Delivery],
    send: trio.MemorySendChannel[FileTask],
    *,
    deps: Deps,
    keeper: LeaseKeeper,
    slots: Slots,
    dead_letter_url: str | None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Decode download tasks from ``receive`` into ``send`` until ``receive`` ends."""
    async with receive, send:
        task_status.started()
        async for delivery in receive:
            try:
                task = decode_download_task(delivery.message.body)
            except PoisonMessage as err:
                await _dead_letter(delivery, str(err), deps, keeper, dead_letter_url)
                slots.give_back()
                continue
            try:
                await send.send(FileTask(task=task, lease=delivery.lease))
            except trio.Cancelled:
                slots.give_back()
                await keeper.hand_back([delivery.lease])
                raise


async def _dead_letter(
    delivery: Delivery,
    reason: str,
    deps: Deps,
    keeper: LeaseKeeper,
    dead_letter_url: str | None,
) -> None:
    if dead_letter_url is None:
        log.error("poison download task; no dead-letter queue, parked", reason=reason)
        delivery.lease.hand_back_delay = MAX_VISIBILITY
        await keeper.hand_back([delivery.lease])
        return
    try:
        await _sqs.send(
            deps.aws.sqs, dead_letter_url, delivery.message.body, policy=deps.aws_policy
        )
    except PipelineError as err:
        # The DLQ is unreachable: the message comes back and is tried again.
        log.error("poison download task not moved; handed back", reason=reason, error=str(err))
        await keeper.hand_back([delivery.lease])
        return
    log.error("poison download task; moved to the dead-letter queue", reason=reason)
    await keeper.complete(delivery.lease)
