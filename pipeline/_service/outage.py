"""Work that met a dependency's outage: handed back soon, failed only when the job is too old.

Two kinds of failure end a message's work without a result, and they are
handed back differently:

* A dependency was down (the Export API past one call's attempts, S3 or
  DynamoDB past theirs): nothing about the message is wrong. It is handed
  back with a delay of a few seconds, and the intake gate keeps it in SQS
  until the dependency answers, so it comes again within seconds of that,
  not after a backoff of minutes (contract 2; issue 18).
* Anything else is the message's own failure: its hand-back delay grows per
  delivery (:meth:`LeaseKeeper.retry_later`).

An Export API outage turns into a verdict only once the job is older than
``EXPORT_MAX_WAIT_SECONDS`` (:func:`outlived_max_wait`).
"""

from __future__ import annotations

import random

import structlog

from pipeline._core import lifecycle
from pipeline._errors import (
    AwsUnavailable,
    ExportApiExhausted,
    FilesUnrecorded,
    RetriesExhausted,
)
from pipeline._service.deps import Deps
from pipeline._service.lease import Lease, LeaseKeeper

__all__ = [
    "OUTAGE_HAND_BACK_SECONDS",
    "dependency_down",
    "hand_back_soon",
    "outlived_max_wait",
]

log = structlog.get_logger("pipeline.outage")

# Seconds a message handed back after an outage stays invisible, drawn in this
# range so the messages of one outage do not all come back at once. Short,
# since the intake gate, not this delay, keeps them waiting while it lasts.
OUTAGE_HAND_BACK_SECONDS = (2, 5)

_RNG = random.Random()


def dependency_down(err: BaseException) -> bool:
    """Whether ``err`` says a dependency was down, not that the message's work failed.

    Files of a message that ended without a result (``FilesUnrecorded``) ended
    so because the jobs table or the API did not answer.
    """
    if isinstance(err, BaseExceptionGroup):
        return all(dependency_down(inner) for inner in err.exceptions)
    if isinstance(err, ExportApiExhausted | AwsUnavailable | FilesUnrecorded):
        return True
    return isinstance(err, RetriesExhausted) and isinstance(err.__cause__, AwsUnavailable)


async def hand_back_soon(keeper: LeaseKeeper, lease: Lease, error: str) -> None:
    """Hand the message back to come again in a few seconds (a dependency was down)."""
    low, high = OUTAGE_HAND_BACK_SECONDS
    lease.hand_back_delay = _RNG.randint(low, high)
    log.info(
        "message handed back until the dependency answers",
        message_id=lease.message_id,
        delay_seconds=lease.hand_back_delay,
        error=error,
    )
    await keeper.hand_back([lease])


async def outlived_max_wait(deps: Deps, export_id: str, correlation_id: str | None) -> bool:
    """Whether the export's job began more than ``EXPORT_MAX_WAIT_SECONDS`` ago.

    A job with no item yet is begun now (RUNNING), so that its age counts
    from its first outage; the age counts from when this submission began
    waiting, as for a PENDING export, else from the job's creation.
    """
    now = deps.jobs.clock()
    job = await deps.jobs.get_job(export_id)
    if job is None:
        # Created only: a job someone else created meanwhile is theirs to run.
        await deps.jobs.transition(
            export_id,
            lambda seen: (
                lifecycle.begin(None, None, correlation_id or "", now)
                if seen is None
                else lifecycle.Skip("job exists")
            ),
            read=False,
        )
        return False
    return lifecycle.waited_seconds(job, now) > deps.settings.export_max_wait_seconds
