"""The file stage: one ZIP from its download URL to verified objects in S3.

Per file, the reading is directory-first: one ranged request fetches the tail
(end-of-central-directory and usually the whole directory), so before a byte of
entry data arrives the worker knows every entry's name, sizes and method. It
streams the body, a ZIP of several large entries as groups over downloads of
their own (entry_groups.py). Two tasks share a stream's nursery: the ZIP reader
(download, inflate in worker threads, CRC-32 and SHA-256) and the uploader
(S3 writes, metadata looked up a window ahead: lookahead.py), joined by a
rendezvous channel, so a slow S3 slows the download instead of filling memory.

Failure rules (contract 4): an entry is uploaded only when its size and SHA-256
match its metadata item, and it becomes visible only after that check. A ZIP
that turns out corrupt fails the file with the reader's reason; entries that
were complete and verified before the fault stay. The uploader therefore drains
what the reader already sent before the file fails, and aborts only the entry
that was open at the fault.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import structlog
import trio

from pipeline._adapters.aws import s3sink as _s3sink
from pipeline._adapters.aws.bucket import OutputBucket
from pipeline._adapters.aws.jobcontrol import FileState, file_state
from pipeline._adapters.aws.s3parts import SMALL_PUT_BYTES, SMALL_PUTS_IN_FLIGHT, PartWindow
from pipeline._adapters.exportapi import ExportFile, RangeResult
from pipeline._core.accounting import EntryOutcome, FileResult, FileTally, JobStatus
from pipeline._core.verdicts import MetadataItem, verdict, worth_uploading
from pipeline._core.zip.compact import CompactDirectory
from pipeline._core.zip.decoder import EntryDigest
from pipeline._core.zip.directory import DirectoryParser, locate_directory
from pipeline._core.zip.events import (
    ContentEvent,
    EntryClosed,
    EntryData,
    EntryRefused,
    EntryStart,
)
from pipeline._core.zip.format import TAIL_BYTES, CentralEntry
from pipeline._core.zip.groups import MIN_GROUP_BYTES
from pipeline._errors import (
    DownloadRefused,
    ExportApiExhausted,
    PermanentError,
    TransientError,
    describe,
)
from pipeline._logging import bound
from pipeline._service.dispatch import FileTask
from pipeline._service.entry_groups import read_entries, streams_per_file
from pipeline._service.filework import FileStage
from pipeline._service.finalize import finalize_if_done, record_result
from pipeline._service.inflate import read_zip
from pipeline._service.lookahead import known_lookup, known_metadata, one_by_one
from pipeline._service.outage import outlived_max_wait
from pipeline._service.receiver import Slots
from pipeline._service.work import working

__all__ = ["FileStage", "process_file", "run_file_workers"]

log = structlog.get_logger("pipeline.files")

# Events between the reader and the uploader of one file: none, a rendezvous.
# The uploader only files a piece away (a part is sent in the background), so
# a buffer gained no speed and cost two pieces of memory per file (issue 10).
ZIP_EVENTS_BUFFER = 0
# _stream_entries with the file's arguments bound (directory None: none read).
ReadEntries = Callable[..., Awaitable[None]]
# Above this size an entry whose metadata gives a SHA-256 is first checked
# against the object already in S3 (a redelivery): a HEAD is cheap next to
# re-uploading it, and not worth it for small objects.
CHECK_EXISTING_ABOVE = 8 * 1024 * 1024


async def run_file_workers(
    receive: trio.MemoryReceiveChannel[FileTask],
    *,
    stage: FileStage,
    slots: Slots | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``MAX_CONCURRENT_JOBS`` file workers on ``receive`` until it ends.

    ``slots`` belong to the download-task queues: files that came from one
    carry a lease and its keeper, deleted when done, or handed back.
    """
    async with receive, trio.open_nursery() as nursery:
        for _ in range(stage.limits.workers):
            nursery.start_soon(_file_worker, receive.clone(), stage, slots)
        task_status.started()


async def _file_worker(
    receive: trio.MemoryReceiveChannel[FileTask], stage: FileStage, slots: Slots | None
) -> None:
    async with receive:
        async for file_task in receive:
            task = file_task.task
            with bound(
                correlationId=task.correlation_id,
                exportId=task.export_id,
                fileId=task.file_id,
                stage="files",
            ):
                stage.pool.started()
                began = trio.current_time()
                outcome: bool | None = None
                try:
                    outcome = await _run_file_task(file_task, stage, slots)
                finally:
                    stage.pool.finished(ok=outcome, seconds=trio.current_time() - began)


async def _run_file_task(file_task: FileTask, stage: FileStage, slots: Slots | None) -> bool | None:
    """Process one file task; whether its file is done (True) or failed for good (False),
    None when it was not recorded here (handed back, or recorded before)."""
    task = file_task.task
    outcome: bool | None = None
    # The file's result is stored (by this delivery or an earlier one).
    recorded = False
    # A file from the download-task queue holds a lease and one of its slots;
    # a file listed here for this process's workers holds neither.
    async with working(file_task.lease, slots=slots) as work:
        try:
            state = None
            if not file_task.listed_unrecorded:
                # From the queue: may be a duplicate, come late, or belong to
                # an export cancelled (or retried) since it was sent.
                state = await file_state(stage.jobs, task.export_id, task.file_id)
                if state.job_status is JobStatus.CANCELLED:
                    stage.cancels.cancel(task.export_id)
                else:
                    stage.cancels.resume(task.export_id)
            with stage.cancels.guard(task.export_id) as guard:
                outcome = await _run_unless_recorded(file_task, state, stage)
                recorded = True
                # A file of a message this process holds (all mode) is checked by
                # that message's task, once: one read per export, not per file.
                if file_task.outstanding is None:
                    # Apart from the record: if this fails, the redelivery finds the
                    # result recorded and only checks again, without redoing the file.
                    await finalize_if_done(stage.jobs, stage.table, task.export_id)
            if guard.cancelled_caught:  # the message goes; nothing is recorded
                log.info("file stopped: its export is cancelled")
            work.done()
        finally:
            if file_task.outstanding is not None:
                file_task.outstanding.done(recorded=recorded)
    return outcome if recorded else None


async def _run_unless_recorded(
    file_task: FileTask, state: FileState | None, stage: FileStage
) -> bool | None:
    """Process the file unless it has a result; whether it is done (True), failed
    for good (False), or had its result already (None).

    A task the job stage has just listed against the recorded results comes
    without ``state``: it needs no second look.
    """
    task = file_task.task
    if state is not None and state.recorded:
        # The result stands, nothing is redone; the job is only checked.
        log.info("file already recorded; not downloaded again")
        return None
    started = trio.current_time()
    file = ExportFile(
        file_id=task.file_id,
        name=task.name,
        download_url=task.download_url,
        size_bytes=task.size_bytes,
    )
    # The only file of a job begun with its listing: one metadata Query, and
    # its record may end the job (finalize.record_result).
    closing = file_task.outstanding is not None and file_task.outstanding.closing is not None
    known = await known_metadata(stage.table, task.export_id) if closing else None
    result = await process_file(file, task.export_id, stage, metadata=known)
    _log_result(result, trio.current_time() - started)
    if await record_result(stage.jobs, task.export_id, result, file_task.outstanding, known):
        stage.metrics.file_finished(result, trio.current_time() - started)
    else:
        log.info("file recorded meanwhile by another delivery; this result dropped")
    return result.ok


def _log_result(result: FileResult, seconds: float) -> None:
    fields: dict[str, Any] = {
        "entriesUploaded": result.entries_uploaded,
        "entriesSkipped": result.entries_skipped,
        "entriesRejected": result.entries_rejected,
        "bytesUploaded": result.bytes_uploaded,
        "seconds": round(seconds, 3),
    }
    if result.ok:
        log.info("file done", **fields)
    else:
        log.error("file failed", error=result.error, **fields)


async def process_file(
    file: ExportFile,
    export_id: str,
    stage: FileStage,
    *,
    min_group_bytes: int = MIN_GROUP_BYTES,
    metadata: Mapping[str, MetadataItem] | None = None,
) -> FileResult:
    """Read one ZIP file of ``export_id`` into S3; never raises for a bad file.

    A file that cannot be processed for good (refused, corrupt, the Export API
    down past ``EXPORT_MAX_WAIT_SECONDS`` of the job) gives a failed result
    with a one-line reason. The API down for less, or our own infrastructure
    (AWS past its retries), is raised: no verdict, the file is tried again later. Large entries
    may be read over several downloads at once (see entry_groups.py). ``metadata``: every
    metadata item of the export, when read already.
    """
    tally = FileTally(file_id=file.file_id, name=file.name, size_bytes=file.size_bytes)
    try:
        stream = functools.partial(_stream_entries, export_id, stage, tally, known=metadata)
        await _read_file(file, export_id, stage, stream, min_group_bytes)
    except PermanentError as err:
        if not err.verdict:
            raise  # our infrastructure failed, not the file: it is tried again later
        return tally.result(error=str(err))
    except ExportApiExhausted as err:
        if await outlived_max_wait(stage.jobs, stage.limits.max_wait_seconds, export_id, None):
            return tally.result(error=str(err))
        raise
    except TransientError:
        raise  # not a verdict on the file: it is tried again
    except Exception as err:
        # A bug met on this file's bytes: fail the file with what we know
        # rather than redeliver it forever.
        log.exception("internal error reading file")
        return tally.result(error=f"internal error: {describe(err)}")
    return tally.result()


async def _read_file(
    file: ExportFile, export_id: str, stage: FileStage, stream: ReadEntries, min_group_bytes: int
) -> None:
    limit = stage.limits.max_file_size
    if file.size_bytes > limit:
        mb = stage.limits.max_file_size_mb
        msg = f"file is {file.size_bytes} bytes, over MAX_FILE_SIZE_MB ({mb} MB); not downloaded"
        raise DownloadRefused(msg)
    tail = await stage.api.fetch_range(file, max(0, file.size_bytes - TAIL_BYTES))
    if tail.total_size is not None and tail.total_size > limit:
        msg = f"file is {tail.total_size} bytes by Content-Length, over MAX_FILE_SIZE_MB"
        raise DownloadRefused(msg)
    if not tail.ranged:
        # The server ignored Range: stream what it sent, trusting local headers.
        log.info("range not honoured; streaming without the central directory")

        async with tail.stream() as chunks:
            await stream(chunks, None, one_by_one(stage.table, export_id))
        return
    directory = await _read_directory(file, tail, stage)
    if all(entry.is_dir for entry in directory):
        return
    await read_entries(
        file,
        directory,
        export_id,
        stream,
        api=stage.api,
        table=stage.table,
        streams=streams_per_file(stage.limits, stage.pool.in_flight),
        min_group_bytes=min_group_bytes,
        held=tail,
    )


async def _read_directory(
    file: ExportFile, tail: RangeResult, stage: FileStage
) -> CompactDirectory:
    """The central directory, streamed and parsed as it arrives when it starts before the tail."""
    location = locate_directory(tail.data, tail.start, tail.total_size or file.size_bytes)
    parser = DirectoryParser(location)
    if location.offset >= tail.start:
        begin = location.offset - tail.start
        parser.feed(tail.data[begin : begin + location.size])
    else:
        # Never held whole: memory is the parsed entries (see MAX_DIRECTORY_BYTES).
        async with stage.api.download(file, start=location.offset) as chunks:
            async for chunk in chunks:
                parser.feed(chunk)
                if parser.complete:
                    break
    return parser.close()


@attrs.define
class _Failure:
    """The first permanent error of a file's reader or uploader (or the API gone)."""

    error: PermanentError | ExportApiExhausted | None = None


async def _stream_entries(
    export_id: str,
    stage: FileStage,
    tally: FileTally,
    chunks: AsyncIterable[bytes],
    directory: Sequence[CentralEntry] | None,
    lookup: Callable[[str], Awaitable[MetadataItem | None]],
    following: CentralEntry | None = None,
    *,
    known: Mapping[str, MetadataItem] | None = None,
) -> None:
    lookup = known_lookup(known) or lookup  # every item read already: no lookups
    send, receive = trio.open_memory_channel[ContentEvent](ZIP_EVENTS_BUFFER)
    failure = _Failure()

    async def reader() -> None:
        # On a reader fault the uploader is not cancelled: it drains what was
        # already read (complete entries stay) and aborts the open one.
        try:
            await read_zip(
                chunks,
                directory,
                send,
                limits=stage.limits.zip,
                limiter=stage.inflate_limiter,
                following=following,
            )
        except (PermanentError, ExportApiExhausted) as err:
            failure.error = err

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        try:
            # The nursery also runs the open entry's multipart parts in flight.
            await _upload_entries(receive, lookup, export_id, stage.bucket, tally, nursery)
        except PermanentError as err:
            failure.error = err
            nursery.cancel_scope.cancel()
    if failure.error is not None:
        raise failure.error


@attrs.define
class _OpenEntry:
    """The entry being read, and where its bytes go."""

    entry: CentralEntry
    item: MetadataItem | None
    upload: _s3sink.EntryUpload | None = None
    # The identical object is already in S3 (a redelivery): only verify.
    already_there: bool = False


async def _upload_entries(
    receive: trio.MemoryReceiveChannel[ContentEvent],
    lookup: Callable[[str], Awaitable[MetadataItem | None]],
    export_id: str,
    bucket: OutputBucket,
    tally: FileTally,
    parts: trio.Nursery,
) -> None:
    current: _OpenEntry | None = None
    # A small entry's PutObject runs beside the reading; a failed one is raised
    # by the next submit or the drain, as a multipart's parts are.
    puts = PartWindow(parts, SMALL_PUTS_IN_FLIGHT, trio.CapacityLimiter(SMALL_PUTS_IN_FLIGHT))
    try:
        async with receive:
            async for event in receive:
                if isinstance(event, EntryStart):
                    current = await _open_entry(event.entry, lookup, export_id, bucket, parts)
                elif isinstance(event, EntryData):
                    if current is not None and current.upload is not None:
                        await current.upload.write(event.data, event.crc32)
                elif isinstance(event, EntryClosed):
                    if current is not None:
                        await _close_entry(current, event.digest, tally, puts)
                    current = None
                elif isinstance(event, EntryRefused):
                    item = await lookup(event.entry.name)
                    if current is not None and current.upload is not None:
                        await current.upload.abort()
                    current = None
                    log.warning("entry rejected", path=event.entry.name, reason=event.reason)
                    tally.count(
                        EntryOutcome.REJECTED, path=event.entry.name, has_item=item is not None
                    )
        await puts.drain()  # the entries read are all in S3 (or the file fails)
    finally:
        if current is not None and current.upload is not None:
            await current.upload.abort()


async def _open_entry(
    entry: CentralEntry,
    lookup: Callable[[str], Awaitable[MetadataItem | None]],
    export_id: str,
    bucket: OutputBucket,
    parts: trio.Nursery,
) -> _OpenEntry:
    item = await lookup(entry.name)
    opened = _OpenEntry(entry=entry, item=item)
    if not worth_uploading(item):
        return opened
    key = bucket.object_key(export_id, entry.name)
    large = entry.uncompressed_size > CHECK_EXISTING_ABOVE
    if item.sha256 is not None and large and await bucket.existing_sha256(key) == item.sha256:
        opened.already_there = True
        return opened
    opened.upload = await bucket.open_entry_upload(key, expected_sha256=item.sha256, parts=parts)
    return opened


async def _close_entry(
    current: _OpenEntry, digest: EntryDigest, tally: FileTally, puts: PartWindow
) -> None:
    entry, decided = current.entry, verdict(current.item, digest)
    if decided.outcome is EntryOutcome.SKIPPED:
        tally.count(EntryOutcome.SKIPPED, path=entry.name, has_item=False)
        return
    if decided.outcome is EntryOutcome.REJECTED:
        if current.upload is not None:
            await current.upload.abort()
        log.warning("entry rejected", path=entry.name, reason=decided.reason)
        tally.count(EntryOutcome.REJECTED, path=entry.name, has_item=True)
        return
    upload = current.upload
    if upload is not None and digest.size <= SMALL_PUT_BYTES:  # one PutObject, no parts

        async def put() -> None:
            await upload.commit(digest.sha256_hex)
            tally.count(EntryOutcome.UPLOADED, path=entry.name, has_item=True, size=digest.size)

        await puts.submit(put)
        return
    if upload is not None:
        await upload.commit(digest.sha256_hex)
    tally.count(EntryOutcome.UPLOADED, path=entry.name, has_item=True, size=digest.size)
