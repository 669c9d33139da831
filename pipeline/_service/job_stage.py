"""The job stage: from an export-job message to listed files.

For each message: decode it (a poison body goes to the dead-letter queue, once),
then for each export ask the Export API for its status. A ``READY`` export is
listed page by page and each file handed to the dispatch; ``PENDING`` exports
are handed back as a new delayed message instead of holding a slot or a lease
for hours; ``FAILED`` or unknown exports fail their job. An export whose
Export API calls ran out of attempts is sent again the same way, a few seconds
later, until its job is older than ``EXPORT_MAX_WAIT_SECONDS`` (outage.py).
A job whose ``notBefore`` has not come is parked the same way, before any
status call: WAITING, sent back delayed by what is left (at most SQS's 15
minutes, so a far one comes round again), and the message deleted. All go
back to the queue the message came from, priority and start time kept.
What each of these
does to the job is :mod:`pipeline._core.lifecycle`'s decision on the job as
read here (a message of an older run of the job does nothing); this stage
does the I/O around it.

The message is deleted once all its work is done (all mode: its files are
processed; orchestrator mode: its files are queued): the stage says so to
``working`` (work.py), which ends the message. If its work is cancelled at
shutdown, it is handed back instead and redelivered at once; the job store
makes the second run cheap and exact.
"""

from __future__ import annotations

import datetime as dt
import math

import attrs
import structlog
import trio

from pipeline._adapters.aws.jobstore import JobItem, JobStore
from pipeline._adapters.aws.metadata import MetadataTable
from pipeline._adapters.exportapi import ExportApi, ExportFile
from pipeline._core import lifecycle
from pipeline._core.accounting import JobStatus
from pipeline._core.ending import OUTAGE_HAND_BACK_SECONDS
from pipeline._core.lifecycle import Change, Decision, Refuse, Skip, Stay
from pipeline._core.messages import (
    DownloadTask,
    ExportJob,
    decode_export_job,
    encode_export_job,
    iso_utc,
    stated_correlation_id,
)
from pipeline._errors import (
    ExportApiExhausted,
    ExportNotFound,
    ExportNotReady,
    FilesUnrecorded,
    PermanentError,
    PoisonMessage,
)
from pipeline._logging import bound
from pipeline._service.cancel import CancelWatch
from pipeline._service.dispatch import FileDispatch, Outstanding
from pipeline._service.finalize import finalize_if_done
from pipeline._service.lease import Delivery, LeaseKeeper
from pipeline._service.outage import outlived_max_wait
from pipeline._service.receiver import Slots
from pipeline._service.work import working

__all__ = ["EXPORTS_AT_ONCE", "JobStage", "run_job_stage"]

log = structlog.get_logger("pipeline.jobs")

# SQS caps DelaySeconds at 15 minutes; longer poll intervals wait in steps.
MAX_SQS_DELAY = 900
# Exports of one message handled at once: a message may carry a thousand IDs,
# and a thousand status calls at once would trip the Export API's limits.
EXPORTS_AT_ONCE = 10


@attrs.frozen
class JobStage:
    """What the job stage of one queue uses, made once in ``graph.py``."""

    api: ExportApi
    jobs: JobStore
    # Read when a job's last file is done here, to count the entries missing.
    table: MetadataTable
    # The exports cancelled, and the cancel scopes of the work on them here.
    cancels: CancelWatch
    # EXPORT_POLL_INTERVAL_SECONDS and EXPORT_MAX_WAIT_SECONDS.
    poll_interval_seconds: float
    max_wait_seconds: float
    # The queue's lease keeper; new messages go back to its queue.
    keeper: LeaseKeeper
    slots: Slots
    dispatch: FileDispatch
    dead_letter_url: str | None
    # Whether the message waits for its files to be processed here (all mode).
    waits_for_files: bool


async def run_job_stage(
    receive: trio.MemoryReceiveChannel[Delivery],
    *,
    stage: JobStage,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Handle each export-job delivery in its own task until the channel ends."""
    async with receive, trio.open_nursery() as nursery:
        task_status.started()
        async for delivery in receive:
            nursery.start_soon(_handle_message, delivery, stage)


async def _handle_message(delivery: Delivery, stage: JobStage) -> None:
    message = delivery.message
    job: ExportJob | None = None
    poison = ""
    context: dict[str, str] = {}
    try:
        job = decode_export_job(message.body)
    except PoisonMessage as err:
        poison = str(err)
        # The poison line carries the correlation ID the sender stated (and printed).
        if stated := stated_correlation_id(message.body):
            context["correlationId"] = stated
    with bound(messageId=message.message_id, stage="jobs", **context):
        async with working(
            delivery, slots=stage.slots, dead_letter_url=stage.dead_letter_url
        ) as work:
            if job is None:
                work.poison(poison)
                return
            await _process_message(job, stage)
            work.done()


async def _process_message(job: ExportJob, stage: JobStage) -> None:
    """Do a message's work: each of its exports, and those to send again."""
    with bound(correlationId=job.correlation_id):
        log.info("export job received", exportIds=list(job.export_ids))
        # Still pending: each export's run, to name in the hand-back.
        pending: dict[str, int | None] = {}
        # Exports whose Export API calls ran out of attempts: they come again
        # in seconds, kept in SQS by the intake gate while the API is down.
        later: dict[str, int | None] = {}
        limiter = trio.CapacityLimiter(EXPORTS_AT_ONCE)
        async with trio.open_nursery() as nursery:
            for export_id in job.export_ids:
                nursery.start_soon(
                    _run_export_logged, export_id, job, stage, (pending, later), limiter
                )
        if pending:
            wait = stage.poll_interval_seconds
            if (left := _left_to_wait(job)) > 0:
                # Parked until notBefore: back when its time has come.
                wait = math.ceil(left)
            await _send_again(pending, job, stage, int(min(wait, MAX_SQS_DELAY)))
        if later:
            await _send_again(later, job, stage, OUTAGE_HAND_BACK_SECONDS[1])


async def _send_again(
    exports: dict[str, int | None], job: ExportJob, stage: JobStage, delay: int
) -> None:
    """Send the exports to be tried again as a new message to the queue the job came
    from (its priority and start time kept), delayed by ``delay`` seconds.

    Each for the run it was tried in, where known: if the job moves on to
    another run meanwhile (cancelled and retried), the message starts nothing.
    """
    ids = [export_id for export_id in job.export_ids if export_id in exports]
    runs = {export_id: run for export_id, run in exports.items() if run is not None}
    body = encode_export_job(attrs.evolve(job, export_ids=tuple(ids), generations=runs))
    queue = stage.keeper.sqs
    await queue.send(stage.keeper.queue_url, body, delay_seconds=delay, policy=queue.policy)
    log.info("exports handed back as a new message", exportIds=ids, delay_seconds=delay)


async def _run_export_logged(
    export_id: str,
    job: ExportJob,
    stage: JobStage,
    again: tuple[dict[str, int | None], dict[str, int | None]],
    limiter: trio.CapacityLimiter,
) -> None:
    async with limiter:
        await _run_export_or_fail(export_id, job, stage, again)


async def _run_export_or_fail(
    export_id: str,
    job: ExportJob,
    stage: JobStage,
    again: tuple[dict[str, int | None], dict[str, int | None]],
) -> None:
    """Run the export; ``again`` collects the exports to send again: (pending, later)."""
    pending, later = again
    generation = job.generations.get(export_id)
    with bound(exportId=export_id):
        try:
            waiting = await _run_export(export_id, job, stage)
            if waiting is not None:
                pending[export_id] = waiting
        except ExportApiExhausted as err:
            # Not a verdict (contract 2) until the job is older than allowed.
            if await outlived_max_wait(
                stage.jobs, stage.max_wait_seconds, export_id, job.correlation_id
            ):
                await _fail_job(stage, export_id, job, str(err), generation)
            else:
                log.warning("Export API did not answer; export tried again later", error=str(err))
                later[export_id] = generation
        except PermanentError as err:
            if not err.verdict:
                # Our own infrastructure failed, not the export: hand the
                # message back to be tried again later.
                raise
            await _fail_job(stage, export_id, job, str(err), generation)


async def _run_export(export_id: str, job: ExportJob, stage: JobStage) -> int | None:
    """Process one export unless the lifecycle says not to; its run when still pending."""
    existing: JobItem | None = None
    generation = job.generations.get(export_id)
    if generation is not None or stage.cancels.is_cancelled(export_id):
        # Our own message, or cancelled here: read before asking the API. One
        # from outside mostly starts a job: its first write expects no item
        # and, refused, brings back the job as it stands to decide on.
        existing = await stage.jobs.get_job(export_id)
        skip = lifecycle.admit(existing, generation)
        if skip is not None:
            log.info(skip.reason)
            return None
    # Not cancelled (any more): a cancel remembered here was undone by a retry.
    stage.cancels.resume(export_id)
    with stage.cancels.guard(export_id) as guard:
        return await _run_active_export(export_id, job, stage, existing)
    if guard.cancelled_caught:
        log.info("export cancelled; its work here stopped")
    return None


def _left_to_wait(job: ExportJob) -> float:
    """Seconds until the job may start (``notBefore``); 0 or less: it may."""
    if job.not_before is None:
        return 0.0
    return (job.not_before - dt.datetime.now(dt.UTC)).total_seconds()


async def _run_active_export(
    export_id: str, job: ExportJob, stage: JobStage, existing: JobItem | None
) -> int | None:
    generation = job.generations.get(export_id)
    if job.not_before is not None and _left_to_wait(job) > 0:
        # Not yet: WAITING, holding nothing; the message comes back (pending).
        now = stage.jobs.clock()
        outcome = await stage.jobs.transition(
            export_id,
            lambda seen: lifecycle.delayed(seen, generation, job.correlation_id, now),
            seen=existing,
            read=False,
        )
        if outcome.job is None or isinstance(outcome.decision, Skip | Refuse):
            log.info(f"export not parked: {_reason(outcome.decision)}")
            return None
        log.info("export waits for its start time", notBefore=iso_utc(job.not_before))
        return outcome.job.generation
    try:
        status = await stage.api.get_status(export_id)
    except ExportNotFound:
        error = "the Export API does not know this export (404)"
        await _fail_job(stage, export_id, job, error, generation)
        return None
    if status.status == "FAILED":
        error = "the Export API reports the export as FAILED"
        await _fail_job(stage, export_id, job, error, generation)
        return None
    if status.status == "PENDING":
        return await _still_pending(export_id, job, stage, existing)
    # Listed before the job begins: a listing of one page goes into the begin
    # write (filesTotal, listingDone), not a write of its own after it.
    pages, fault = stage.api.list_files(export_id), None
    try:
        first = await pages.peek()
    except PermanentError as err:  # met again below, once the job has begun
        first, fault = [], err
    whole = (len(first), sum(f.size_bytes for f in first)) if pages.done and not fault else None
    now = stage.jobs.clock()
    outcome = await stage.jobs.transition(
        export_id,
        lambda seen: lifecycle.begin(seen, generation, job.correlation_id, now, listed=whole),
        seen=existing,
        read=False,
    )
    if not outcome.changed or outcome.job is None:
        log.info(f"export not begun: {_reason(outcome.decision)}")
        return None
    begun = outcome.job
    # A job created just now has no results; otherwise files with a recorded
    # result (done, or failed in this run) are not handed out again.
    created = isinstance(outcome.decision, Change) and outcome.decision.expect.absent
    recorded = set() if created else await stage.jobs.recorded_file_ids(export_id)
    outstanding = Outstanding()
    if created and whole is not None and len(first) == 1:
        outstanding.closing = begun  # its one file's record may end the job (file_stage)
    total = bytes_total = 0
    try:
        if fault is not None:
            raise fault
        async for page in pages:
            for file in page:
                total += 1
                bytes_total += file.size_bytes
                if file.file_id in recorded:
                    continue
                await _submit(file, export_id, job, stage, outstanding)
    except ExportNotReady:
        # READY a moment ago, 409 now: the export is being prepared again.
        if total:
            raise
        return await _still_pending(export_id, job, stage, begun)
    except PermanentError as err:
        if not err.verdict:
            raise
        # A listing fault: the files already handed out go on, and add their
        # counts to the job as they finish. Where they run here, the job is
        # failed once they are done, so its final item is complete at once.
        await stage.dispatch.flush(outstanding)
        if stage.waits_for_files:
            await outstanding.wait()
        await _fail_job(stage, export_id, job, str(err), begun.generation, files_listed=total)
        return None
    await stage.dispatch.flush(outstanding)
    listed: JobItem | None = begun
    if whole is None:
        listed = await stage.jobs.set_listing_done(
            export_id, total, bytes_total, generation=begun.generation
        )
    log.info("export listed", filesTotal=total, alreadyRecorded=len(recorded))
    if stage.waits_for_files:
        await outstanding.wait()
        if outstanding.unrecorded and not stage.cancels.is_cancelled(export_id):
            msg = f"{outstanding.unrecorded} file(s) ended without a recorded result"
            raise FilesUnrecorded(msg)
        # The files finished after the listing was recorded: read the job again.
        listed = None
    # Not when its one file's record ended the job (finalize.record_result).
    if (listed is not None or stage.waits_for_files) and not outstanding.ended:
        await finalize_if_done(stage.jobs, stage.table, export_id, listed)
    return None


def _reason(decision: Decision) -> str:
    return "written" if isinstance(decision, Change) else decision.reason


async def _submit(
    file: ExportFile,
    export_id: str,
    job: ExportJob,
    stage: JobStage,
    outstanding: Outstanding,
) -> None:
    task = DownloadTask(
        export_id=export_id,
        correlation_id=job.correlation_id,
        file_id=file.file_id,
        name=file.name,
        download_url=file.download_url,
        size_bytes=file.size_bytes,
        priority=job.priority,
    )
    await stage.dispatch.submit(task, outstanding)


async def _still_pending(
    export_id: str, job: ExportJob, stage: JobStage, seen: JobItem | None
) -> int | None:
    """The export is PENDING: the job waits (its run, to hand back), or failed waiting too long."""
    now = stage.jobs.clock()
    limit = stage.max_wait_seconds
    generation = job.generations.get(export_id)

    def allowed(seen: JobItem | None) -> float:
        # A delayed start waits from its start time, not from when it was parked.
        if seen is None or job.not_before is None:
            return limit
        parked = (job.not_before - (seen.waiting_since or seen.created_at)).total_seconds()
        return limit + max(0.0, parked)

    outcome = await stage.jobs.transition(
        export_id,
        lambda job_: lifecycle.pending(job_, generation, job.correlation_id, now, allowed(job_)),
        seen=seen,
        read=False,
    )
    decision, stored = outcome.decision, outcome.job
    if stored is None or isinstance(decision, Skip | Refuse):
        log.info(f"export pending, not waited for: {_reason(decision)}")
        return None
    if stored.status is JobStatus.FAILED:
        log.error("job failed", error=stored.error)
        return None
    waited = decision.waited if isinstance(decision, Stay) else 0.0
    log.info("export pending", waited_seconds=int(waited))
    return stored.generation


async def _fail_job(
    stage: JobStage,
    export_id: str,
    job: ExportJob,
    error: str,
    generation: int | None,
    *,
    files_listed: int | None = None,
) -> None:
    """End the run ``generation`` (None: the active one) FAILED with a one-line reason.

    The counts are not touched: they are what was recorded so far, and files
    still in flight keep adding theirs. ``files_listed`` (a listing fault)
    records how many files the listing gave before it failed.
    """
    now = stage.jobs.clock()
    outcome = await stage.jobs.transition(
        export_id,
        lambda seen: lifecycle.fail(
            seen, generation, job.correlation_id, error, now, files_total=files_listed
        ),
    )
    if outcome.changed:
        log.error("job failed", error=error)
