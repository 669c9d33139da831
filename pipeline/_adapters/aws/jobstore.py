"""The jobs table: one summary item per export, one result item per ZIP file.

Counts must be exact when a message is delivered twice or a worker dies
mid-file, and they must show how far a running job has got. So recording a
file is one transaction (``TransactWriteItems``): put the file's result item
only if the file has none, and ``ADD`` its counts
(:func:`~pipeline._core.accounting.file_counts`) to the summary item. A
redelivered or late file finds its result there and changes nothing; a file
is counted exactly when its result exists. Whether the job is done is then
one read of the summary item (``filesDone + filesFailed`` against
``filesTotal``), constant work per file however wide the export.

The job's status is not decided here: :mod:`pipeline._core.lifecycle`
decides each transition on the job as the caller saw it, and
:meth:`JobStore.apply` carries it out as one conditional write on that view
(status and run generation), which makes every transition exactly-once: of
racing callers, one wins and the others decide again on what they now read.

The items themselves are described in :mod:`.jobitems`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs

from pipeline._adapters.aws.clients import aws_call, refused_item
from pipeline._adapters.aws.clienttypes import DynamoDbClient
from pipeline._adapters.aws.filerecord import record_file, record_last_file
from pipeline._adapters.aws.jobchanges import JobChanges
from pipeline._adapters.aws.jobitems import (
    JOB_SK,
    PATHS_CHUNK_BYTES,
    JobItem,
    change_condition,
    change_update,
    format_time,
    item_key,
    job_from_item,
    utc_now,
)
from pipeline._adapters.aws.joboutbox import EventBus, outbox_item, settle_owed
from pipeline._adapters.aws.jobresults import (
    file_result_of,
    forget_failed_files,
    read_file_items,
    recorded_file_ids,
)
from pipeline._core import lifecycle
from pipeline._core.accounting import FileResult, JobStatus, JobSummary
from pipeline._core.backoff import AWS_POLICY, Backoff
from pipeline._core.lifecycle import Change, Decision, Refuse
from pipeline._errors import AwsRejected

__all__ = ["PATHS_CHUNK_BYTES", "JobItem", "JobStore", "Outcome", "Refused"]


def _own_run(change: Change, job: JobItem | None) -> bool:
    """Whether ``job`` is the new run ``change`` wrote: same run, correlation ID and time.

    The time matters: another write of the same submission (the outage path
    creating the job first, with the same correlation ID, also as run 1) is
    not ours, and taking it for ours skipped the listing the change carried
    (a job left RUNNING, not listed, found by a chaos run). Not recognising a
    lost answer only costs deciding again on the job, which is safe.
    """
    return (
        change.new_run
        and job is not None
        and job.generation == change.generation
        and job.correlation_id == change.correlation_id
        and format_time(job.updated_at) == format_time(change.at)
    )


@attrs.frozen
class Refused:
    """A write whose condition failed: the job as it stands (``None``: no item)."""

    job: JobItem | None


@attrs.frozen
class Outcome:
    """What a lifecycle rule decided for a job, and the job after it (as last seen)."""

    decision: Decision
    job: JobItem | None

    @property
    def changed(self) -> bool:
        """Whether the decision was a write, carried out."""
        return isinstance(self.decision, Change)


@attrs.frozen
class JobStore:
    """Loads and stores job and file-result items of one jobs table.

    Every call is one or a few DynamoDB calls through ``aws_call``. Reads
    are strongly consistent: the accounting that follows a write must see it.
    """

    dynamodb: DynamoDbClient
    table: str
    policy: Backoff = AWS_POLICY
    paths_chunk_bytes: int = PATHS_CHUNK_BYTES
    clock: Callable[[], datetime] = utc_now
    # Lifecycle events (EVENT_BUS_NAME; None: none are written or sent).
    events: EventBus | None = None
    # JOB_RETENTION_DAYS: a final job's items expire that long after (0: kept).
    retention_days: int = 0
    # Told of each summary item written here (GET /events).
    changes: JobChanges = attrs.field(factory=JobChanges, eq=False)

    def _now(self) -> str:
        return format_time(self.clock())

    async def get_job(self, export_id: str) -> JobItem | None:
        """The export's summary item, ``None`` when there is none."""
        response = await aws_call(
            "dynamodb get job",
            self.dynamodb.get_item,
            policy=self.policy,
            TableName=self.table,
            Key=item_key(export_id, JOB_SK),
            ConsistentRead=True,
        )
        raw = response.get("Item")
        return None if raw is None else self._job(raw)

    def _job(self, raw: dict[str, Any]) -> JobItem:
        return job_from_item(raw)

    async def apply(self, export_id: str, change: Change) -> JobItem | Refused:
        """Carry out one lifecycle :class:`~pipeline._core.lifecycle.Change`.

        One conditional UpdateItem on what the caller saw; :class:`Refused`,
        with the item as it stands, when the item had moved on (the caller
        decides again on it, or answers 409). A write that owes an event or an expiry (see
        :mod:`.joboutbox`) carries the debt and puts the job's outbox item in
        the same transaction, and settles it right after. After a write that
        starts a job's next run, the results of its failed files are
        forgotten (only by the writer that won).
        """
        owed = uuid.uuid4().hex if self.events is not None and change.owes_event else None
        expires = lifecycle.expires_at(change, self.retention_days)
        update = change_update(change, transition_id=owed, expires_at=expires)
        condition = change_condition(update, change.expect)
        key = item_key(export_id, JOB_SK)
        try:
            if owed is None and expires is None and not change.reopens_job:
                response = await aws_call(
                    "dynamodb job " + change.status.value.lower(),
                    self.dynamodb.update_item,
                    policy=self.policy,
                    TableName=self.table,
                    Key=key,
                    ReturnValues="ALL_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    **update.kwargs(condition),
                )
                raw = response["Attributes"]
            else:
                # Work is owed after this write: so that a sweeper finds it if
                # this process dies, an outbox item names the job, in the same
                # transaction (a Query finds them, no Scan of the table).
                await aws_call(
                    "dynamodb job " + change.status.value.lower(),
                    self.dynamodb.transact_write_items,
                    policy=self.policy,
                    TransactItems=[
                        {
                            "Update": {
                                "TableName": self.table,
                                "Key": key,
                                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                                **update.kwargs(condition),
                            }
                        },
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": outbox_item(export_id, change.at),
                            }
                        },
                    ],
                )
                raw = None
        except AwsRejected as err:
            if err.code != "ConditionalCheckFailedException":
                raise
            # The item as it stands came back with the refusal; read it only
            # when it did not (no item, or an endpoint that sends none).
            raw = refused_item(err)
            return Refused(self._job(raw) if raw is not None else await self.get_job(export_id))
        self.changes.note(export_id)
        job = self._job(raw) if raw is not None else await self.get_job(export_id)
        if job is None:  # pragma: no cover - the item cannot vanish while it is written
            msg = f"job {export_id!r} gone right after it was written"
            raise LookupError(msg)
        if change.forget_failed:
            await forget_failed_files(self, export_id)
            # The counts without the forgotten files'.
            job = await self.get_job(export_id) or job
        if job.events_owed or job.expiry_owed:
            await settle_owed(self, job)
        return job

    async def transition(
        self,
        export_id: str,
        decide: Callable[[JobItem | None], Decision],
        *,
        seen: JobItem | None = None,
        read: bool = True,
        attempts: int = 3,
    ) -> Outcome:
        """Read the job, let ``decide`` (a lifecycle rule) choose, and carry it out.

        A write refused because the item moved on is decided again on the item
        the refusal sent back, up to ``attempts`` writes; the last refusal is a
        :class:`~pipeline._core.lifecycle.Refuse`. ``read=False`` decides on
        ``seen``, for a caller that has just read the item, or that expects
        none (``seen=None``: a new export's first write is its read too). An
        operator's call passes ``attempts=1``: it applies to the job as the
        operator saw it.
        """
        job = await self.get_job(export_id) if read else seen
        for _ in range(attempts):
            decision = decide(job)
            if not isinstance(decision, Change):
                return Outcome(decision, job)
            written = await self.apply(export_id, decision)
            if not isinstance(written, Refused):
                return Outcome(decision, written)
            job = written.job
            if _own_run(decision, job):
                # Our write went through and its answer was lost: the retry of
                # the call found its own new run.
                assert job is not None
                return Outcome(decision, job)
        shown = "gone" if job is None else job.status.value
        return Outcome(Refuse(f"the job changed meanwhile; it is {shown} now"), job)

    async def begin_job(
        self, export_id: str, correlation_id: str, status: JobStatus | str
    ) -> JobItem:
        """A delivery of the export from outside, READY (RUNNING) or PENDING (WAITING).

        What :func:`~pipeline._core.lifecycle.begin` and
        :func:`~pipeline._core.lifecycle.pending` decide, carried out; returns
        the item as it stands after (a COMPLETED or CANCELLED job unchanged).
        """
        wanted = JobStatus(status)
        now = self.clock()
        if wanted is JobStatus.RUNNING:
            outcome = await self.transition(
                export_id, lambda job: lifecycle.begin(job, None, correlation_id, now)
            )
        elif wanted is JobStatus.WAITING:
            outcome = await self.transition(
                export_id,
                lambda job: lifecycle.pending(job, None, correlation_id, now, math.inf),
            )
        else:
            msg = f"a job begins WAITING or RUNNING, not {wanted.value}"
            raise ValueError(msg)
        if outcome.job is None:  # pragma: no cover - the item cannot vanish; we never delete it
            msg = f"job {export_id!r} not found after beginning it"
            raise LookupError(msg)
        return outcome.job

    async def finish_job(
        self,
        export_id: str,
        status: JobStatus | str,
        summary: JobSummary | None,
        error: str | None,
        *,
        files_total: int | None = None,
    ) -> bool:
        """End the active run in the final ``status``, once (:func:`~pipeline._core.lifecycle.end`).

        ``False`` means it was not active (finished already by another
        process or an earlier delivery, or never begun): the caller must not
        act as the finisher.
        """
        final = JobStatus(status)
        now = self.clock()
        outcome = await self.transition(
            export_id,
            lambda job: lifecycle.end(
                job, final, now, error=error, summary=summary, files_total=files_total
            ),
        )
        return outcome.changed

    async def set_listing_done(
        self,
        export_id: str,
        files_total: int,
        bytes_total: int | None = None,
        *,
        generation: int | None = None,
    ) -> JobItem | None:
        """Record the listed files (and their size) on run ``generation`` (None: the current).

        The job as stored, ``None`` if that run is not active.
        """
        now = self.clock()
        outcome = await self.transition(
            export_id,
            lambda job: lifecycle.listing_done(job, generation, files_total, bytes_total, now),
        )
        return outcome.job if outcome.changed else None

    async def recorded_file_ids(self, export_id: str) -> set[str]:
        """The IDs of the export's files that have a result, done or failed."""
        return await recorded_file_ids(self, export_id)

    async def record_file(self, export_id: str, result: FileResult) -> bool:
        """Store one file's result and add its counts to the job's, in one transaction.

        Returns ``False`` when the file had a result already: a recorded
        result is final (a late or duplicate task whose download now fails,
        an expired URL, never turns DONE into FAILED), and nothing is counted
        twice.
        """
        return await record_file(self, export_id, result)

    async def record_last_file(
        self, export_id: str, result: FileResult, change: Change
    ) -> bool | None:
        """The only file's result and the end of its job (:func:`.filerecord.record_last_file`)."""
        return await record_last_file(self, export_id, result, change)

    async def file_results(self, export_id: str) -> list[FileResult]:
        """Every file result of the export, with its seen paths, in file-ID order."""
        files, pieces = await read_file_items(self, export_id)
        return [file_result_of(export_id, values, pieces) for values in files]
