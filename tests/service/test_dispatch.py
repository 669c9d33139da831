"""Dispatch of listed files: per-export batches to the task queue, local overflow."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing

from pipeline._core.backoff import AWS_POLICY
from pipeline._core.messages import DownloadTask, decode_download_task
from pipeline._service.dispatch import (
    OVERFLOW_AFTER_SECONDS,
    FileTask,
    LocalDispatch,
    Outstanding,
    QueueDispatch,
)
from tests.support.fakesqs import FakeSqs


def _task(export_id: str, n: int) -> DownloadTask:
    return DownloadTask(
        export_id=export_id,
        correlation_id="c-dispatch",
        file_id=f"{export_id}-f{n:04d}",
        name=f"part-{n}.zip",
        download_url=f"http://127.0.0.2:1/downloads/{export_id}/{n}",
        size_bytes=100 + n,
    )


@asynccontextmanager
async def _queue() -> AsyncIterator[QueueDispatch]:
    """A dispatch to a fresh queue of the scripted SQS (the real calls: tests/adapters)."""
    sqs = FakeSqs()
    yield QueueDispatch(sqs, sqs.create_queue(f"dispatch-{uuid.uuid4().hex[:10]}"), AWS_POLICY)


async def _drain(dispatch: QueueDispatch) -> list[DownloadTask]:
    tasks: list[DownloadTask] = []
    while True:
        messages = await dispatch.sqs.receive(
            dispatch.queue_url, max_messages=10, wait_seconds=0, policy=AWS_POLICY
        )
        if not messages:
            return tasks
        for message in messages:
            tasks.append(decode_download_task(message.body))
            await dispatch.sqs.delete(dispatch.queue_url, message.receipt_handle, policy=AWS_POLICY)


class TestQueueDispatch:
    async def test_flush_sends_only_its_own_export(self) -> None:
        """Interleaved exports: one export's flush queues its tasks and none of the other's."""
        async with _queue() as dispatch:
            first, second = Outstanding(), Outstanding()
            for n in range(3):
                await dispatch.submit(_task("exp-a", n), first)
                await dispatch.submit(_task("exp-b", n), second)
            await dispatch.flush(first)
            assert sorted(t.file_id for t in await _drain(dispatch)) == [
                f"exp-a-f{n:04d}" for n in range(3)
            ]
            await dispatch.flush(second)
            assert sorted(t.file_id for t in await _drain(dispatch)) == [
                f"exp-b-f{n:04d}" for n in range(3)
            ]
            await dispatch.flush(second)
            assert await _drain(dispatch) == []

    async def test_full_batch_goes_without_flush(self) -> None:
        """The tenth submitted task of an export sends the batch at once, intact."""
        async with _queue() as dispatch:
            outstanding = Outstanding()
            sent = [_task("exp-c", n) for n in range(10)]
            for task in sent:
                await dispatch.submit(task, outstanding)
            assert sorted(await _drain(dispatch), key=lambda t: t.file_id) == sent


class TestLocalDispatch:
    async def test_overflow_goes_to_the_queue(self) -> None:
        """With no local worker free in time, files are queued; what fit stays local, counted."""
        async with _queue() as queue:
            send, receive = trio.open_memory_channel[FileTask](1)
            dispatch = LocalDispatch(send, overflow=queue)
            outstanding = Outstanding()
            for n in range(3):
                await dispatch.submit(_task("exp-d", n), outstanding)
            await dispatch.flush(outstanding)
            local = receive.receive_nowait()
            assert local.task.file_id == "exp-d-f0000"
            assert local.outstanding is outstanding
            assert sorted(t.file_id for t in await _drain(queue)) == ["exp-d-f0001", "exp-d-f0002"]
            with trio.move_on_after(0.05) as scope:
                await outstanding.wait()
            assert scope.cancelled_caught
            outstanding.done()
            with trio.fail_after(1):
                await outstanding.wait()

    async def test_files_wait_for_a_local_worker_that_frees_up(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A local worker taking a file every 0.1 s keeps them all local: nothing is queued."""
        async with _queue() as queue:
            send, receive = trio.open_memory_channel[FileTask](1)
            dispatch = LocalDispatch(send, overflow=queue)
            outstanding = Outstanding()
            taken: list[str] = []

            async def worker() -> None:
                async for file_task in receive:
                    await trio.sleep(0.1)
                    taken.append(file_task.task.file_id)
                    outstanding.done()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker)
                for n in range(6):
                    await dispatch.submit(_task("exp-w", n), outstanding)
                await dispatch.flush(outstanding)
                await outstanding.wait()
                nursery.cancel_scope.cancel()
            assert taken == [f"exp-w-f{n:04d}" for n in range(6)]
            assert await _drain(queue) == []

    async def test_after_one_wait_in_vain_the_rest_overflow_at_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Once a file waited in vain, the files listed after it are queued without waiting."""
        async with _queue() as queue:
            send, _receive = trio.open_memory_channel[FileTask](1)
            dispatch = LocalDispatch(send, overflow=queue)
            outstanding = Outstanding()
            await dispatch.submit(_task("exp-v", 0), outstanding)
            started = trio.current_time()
            for n in range(1, 9):
                await dispatch.submit(_task("exp-v", n), outstanding)
            assert trio.current_time() - started == OVERFLOW_AFTER_SECONDS
            await dispatch.flush(outstanding)
            assert len(await _drain(queue)) == 8
