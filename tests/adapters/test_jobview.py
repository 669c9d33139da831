"""GET /jobs/{exportId}'s progress: 1.0 for a COMPLETED job only, how far it got otherwise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline._adapters.aws.jobitems import JobItem
from pipeline._adapters.http.control import job_view
from pipeline._core.accounting import JobStatus, JobSummary

START = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)


def _job(status: JobStatus, files_done: int, **fields: object) -> JobItem:
    return JobItem(
        export_id="exp-v",
        status=status,
        correlation_id="c",
        created_at=START,
        updated_at=START,
        listing_done=True,
        summary=JobSummary(files_total=4, files_done=files_done),
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("status", "files_done", "progress"),
    [
        (JobStatus.CANCELLED, 0, 0.0),
        (JobStatus.CANCELLED, 1, 0.25),
        (JobStatus.FAILED, 2, 0.5),
        (JobStatus.COMPLETED, 4, 1.0),
    ],
)
def test_final_progress_is_how_far_the_job_got(
    status: JobStatus, files_done: int, progress: float
) -> None:
    """A job cancelled at 0/4 is 0, not 100 %; only COMPLETED is 1.0; nothing is left (eta 0)."""
    view = job_view(_job(status, files_done), START + timedelta(minutes=1))
    assert (view["progress"], view["etaSeconds"]) == (progress, 0.0)


def test_bytes_finished_is_shown_with_bytes_total() -> None:
    """Where sizes are known the view carries bytesFinished beside bytesTotal."""
    job = _job(JobStatus.RUNNING, 1, bytes_total=1000, bytes_finished=250)
    view = job_view(job, START + timedelta(seconds=10))
    assert (view["bytesTotal"], view["bytesFinished"], view["progress"]) == (1000, 250, 0.25)
