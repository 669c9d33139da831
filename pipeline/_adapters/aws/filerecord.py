"""Recording a file's result: its item and its counts in one transaction.

Put the file's result item only if the file has none, and ``ADD`` its counts
(:func:`~pipeline._core.accounting.file_counts`) to the summary item, in one
``TransactWriteItems``: a redelivered or late file finds its result there and
changes nothing, and a file is counted exactly when its result exists.

A job of one file, begun with its listing, can end in the same transaction
(:func:`record_last_file`): its summary item's update is then the lifecycle's
final :class:`~pipeline._core.lifecycle.Change` (status and run generation as
seen, listing done, one file) instead of the counts' ``ADD``, and the result
item carries the job's ``expiresAt`` at once, so no other item has to follow
the expiry after it. The job stage then neither reads the job nor queries its
results: the worker holds the only result.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING, Any

import attrs

from pipeline._adapters.aws.clients import aws_call, cancellation_codes
from pipeline._adapters.aws.jobitems import (
    FILE_PREFIX,
    JOB_SK,
    change_condition,
    change_update,
    converter,
    counts_update,
    decode_item,
    encode,
    format_time,
    item_key,
    pack_paths,
    piece_sk,
)
from pipeline._adapters.aws.joboutbox import outbox_item, settle_owed
from pipeline._adapters.aws.jobresults import delete_pieces
from pipeline._core import lifecycle
from pipeline._core.accounting import FileResult
from pipeline._core.lifecycle import Change
from pipeline._errors import AwsRejected

if TYPE_CHECKING:
    from pipeline._adapters.aws.jobstore import JobStore

__all__ = ["record_file", "record_last_file"]


@attrs.frozen
class _Record:
    """A file result as items: the result item, and the seen-path pieces beyond its own."""

    item: dict[str, Any]
    write_id: str
    pieces: list[bytes]


def _record(store: JobStore, export_id: str, result: FileResult) -> _Record:
    blob = pack_paths(result.seen_paths)
    size = store.paths_chunk_bytes
    pieces = [blob[i : i + size] for i in range(0, len(blob), size)] or [b""]
    write_id = hashlib.sha256(blob).hexdigest()[:16]
    values = converter.unstructure(result)
    del values["ok"], values["seenPaths"]
    if result.error is not None:
        # What GET /jobs/{id}/files shows of a failed file: one line.
        values["error"] = " ".join(result.error.split())
    item = {name: encode(value) for name, value in values.items() if value is not None}
    item.update(
        {
            **item_key(export_id, FILE_PREFIX + result.file_id),
            "kind": encode("file"),
            "status": encode("DONE" if result.ok else "FAILED"),
            "seenPaths": encode(pieces[0]),
            "writeId": encode(write_id),
            "pieces": encode(len(pieces)),
            "updatedAt": encode(format_time(store.clock())),
        }
    )
    return _Record(item, write_id, pieces)


def _put_result(store: JobStore, record: _Record) -> dict[str, Any]:
    return {
        "Put": {
            "TableName": store.table,
            "Item": record.item,
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }


async def record_file(store: JobStore, export_id: str, result: FileResult) -> bool:
    """Store one file's result and add its counts to the job's; ``False``: it had one."""
    record = _record(store, export_id, result)
    for n, piece in enumerate(record.pieces[1:], start=1):
        await aws_call(
            "dynamodb put file paths",
            store.dynamodb.put_item,
            policy=store.policy,
            TableName=store.table,
            Item={
                **item_key(export_id, piece_sk(result.file_id, record.write_id, n)),
                "kind": encode("paths"),
                "fileId": encode(result.file_id),
                "writeId": encode(record.write_id),
                "piece": encode(n),
                "data": encode(piece),
            },
        )
    counts = counts_update(result, format_time(store.clock()))
    try:
        await aws_call(
            "dynamodb record file",
            store.dynamodb.transact_write_items,
            policy=store.policy,
            TransactItems=[
                _put_result(store, record),
                {
                    "Update": {
                        "TableName": store.table,
                        "Key": item_key(export_id, JOB_SK),
                        **counts.kwargs(None),
                    }
                },
            ],
        )
    except AwsRejected as err:
        if err.code != "ConditionalCheckFailedException":
            raise
        if len(record.pieces) > 1:
            await _drop_refused_pieces(store, export_id, result.file_id, record)
        return False
    store.changes.note(export_id)
    return True


async def record_last_file(
    store: JobStore, export_id: str, result: FileResult, change: Change
) -> bool | None:
    """Store the only file's result and end its job with ``change``, in one transaction.

    ``change`` is the lifecycle's :func:`~pipeline._core.lifecycle.finalise`
    on the job as it will be with this result counted; the write is also
    conditioned on the listing being done with one file. ``True``: recorded,
    and the job ended. ``False``: the file had a result already (nothing
    written). ``None``: not written, because the job is not as seen (cancelled,
    run again, listed again) or the seen paths need pieces: the caller records
    the file as any other.
    """
    record = _record(store, export_id, result)
    if len(record.pieces) > 1:
        return None
    owed = uuid.uuid4().hex if store.events is not None and change.owes_event else None
    expires = lifecycle.expires_at(change, store.retention_days)
    update = change_update(change, transition_id=owed, expires_at=expires, follow_expiry=False)
    if result.size_bytes:
        update.set("bytesFinished", result.size_bytes)
    condition = (
        f"{change_condition(update, change.expect)}"
        f" AND {update.name('listingDone')} = {update.value(True)}"
        f" AND {update.name('filesTotal')} = {update.value(1)}"
    )
    if expires is not None:
        record.item["expiresAt"] = encode(expires)
    items = [
        _put_result(store, record),
        {
            "Update": {
                "TableName": store.table,
                "Key": item_key(export_id, JOB_SK),
                **update.kwargs(condition),
            }
        },
    ]
    if owed is not None:
        # The event is owed as with any transition (joboutbox): named for the sweeper.
        items.append({"Put": {"TableName": store.table, "Item": outbox_item(export_id, change.at)}})
    try:
        await aws_call(
            "dynamodb record last file",
            store.dynamodb.transact_write_items,
            policy=store.policy,
            TransactItems=items,
        )
    except AwsRejected as err:
        if err.code != "ConditionalCheckFailedException":
            raise
        codes = cancellation_codes(err)
        return False if codes[:1] == ["ConditionalCheckFailed"] else None
    store.changes.note(export_id)
    if owed is not None and (job := await store.get_job(export_id)) is not None:
        await settle_owed(store, job)
    return True


async def _drop_refused_pieces(
    store: JobStore, export_id: str, file_id: str, record: _Record
) -> None:
    """Delete the pieces just written for a refused record, unless the stored one uses them."""
    response = await aws_call(
        "dynamodb get file result",
        store.dynamodb.get_item,
        policy=store.policy,
        TableName=store.table,
        Key=item_key(export_id, FILE_PREFIX + file_id),
        ProjectionExpression="writeId",
        ConsistentRead=True,
    )
    stored = decode_item(response.get("Item") or {}).get("writeId")
    if stored != record.write_id:
        await delete_pieces(store, export_id, file_id, record.write_id, len(record.pieces))
