"""Where the job stage sends the files it lists.

In ``all`` mode files go to the file workers of this process through a bounded
memory channel, and the export-job message stays leased until they are done.
In ``orchestrator`` mode they go to the download-task queue, batched, and the
message is done once they are safely queued. With ``--mode all`` and a
download-task queue configured, files that find no local worker within
:data:`OVERFLOW_AFTER_SECONDS` overflow to that queue, where any process (this
one included) picks them up: several ``all`` processes then share a burst.
With a high lane, a high export's files go the same ways, with the high task
queue for the queue (:class:`LaneDispatch`).

The wait is there because a file that goes round the queue costs more than
one kept here: a send, a receive, a delete, and before its download a read of
its result and its job (a redelivery, or a cancel since it was queued), then
its own check whether it finished the job. Small files free a local worker
every few milliseconds, so a wide export of them stays local; when the
workers are busy with slow files, the first file that waited the whole
time overflows and so do the files listed after it, without waiting, until a
local worker takes one again.
"""

from __future__ import annotations

import weakref
from typing import Protocol

import attrs
import structlog
import trio

from pipeline._adapters.aws.jobitems import JobItem
from pipeline._adapters.aws.queues import Queues
from pipeline._config import Settings
from pipeline._core.backoff import Backoff
from pipeline._core.lanes import Priority
from pipeline._core.messages import DownloadTask, encode_download_task
from pipeline._service.lease import Lease

__all__ = [
    "OVERFLOW_AFTER_SECONDS",
    "FileDispatch",
    "FileTask",
    "LaneDispatch",
    "LocalDispatch",
    "Outstanding",
    "QueueDispatch",
    "lane_dispatch",
]

log = structlog.get_logger("pipeline.dispatch")

# SendMessageBatch takes ten entries; a listing page (up to 100 files) is sent
# as soon as it is read, in batches of this size.
SEND_BATCH = 10
# How long a listed file waits for a local worker before it overflows to the
# download-task queue (all mode with a task queue; see the module doc).
OVERFLOW_AFTER_SECONDS = 0.5


@attrs.define(eq=False)
class Outstanding:
    """Counts files handed to local workers that have not finished yet."""

    _count: int = 0
    _idle: trio.Event = attrs.field(factory=trio.Event)
    # Files that ended without a recorded result (cancelled, store unreachable):
    # the message that listed them must be handed back, not deleted.
    unrecorded: int = 0
    # A job of one file, begun just now with its listing: that file's record
    # may end it in the same transaction (file_stage), and then says so here.
    closing: JobItem | None = None
    ended: bool = False

    def __attrs_post_init__(self) -> None:
        self._idle.set()

    def add(self) -> None:
        if self._count == 0:
            self._idle = trio.Event()
        self._count += 1

    def done(self, *, recorded: bool = True) -> None:
        if not recorded:
            self.unrecorded += 1
        self._count -= 1
        if self._count == 0:
            self._idle.set()

    async def wait(self) -> None:
        """Return once every added file is done."""
        await self._idle.wait()


@attrs.frozen
class FileTask:
    """One file for a file worker, with whatever must happen when it ends."""

    task: DownloadTask
    # Worker mode: the download-task message's lease (ended by the worker's
    # ``working``; the lease knows its queue's keeper, normal or high).
    lease: Lease | None = None
    # All mode: tells the export-job message's task that this file is done.
    outstanding: Outstanding | None = None
    # Listed by this process just now as having no recorded result, so the
    # worker need not ask the jobs table again before downloading it.
    listed_unrecorded: bool = False


class FileDispatch(Protocol):
    """Hands listed files to whoever processes them."""

    async def submit(self, task: DownloadTask, outstanding: Outstanding) -> None: ...

    async def flush(self, outstanding: Outstanding) -> None:
        """Make sure every file submitted with ``outstanding`` has been handed over."""
        ...


@attrs.define(eq=False)
class QueueDispatch:
    """Sends files to the download-task queue, ten to a batch, each export on its own.

    One dispatch serves every export the job stage lists at the same time, so
    pending tasks are kept per export (keyed by its :class:`Outstanding`).
    A shared list would let one export's ``flush`` find nothing to send while
    its tasks ride in another export's batch still in flight, and its message
    would then be deleted before they were queued, or with them lost if that
    batch failed.
    """

    sqs: Queues
    queue_url: str
    policy: Backoff
    # Weak keys: an export that fails mid-listing never flushes, and its
    # leftovers go with its Outstanding instead of piling up here.
    _pending: weakref.WeakKeyDictionary[Outstanding, list[DownloadTask]] = attrs.field(
        init=False, factory=weakref.WeakKeyDictionary
    )

    async def submit(self, task: DownloadTask, outstanding: Outstanding) -> None:
        pending = self._pending.setdefault(outstanding, [])
        pending.append(task)
        if len(pending) >= SEND_BATCH:
            await self.flush(outstanding)
        else:
            await trio.lowlevel.checkpoint()

    async def flush(self, outstanding: Outstanding) -> None:
        """Send what is pending for this export; raises if some task could not be queued.

        On an error the tasks not yet confirmed are dropped from the pending
        list: the caller hands the export-job message back, and the next run
        lists the export again.
        """
        pending = self._pending.pop(outstanding, [])
        if pending:
            await self.sqs.send_batch(
                self.queue_url,
                [encode_download_task(task) for task in pending],
                policy=self.policy,
            )
            log.info("download tasks queued", count=len(pending))
        else:
            await trio.lowlevel.checkpoint()


@attrs.define(eq=False)
class LocalDispatch:
    """Sends files to this process's file workers; overflow goes to a queue if given."""

    send: trio.MemorySendChannel[FileTask]
    overflow: QueueDispatch | None = None
    # A file waited OVERFLOW_AFTER_SECONDS in vain: the next ones overflow at once.
    _overflowing: bool = attrs.field(init=False, default=False)

    async def submit(self, task: DownloadTask, outstanding: Outstanding) -> None:
        file_task = FileTask(task=task, outstanding=outstanding, listed_unrecorded=True)
        if self.overflow is None:
            await self._send(file_task, outstanding)
            return
        wait = 0.0 if self._overflowing else OVERFLOW_AFTER_SECONDS
        with trio.move_on_after(wait) as waited:
            try:
                self.send.send_nowait(file_task)
                outstanding.add()
            except trio.WouldBlock:
                await self._send(file_task, outstanding)
        self._overflowing = waited.cancelled_caught
        if self._overflowing:
            await self.overflow.submit(task, outstanding)
        await trio.lowlevel.checkpoint()

    async def _send(self, file_task: FileTask, outstanding: Outstanding) -> None:
        outstanding.add()
        try:
            await self.send.send(file_task)
        except BaseException:
            outstanding.done()
            raise

    async def flush(self, outstanding: Outstanding) -> None:
        if self.overflow is not None:
            await self.overflow.flush(outstanding)
        else:
            await trio.lowlevel.checkpoint()


@attrs.frozen
class LaneDispatch:
    """Sends each file the way of its export's lane: a high one's to ``high``."""

    normal: FileDispatch
    high: FileDispatch

    async def submit(self, task: DownloadTask, outstanding: Outstanding) -> None:
        lane = self.high if task.priority is Priority.HIGH else self.normal
        await lane.submit(task, outstanding)

    async def flush(self, outstanding: Outstanding) -> None:
        # An export's files all take one lane; the other has nothing pending.
        await self.normal.flush(outstanding)
        await self.high.flush(outstanding)


def lane_dispatch(
    settings: Settings, sqs: Queues, local: trio.MemorySendChannel[FileTask] | None
) -> FileDispatch:
    """Where the job stages send listed files: this process's workers (``local``;
    overflow to the task queue, if any), or the task queue; a high export's to
    the high task queue when there is one."""

    def towards(url: str | None) -> FileDispatch:
        queue = None if url is None else QueueDispatch(sqs, url, sqs.policy)
        if local is None:
            assert queue is not None  # orchestrator mode requires the queue (config)
            return queue
        return LocalDispatch(local, overflow=queue)

    normal = towards(settings.sqs_download_tasks_url)
    if settings.sqs_download_tasks_high_url is None:
        return normal
    return LaneDispatch(normal=normal, high=towards(settings.sqs_download_tasks_high_url))
