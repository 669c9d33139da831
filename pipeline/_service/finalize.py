"""Ending a job exactly once, whoever finishes its last file.

Any process that records a file result, and the job stage once its listing is
done, calls :func:`finalize_if_done`. It is cheap when the job is not done (one
item read, one count), and when it is, every caller computes the same summary
from the stored file results; the conditional write in the job store lets only
the first one through, so the job item is finalised once.
"""

from __future__ import annotations

import structlog

from pipeline._adapters.aws import metadata as _metadata
from pipeline._core.accounting import JobStatus, JobSummary, final_status, summarize
from pipeline._service.deps import Deps

__all__ = ["finalize_if_done"]

log = structlog.get_logger("pipeline.finalize")


async def finalize_if_done(deps: Deps, export_id: str) -> JobStatus | None:
    """Finalise the job of ``export_id`` if every listed file has a result.

    Returns the final status this call wrote, or ``None`` when the job is not
    done yet, is already final, or another process finalised it first.
    """
    job = await deps.jobs.get_job(export_id)
    if job is None or job.status.is_final or not job.listing_done:
        return None
    if await deps.jobs.count_file_results(export_id) < job.files_total:
        return None
    results = await deps.jobs.file_results(export_id)
    summary = summarize(results, files_total=job.files_total)
    decided = final_status(summary)
    if decided is None:
        return None
    status, error = decided
    if status is JobStatus.FAILED:
        first = next(r for r in sorted(results, key=lambda r: r.name) if not r.ok)
        error = f"{error}; first: {first.name}: {first.error}"
    metadata_paths = await _metadata.all_paths(
        deps.aws.dynamodb,
        deps.settings.dynamodb_metadata_table,
        export_id,
        policy=deps.aws_policy,
    )
    summary = summarize(results, files_total=job.files_total, metadata_paths=metadata_paths)
    if not await deps.jobs.finish_job(export_id, status, summary, error):
        return None
    _log_final(export_id, status, summary, error)
    return status


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
