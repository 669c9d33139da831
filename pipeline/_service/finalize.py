"""Ending a job exactly once, whoever finishes its last file.

Any process that records a file result, and the job stage once its listing is
done, calls :func:`finalize_if_done`. It is one read of the summary item when
the job is not done: the counts there move with every recorded file, so
``filesDone + filesFailed`` reaching ``filesTotal`` says every listed file has
a result. Only then are the file results read, once, to settle
``entriesMissing`` (the metadata paths no file contained) and to name the
first failed file; every caller computes the same summary, and the
lifecycle's conditional write (:func:`pipeline._core.lifecycle.finalise`) lets
only the first one through.
"""

from __future__ import annotations

import structlog

from pipeline._adapters.aws.jobstore import JobItem, JobStore
from pipeline._adapters.aws.metadata import MetadataTable
from pipeline._core import lifecycle
from pipeline._core.accounting import JobStatus, JobSummary, final_status, summarize

__all__ = ["finalize_if_done"]

log = structlog.get_logger("pipeline.finalize")


async def finalize_if_done(
    jobs: JobStore, table: MetadataTable, export_id: str, job: JobItem | None = None
) -> JobStatus | None:
    """Finalise the job of ``export_id`` if every listed file has a result.

    ``job`` is the summary item when the caller has just read or written it
    (saving the read). Returns the final status this call wrote, or ``None``
    when the job is not done yet, is already final, or another process
    finalised it first.
    """
    if job is None:
        job = await jobs.get_job(export_id)
    if job is None or not lifecycle.finalisation_due(job):
        return None
    results = await jobs.file_results(export_id)
    derived = summarize(results, files_total=job.files_total)
    if final_status(derived) is None:
        # The live counts ran ahead of the results read back: never expected,
        # since a file is counted in the same transaction that records it.
        log.error("job counts ahead of its file results; not finalised", exportId=export_id)
        return None
    live = _moving_counts(job.summary)
    if live != _moving_counts(derived):
        log.warning(
            "live counts differ from the file results; the results are kept",
            exportId=export_id,
            live=str(live),
            results=str(_moving_counts(derived)),
        )
    failed = sorted((r for r in results if not r.ok), key=lambda r: r.name)
    first = f"{failed[0].name}: {failed[0].error}" if failed else None
    metadata_paths = await table.all_paths(export_id)
    summary = summarize(results, files_total=job.files_total, metadata_paths=metadata_paths)
    now = jobs.clock()
    # On the run as read: a cancel or a retry since then wins, and of two
    # processes finalising the same run, the first.
    outcome = await jobs.transition(
        export_id,
        lambda seen: lifecycle.finalise(seen, summary, now, first_failure=first),
        seen=job,
        read=False,
        attempts=1,
    )
    if not outcome.changed or outcome.job is None:
        return None
    _log_final(export_id, outcome.job.status, summary, outcome.job.error)
    return outcome.job.status


def _moving_counts(summary: JobSummary) -> tuple[int, ...]:
    """The counts that move while a job runs (``entriesMissing`` is settled at the end)."""
    return (
        summary.files_total,
        summary.files_done,
        summary.files_failed,
        summary.entries_uploaded,
        summary.entries_skipped,
        summary.entries_rejected,
        summary.bytes_uploaded,
    )


def _log_final(export_id: str, status: JobStatus, summary: JobSummary, error: str | None) -> None:
    log.info(
        "job finished",
        exportId=export_id,
        status=status.value,
        filesTotal=summary.files_total,
        filesDone=summary.files_done,
        filesFailed=summary.files_failed,
        entriesUploaded=summary.entries_uploaded,
        entriesSkipped=summary.entries_skipped,
        entriesRejected=summary.entries_rejected,
        entriesMissing=summary.entries_missing,
        bytesUploaded=summary.bytes_uploaded,
        error=error,
    )
