"""The task stage: download-task messages become file tasks for the workers.

Each delivery from the download-task queue is decoded; a valid one is passed
on to the file workers with its lease and its slot (the worker's ``working``
ends the message when the file's result is recorded, or hands it back). A body
that cannot be decoded is poison: logged once, moved to the dead-letter queue,
deleted here.
"""

from __future__ import annotations

import trio

from pipeline._core.messages import decode_download_task
from pipeline._errors import PoisonMessage
from pipeline._service.dispatch import FileTask
from pipeline._service.lease import Delivery
from pipeline._service.receiver import Slots
from pipeline._service.work import working

__all__ = ["run_task_stage"]


async def run_task_stage(
    receive: trio.MemoryReceiveChannel[Delivery],
    send: trio.MemorySendChannel[FileTask],
    *,
    slots: Slots,
    dead_letter_url: str | None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Decode download tasks from ``receive`` into ``send`` until ``receive`` ends."""
    async with receive, send:
        task_status.started()
        async for delivery in receive:
            async with working(delivery, slots=slots, dead_letter_url=dead_letter_url) as work:
                try:
                    task = decode_download_task(delivery.message.body)
                except PoisonMessage as err:
                    work.poison(str(err))
                    continue
                await send.send(FileTask(task=task, lease=delivery.lease))
                work.passed_on()
