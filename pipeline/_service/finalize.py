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

from collections.abc import Mapping, Set

import attrs
import structlog

from pipeline._adapters.aws.jobstore import JobItem, JobStore
from pipeline._adapters.aws.metadata import MetadataTable
from pipeline._core import lifecycle
from pipeline._core.accounting import FileResult, JobStatus, JobSummary, final_status, summarize
from pipeline._core.lifecycle import Change
from pipeline._core.verdicts import MetadataItem
from pipeline._service.dispatch import Outstanding

__all__ = ["finalize_if_done", "record_last_file", "record_result"]

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


async def record_last_file(
    jobs: JobStore,
    export_id: str,
    result: FileResult,
    closing: JobItem,
    metadata_paths: Set[str],
) -> bool | None:
    """Record the only file of a job begun with its listing, and end the job in the same write.

    ``closing`` is the job as begun; ``metadata_paths`` every metadata path of
    the export. The worker holds the job's only result, so it needs no read of
    the results. ``True``: recorded and ended; ``False``: the file had a result
    already; ``None``: nothing written (the job moved on meanwhile, or the
    lifecycle does not end it): the caller records the file as any other.
    """
    summary = summarize([result], files_total=closing.files_total, metadata_paths=metadata_paths)
    first = None if result.ok else f"{result.name}: {result.error}"
    # The job as it stands once this result is counted, in the same transaction.
    counted = attrs.evolve(closing, summary=summary)
    decision = lifecycle.finalise(counted, summary, jobs.clock(), first_failure=first)
    if not isinstance(decision, Change):
        return None
    written = await jobs.record_last_file(export_id, result, decision)
    if written:
        _log_final(export_id, decision.status, summary, decision.error)
    return written


async def record_result(
    jobs: JobStore,
    export_id: str,
    result: FileResult,
    outstanding: Outstanding | None,
    metadata: Mapping[str, MetadataItem] | None,
) -> bool:
    """Record a file's result; ``False`` when the file had one already.

    The only file of a job begun with its listing (``outstanding.closing``),
    with every metadata item of the export in hand, ends the job in the same
    write, and says so on ``outstanding`` (:func:`record_last_file`).
    """
    closing = None if outstanding is None else outstanding.closing
    if outstanding is not None and closing is not None and metadata is not None:
        ended = await record_last_file(jobs, export_id, result, closing, metadata.keys())
        if ended is not None:
            outstanding.ended = ended
            return ended
    return await jobs.record_file(export_id, result)


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
