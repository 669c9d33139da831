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

import hashlib
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs

from pipeline._adapters.aws.clients import AwsClient, aws_call
from pipeline._adapters.aws.jobitems import (
    FILE_PREFIX,
    JOB_SK,
    PATHS_CHUNK_BYTES,
    JobItem,
    Update,
    change_condition,
    change_update,
    converter,
    decode_item,
    encode,
    format_time,
    job_from_item,
    pack_paths,
    piece_sk,
    utc_now,
)
from pipeline._adapters.aws.jobresults import file_result_of, read_file_items
from pipeline._core import lifecycle
from pipeline._core.accounting import FileResult, JobStatus, JobSummary, file_counts
from pipeline._core.backoff import AWS_POLICY, Backoff
from pipeline._core.lifecycle import Change, Decision, Refuse
from pipeline._errors import AwsRejected

__all__ = ["PATHS_CHUNK_BYTES", "JobItem", "JobStore", "Outcome"]


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

    dynamodb: AwsClient
    table: str
    policy: Backoff = AWS_POLICY
    paths_chunk_bytes: int = PATHS_CHUNK_BYTES
    clock: Callable[[], datetime] = utc_now

    def _now(self) -> str:
        return format_time(self.clock())

    def _key(self, export_id: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": export_id}, "sk": {"S": sk}}

    async def get_job(self, export_id: str) -> JobItem | None:
        """The export's summary item, ``None`` when there is none."""
        response = await aws_call(
            "dynamodb get job",
            self.dynamodb.get_item,
            policy=self.policy,
            TableName=self.table,
            Key=self._key(export_id, JOB_SK),
            ConsistentRead=True,
        )
        raw = response.get("Item")
        return None if raw is None else self._job(raw)

    def _job(self, raw: dict[str, Any]) -> JobItem:
        return job_from_item(raw)

    async def apply(self, export_id: str, change: Change) -> JobItem | None:
        """Carry out one lifecycle :class:`~pipeline._core.lifecycle.Change`.

        One conditional UpdateItem on what the caller saw; ``None`` when the
        item had moved on (the caller decides again on a fresh read, or
        answers 409). After a write that starts a job's next run, the results
        of its failed files are forgotten (only by the writer that won).
        """
        update = change_update(change)
        condition = change_condition(update, change.expect)
        try:
            response = await aws_call(
                "dynamodb job " + change.status.value.lower(),
                self.dynamodb.update_item,
                policy=self.policy,
                TableName=self.table,
                Key=self._key(export_id, JOB_SK),
                ReturnValues="ALL_NEW",
                **update.kwargs(condition),
            )
        except AwsRejected as err:
            if err.code == "ConditionalCheckFailedException":
                return None
            raise
        if change.forget_failed:
            await self._forget_failed_files(export_id)
            # The counts without the forgotten files'.
            return await self.get_job(export_id)
        return self._job(response["Attributes"])

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

        A write refused because the item moved on is decided again on a fresh
        read, up to ``attempts`` writes; the last refusal is a
        :class:`~pipeline._core.lifecycle.Refuse`. ``read=False`` decides on
        ``seen``, for a caller that has just read the item. An operator's call
        passes ``attempts=1``: it applies to the job as the operator saw it.
        """
        job = await self.get_job(export_id) if read else seen
        for _ in range(attempts):
            decision = decide(job)
            if not isinstance(decision, Change):
                return Outcome(decision, job)
            written = await self.apply(export_id, decision)
            if written is not None:
                return Outcome(decision, written)
            job = await self.get_job(export_id)
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

    async def _forget_failed_files(self, export_id: str) -> None:
        """Delete each failed file's result and take its counts off the job's, together."""
        files, _ = await read_file_items(self, export_id)
        for values in files:
            if values["status"] == "DONE":
                continue
            file_id = values["fileId"]
            result = file_result_of(export_id, values, {}, with_paths=False)
            update = self._counts_update(result, sign=-1)
            try:
                await aws_call(
                    "dynamodb forget failed file",
                    self.dynamodb.transact_write_items,
                    policy=self.policy,
                    TransactItems=[
                        {
                            "Delete": {
                                "TableName": self.table,
                                "Key": self._key(export_id, FILE_PREFIX + file_id),
                                "ConditionExpression": "#status = :failed",
                                "ExpressionAttributeNames": {"#status": "status"},
                                "ExpressionAttributeValues": {":failed": encode("FAILED")},
                            }
                        },
                        {
                            "Update": {
                                "TableName": self.table,
                                "Key": self._key(export_id, JOB_SK),
                                **update.kwargs(None),
                            }
                        },
                    ],
                )
            except AwsRejected as err:
                # Someone else forgot it first: its counts are off already.
                if err.code != "ConditionalCheckFailedException":
                    raise
            # The file item first: pieces without it are never read.
            await self._delete_pieces(export_id, file_id, values["writeId"], int(values["pieces"]))

    async def _delete_pieces(
        self, export_id: str, file_id: str, write_id: str, pieces: int
    ) -> None:
        for n in range(1, pieces):
            await aws_call(
                "dynamodb delete file paths",
                self.dynamodb.delete_item,
                policy=self.policy,
                TableName=self.table,
                Key=self._key(export_id, piece_sk(file_id, write_id, n)),
            )

    def _counts_update(self, result: FileResult, *, sign: int = 1) -> Update:
        """``ADD`` of a file's counts and size (times ``sign``) to the summary item."""
        update = Update()
        for name, value in converter.unstructure(file_counts(result)).items():
            if name not in ("filesTotal", "entriesMissing") and value:
                update.add(name, sign * value)
        if result.size_bytes:
            update.add("bytesFinished", sign * result.size_bytes)
        update.set("updatedAt", self._now())
        return update

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
        found: set[str] = set()
        start_key: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
                "FilterExpression": "kind = :file",
                "ProjectionExpression": "fileId",
                "ExpressionAttributeValues": {
                    ":pk": encode(export_id),
                    ":prefix": encode(FILE_PREFIX),
                    ":file": encode("file"),
                },
                "ConsistentRead": True,
            }
            if start_key is not None:
                kwargs["ExclusiveStartKey"] = start_key
            response = await aws_call(
                "dynamodb query recorded files", self.dynamodb.query, policy=self.policy, **kwargs
            )
            found.update(decode_item(raw)["fileId"] for raw in response.get("Items") or [])
            start_key = response.get("LastEvaluatedKey")
            if not start_key:
                return found

    async def record_file(self, export_id: str, result: FileResult) -> bool:
        """Store one file's result and add its counts to the job's, in one transaction.

        Returns ``False`` when the file had a result already: a recorded
        result is final (a late or duplicate task whose download now fails,
        an expired URL, never turns DONE into FAILED), and nothing is counted
        twice.
        """
        blob = pack_paths(result.seen_paths)
        size = self.paths_chunk_bytes
        pieces = [blob[i : i + size] for i in range(0, len(blob), size)] or [b""]
        write_id = hashlib.sha256(blob).hexdigest()[:16]
        for n, piece in enumerate(pieces[1:], start=1):
            await aws_call(
                "dynamodb put file paths",
                self.dynamodb.put_item,
                policy=self.policy,
                TableName=self.table,
                Item={
                    **self._key(export_id, piece_sk(result.file_id, write_id, n)),
                    "kind": encode("paths"),
                    "fileId": encode(result.file_id),
                    "writeId": encode(write_id),
                    "piece": encode(n),
                    "data": encode(piece),
                },
            )
        values = converter.unstructure(result)
        del values["ok"], values["seenPaths"]
        item = {name: encode(value) for name, value in values.items() if value is not None}
        item.update(
            {
                **self._key(export_id, FILE_PREFIX + result.file_id),
                "kind": encode("file"),
                "status": encode("DONE" if result.ok else "FAILED"),
                "seenPaths": encode(pieces[0]),
                "writeId": encode(write_id),
                "pieces": encode(len(pieces)),
                "updatedAt": encode(self._now()),
            }
        )
        counts = self._counts_update(result)
        try:
            await aws_call(
                "dynamodb record file",
                self.dynamodb.transact_write_items,
                policy=self.policy,
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": self._key(export_id, JOB_SK),
                            **counts.kwargs(None),
                        }
                    },
                ],
            )
        except AwsRejected as err:
            if err.code != "ConditionalCheckFailedException":
                raise
            if len(pieces) > 1:
                await self._drop_refused_pieces(export_id, result.file_id, write_id, len(pieces))
            return False
        return True

    async def _drop_refused_pieces(
        self, export_id: str, file_id: str, write_id: str, pieces: int
    ) -> None:
        """Delete the pieces just written for a refused record, unless the stored one uses them."""
        response = await aws_call(
            "dynamodb get file result",
            self.dynamodb.get_item,
            policy=self.policy,
            TableName=self.table,
            Key=self._key(export_id, FILE_PREFIX + file_id),
            ProjectionExpression="writeId",
            ConsistentRead=True,
        )
        stored = decode_item(response.get("Item") or {}).get("writeId")
        if stored != write_id:
            await self._delete_pieces(export_id, file_id, write_id, pieces)

    async def file_results(self, export_id: str) -> list[FileResult]:
        """Every file result of the export, with its seen paths, in file-ID order."""
        files, pieces = await read_file_items(self, export_id)
        return [file_result_of(export_id, values, pieces) for values in files]
