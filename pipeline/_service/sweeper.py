"""The sweeper: a RUNNING job whose work has gone quiet is submitted again.

A job can be left RUNNING with no message that will finish it: its last
download task dead-lettered after a long outage, or a process lost between
dispatching files and recording them. Nothing is wrong with the export, so
failing it would be a guess; instead the sweeper sends its export ID to the
export-job queue again, as a person would. The job stage then lists the
files, skips every file with a recorded result, dispatches the others, and
finishes the job (or fails it, if the export is gone).

A job is quiet when its summary item has not changed for
:data:`STALE_AFTER_SECONDS`: with live counts (each finished file moves them
within seconds) that means no file has finished for that long. A job still at
work but slow (one very large file) is submitted again harmlessly: results are
recorded once, and files already recorded are not downloaded again. So no job
stays RUNNING without progress for longer than :data:`STALE_AFTER_SECONDS` +
:data:`SWEEP_EVERY_SECONDS` (40 minutes) before it is taken up again.

It runs in the processes that take export jobs (``all`` and ``orchestrator``),
in the intake's nursery, so it stops with the intake at shutdown. Beside it
:func:`run_outbox` sends the lifecycle events (and item expiries) that a
process owed when it died (:mod:`pipeline._adapters.aws.joboutbox`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
import trio

from pipeline._adapters.aws.jobitems import utc_now
from pipeline._adapters.aws.joboutbox import owed_jobs, settle_owed
from pipeline._adapters.aws.jobscan import running_jobs_idle_since
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._adapters.aws.queues import Queues
from pipeline._core.messages import ExportJob, encode_export_job
from pipeline._errors import PipelineError

__all__ = [
    "OUTBOX_EVERY_SECONDS",
    "OWED_GRACE_SECONDS",
    "STALE_AFTER_SECONDS",
    "SWEEP_EVERY_SECONDS",
    "run_outbox",
    "run_sweeper",
    "settle_once",
    "sweep_once",
]

log = structlog.get_logger("pipeline.sweeper")

# No finished file for this long: the job's work is taken to be gone.
STALE_AFTER_SECONDS = 30 * 60
# A sweep scans the jobs table: rare enough to cost little, often enough that
# a stranded job waits at most this much longer.
SWEEP_EVERY_SECONDS = 10 * 60
# Events (and item expiries) a process owed when it died are sent by another
# within OUTBOX_EVERY_SECONDS + OWED_GRACE_SECONDS (the contract allows 5
# minutes); the grace leaves the writer time to send its own. Each round is one
# Query of the outbox items, however large the table.
OUTBOX_EVERY_SECONDS = 60
OWED_GRACE_SECONDS = 30


async def sweep_once(
    jobs: JobStore, sqs: Queues, export_jobs_url: str, *, now: datetime
) -> list[str]:
    """Submit again every RUNNING job quiet since ``now - STALE_AFTER_SECONDS``; their IDs."""
    cutoff = now - timedelta(seconds=STALE_AFTER_SECONDS)
    resubmitted = []
    for job in await running_jobs_idle_since(jobs, cutoff):
        # For this run only: if the job has moved on by the time it arrives
        # (cancelled and retried), the message starts nothing.
        generations = {job.export_id: job.generation} if job.generation else {}
        body = encode_export_job(
            ExportJob(
                export_ids=(job.export_id,),
                correlation_id=job.correlation_id or "sweeper",
                generations=generations,
            )
        )
        await sqs.send(export_jobs_url, body, policy=sqs.policy)
        log.warning(
            "job quiet too long; submitted again",
            exportId=job.export_id,
            correlationId=job.correlation_id,
            idle_seconds=int((now - job.updated_at).total_seconds()),
        )
        resubmitted.append(job.export_id)
    return resubmitted


async def settle_once(jobs: JobStore, *, now: datetime) -> list[str]:
    """Send what jobs owe (events, their items' expiry) since before ``now - OWED_GRACE``.

    The process that wrote a transition settles it at once; what is older
    than the grace was left by a process that died (or failed to send).
    """
    settled = []
    for export_id, since in await owed_jobs(jobs):
        if (now - since).total_seconds() < OWED_GRACE_SECONDS:
            continue
        job = await jobs.get_job(export_id)
        if job is None:
            continue
        await settle_owed(jobs, job)
        log.info(
            "owed events and expiry settled for another process",
            exportId=export_id,
            events=len(job.events_owed),
        )
        settled.append(export_id)
    return settled


async def run_outbox(
    *, jobs: JobStore, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Settle owed work every :data:`OUTBOX_EVERY_SECONDS` until cancelled."""
    task_status.started()
    while True:
        await trio.sleep(OUTBOX_EVERY_SECONDS)
        try:
            await settle_once(jobs, now=utc_now())
        except PipelineError as err:
            log.warning("owed work not settled; trying again next round", error=str(err))


async def run_sweeper(
    *,
    jobs: JobStore,
    sqs: Queues,
    export_jobs_url: str,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Sweep every :data:`SWEEP_EVERY_SECONDS` until cancelled; a failed sweep waits a round."""
    task_status.started()
    while True:
        await trio.sleep(SWEEP_EVERY_SECONDS)
        try:
            await sweep_once(jobs, sqs, export_jobs_url, now=utc_now())
        except PipelineError as err:
            log.warning("sweep failed; trying again next round", error=str(err))
