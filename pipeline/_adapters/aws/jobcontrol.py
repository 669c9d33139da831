"""What an operator may do to a job (contract section 7), and what stages read to obey it.

Cancelling and retrying are conditional writes on the summary item, so they
need no process to be up: the HTTP control API and the command line call the
same functions. A cancel writes ``CANCELLED`` (keeping the counts so far);
every process that works on the export sees it, either at once (its own
:class:`~pipeline._service.cancel.CancelWatch`) or on its next look at the
item (:func:`job_statuses`, every few seconds), and a file task from the
queue reads it before it starts (:func:`file_state`). A retry moves a
``FAILED`` or ``CANCELLED`` job back to ``WAITING`` as its next run
(forgetting the results of failed files, so exactly those are downloaded
again) and sends the export to the export-job queue. The rules are
:mod:`pipeline._core.lifecycle`'s; each call is one conditional write on the
job as it was read, so racing calls get one ``ACCEPTED`` and the rest
``CONFLICT``.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from pipeline._adapters.aws import sqs as _sqs
from pipeline._adapters.aws.batchget import batch_get
from pipeline._adapters.aws.clienttypes import SqsClient
from pipeline._adapters.aws.jobitems import FILE_PREFIX, JOB_SK, JobItem, decode_item, utc_now
from pipeline._adapters.aws.jobstore import JobStore, Outcome
from pipeline._core import lifecycle
from pipeline._core.accounting import JobStatus
from pipeline._core.lifecycle import Decision, Refuse, Skip
from pipeline._core.messages import ExportJob, encode_export_job

__all__ = [
    "CANCEL_REASON",
    "CLI_CANCEL_REASON",
    "Answer",
    "FileState",
    "Verdict",
    "cancel_job",
    "file_state",
    "job_statuses",
    "retry_job",
]

CANCEL_REASON = "cancelled through the control API"
CLI_CANCEL_REASON = "cancelled through the command line"


class Verdict(enum.Enum):
    """How a control call went."""

    ACCEPTED = "accepted"
    UNKNOWN = "unknown"  # no job for the export
    CONFLICT = "conflict"  # the job is in a status the call does not apply to


@attrs.frozen
class Answer:
    """A control call's verdict, the job as it stood after it, and a reason for a refusal."""

    verdict: Verdict
    job: JobItem | None = None
    reason: str | None = None
    correlation_id: str | None = None


def _answer(export_id: str, outcome: Outcome, correlation_id: str | None = None) -> Answer:
    if outcome.job is None:
        return Answer(Verdict.UNKNOWN, reason=f"no job for export {export_id!r}")
    if isinstance(outcome.decision, Refuse):
        return Answer(Verdict.CONFLICT, outcome.job, outcome.decision.reason)
    return Answer(Verdict.ACCEPTED, outcome.job, correlation_id=correlation_id)


def _unless_unknown(rule: Callable[[JobItem], Decision]) -> Callable[[JobItem | None], Decision]:
    return lambda job: Skip("no job") if job is None else rule(job)


async def cancel_job(jobs: JobStore, export_id: str, reason: str = CANCEL_REASON) -> Answer:
    """Cancel a ``WAITING`` or ``RUNNING`` job; a final one is a conflict.

    One conditional write on the run the caller read: of racing cancels, one
    is accepted and the others find the job CANCELLED (409).
    """
    now = utc_now()
    outcome = await jobs.transition(
        export_id,
        _unless_unknown(lambda job: lifecycle.cancel(job, reason, now)),
        attempts=1,
    )
    return _answer(export_id, outcome)


async def retry_job(jobs: JobStore, sqs: SqsClient, export_jobs_url: str, export_id: str) -> Answer:
    """Run a ``FAILED`` or ``CANCELLED`` job again from where it stood.

    One conditional write on the status and run the caller read takes the job
    to WAITING as its next run: of racing retries exactly one is accepted,
    and only that one sends the export to the queue, its message naming the
    run so that no other message starts it a second time.
    """
    correlation_id = f"retry-{uuid.uuid4()}"
    now = utc_now()
    outcome = await jobs.transition(
        export_id,
        _unless_unknown(lambda job: lifecycle.retry(job, correlation_id, now)),
        attempts=1,
    )
    answer = _answer(export_id, outcome, correlation_id)
    if answer.verdict is Verdict.ACCEPTED:
        assert outcome.job is not None
        message = ExportJob(
            export_ids=(export_id,),
            correlation_id=correlation_id,
            generations={export_id: outcome.job.generation},
        )
        await _sqs.send(sqs, export_jobs_url, encode_export_job(message), policy=jobs.policy)
    return answer


async def job_statuses(jobs: JobStore, export_ids: Iterable[str]) -> dict[str, JobStatus]:
    """The status of each export that has a job (consistent reads, batched)."""
    keys = [(export_id, JOB_SK) for export_id in dict.fromkeys(export_ids)]
    found = await _batch_get(jobs, keys, "pk, #status")
    return {pk: JobStatus(values["status"]) for (pk, _), values in found.items()}


@attrs.frozen
class FileState:
    """What a file task checks before it starts: a recorded result, and its job's status."""

    recorded: bool
    job_status: JobStatus | None


async def file_state(jobs: JobStore, export_id: str, file_id: str) -> FileState:
    """Whether the file has a result and how its job stands, in one call."""
    file_sk = FILE_PREFIX + file_id
    found = await _batch_get(jobs, [(export_id, JOB_SK), (export_id, file_sk)], "pk, sk, #status")
    job = found.get((export_id, JOB_SK))
    return FileState(
        recorded=(export_id, file_sk) in found,
        job_status=None if job is None else JobStatus(job["status"]),
    )


async def _batch_get(
    jobs: JobStore, keys: list[tuple[str, str]], projection: str
) -> dict[tuple[str, str], dict[str, Any]]:
    """The items of ``keys`` that exist, by key (consistent reads)."""
    raw_items = await batch_get(
        jobs.dynamodb,
        jobs.table,
        [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in keys],
        what="dynamodb jobs batch get",
        policy=jobs.policy,
        projection=projection,
        names={"#status": "status"},
        consistent=True,
    )
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for raw in raw_items:
        values = decode_item(raw)
        found[values["pk"], values.get("sk", JOB_SK)] = values
    return found
