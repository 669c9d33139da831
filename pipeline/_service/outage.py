"""Work that met an Export API outage: failed only when the job is too old.

A message whose work met a dependency's outage is handed back in a few
seconds, not after a backoff of minutes (contract 2; issue 18): that is
:func:`pipeline._core.ending.decide`'s, and the intake gate keeps it in SQS
until the dependency answers. An Export API outage turns into a verdict only
once the job is older than ``EXPORT_MAX_WAIT_SECONDS`` (:func:`outlived_max_wait`).
"""

from __future__ import annotations

from pipeline._adapters.aws.jobstore import JobStore
from pipeline._core import lifecycle

__all__ = ["outlived_max_wait"]


async def outlived_max_wait(
    jobs: JobStore, max_wait_seconds: float, export_id: str, correlation_id: str | None
) -> bool:
    """Whether the export's job began more than ``max_wait_seconds`` ago (EXPORT_MAX_WAIT_SECONDS).

    A job with no item yet is begun now (RUNNING), so that its age counts
    from its first outage; the age counts from when this submission began
    waiting, as for a PENDING export, else from the job's creation.
    """
    now = jobs.clock()
    job = await jobs.get_job(export_id)
    if job is None:
        # Created only: a job someone else created meanwhile is theirs to run.
        await jobs.transition(
            export_id,
            lambda seen: (
                lifecycle.begin(None, None, correlation_id or "", now)
                if seen is None
                else lifecycle.Skip("job exists")
            ),
            read=False,
        )
        return False
    return lifecycle.waited_seconds(job, now) > max_wait_seconds
