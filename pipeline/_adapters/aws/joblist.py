"""Jobs by status and a job's files, page by page, without a scan.

The job list reads the sparse index :data:`~.jobitems.STATUS_INDEX` (one
partition per status, newest ``createdAt`` first, keys only) and then the
page's summary items with BatchGetItem: the cost of a page depends on its
size, never on the size of the table. Without a status, every status's
partition is queried for one page and the answers are merged by
``createdAt``; the cursor then says where each partition stands. A job's
files are one Query of its own partition.

A cursor is opaque to callers (URL-safe base64 of JSON); a job whose status
changes between two pages may show on both or on neither, as in any list
that pages over moving data.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
from typing import Any

import attrs

from pipeline._adapters.aws.batchget import batch_get
from pipeline._adapters.aws.clients import aws_call
from pipeline._adapters.aws.jobitems import (
    FILE_PREFIX,
    JOB_SK,
    LIST_STATUS,
    STATUS_INDEX,
    JobItem,
    decode_item,
    encode,
    job_from_item,
)
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._core.accounting import JobStatus

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "BadCursor",
    "FilePage",
    "JobPage",
    "file_view",
    "list_files",
    "list_jobs",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# A partition whose every job has been listed.
_DONE = "done"
_FILE_FIELDS = (
    "fileId",
    "name",
    "status",
    "entriesUploaded",
    "entriesSkipped",
    "entriesRejected",
    "bytesUploaded",
    "sizeBytes",
    "error",
    "updatedAt",
    "kind",
)


class BadCursor(ValueError):
    """A cursor this service did not hand out (or for another listing)."""


@attrs.frozen
class JobPage:
    jobs: list[JobItem]
    next_cursor: str | None


@attrs.frozen
class FilePage:
    files: list[dict[str, Any]]
    next_cursor: str | None


def _encode_cursor(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()


def _decode_cursor(cursor: str, kind: str) -> dict[str, Any]:
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, UnicodeError) as err:
        msg = f"cursor {cursor[:40]!r} is not one this service gave"
        raise BadCursor(msg) from err
    if not isinstance(state, dict) or state.get("k") != kind:
        msg = f"cursor {cursor[:40]!r} is not one of this listing"
        raise BadCursor(msg)
    return state


def _index_key(values: dict[str, Any]) -> dict[str, str]:
    return {name: values[name] for name in ("pk", "sk", LIST_STATUS, "createdAt")}


async def _partition(
    store: JobStore, status: JobStatus, after: dict[str, str] | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``limit`` index keys of one status after ``after``; and whether more follow."""
    kwargs: dict[str, Any] = {
        "TableName": store.table,
        "IndexName": STATUS_INDEX,
        "KeyConditionExpression": "#s = :s",
        "ExpressionAttributeNames": {"#s": LIST_STATUS},
        "ExpressionAttributeValues": {":s": encode(status.value)},
        "ScanIndexForward": False,
        "Limit": limit,
    }
    if after is not None:
        kwargs["ExclusiveStartKey"] = {name: encode(value) for name, value in after.items()}
    response = await aws_call(
        "dynamodb list jobs", store.dynamodb.query, policy=store.policy, **kwargs
    )
    keys = [decode_item(raw) for raw in response.get("Items") or []]
    return keys, bool(response.get("LastEvaluatedKey"))


async def list_jobs(
    store: JobStore,
    status: JobStatus | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> JobPage:
    """Summary items newest first, of one status or all; ``BadCursor`` for a foreign cursor."""
    if not 1 <= limit <= MAX_LIMIT:
        msg = f"limit must be 1 to {MAX_LIMIT}, not {limit}"
        raise ValueError(msg)
    statuses = list(JobStatus) if status is None else [status]
    kind = "jobs" if status is None else f"jobs:{status.value}"
    positions: dict[str, Any] = (
        {} if cursor is None else dict(_decode_cursor(cursor, kind).get("p") or {})
    )
    heads: dict[str, tuple[list[dict[str, Any]], bool]] = {}
    for each in statuses:
        after = positions.get(each.value)
        if after == _DONE:
            continue
        heads[each.value] = await _partition(store, each, after, limit)
    # Newest first across partitions; each partition is newest first already.
    merged = heapq.merge(
        *(
            [(keys[n]["createdAt"], keys[n]["pk"], name, n) for n in range(len(keys))]
            for name, (keys, _) in heads.items()
        ),
        key=lambda head: (head[0], head[1]),
        reverse=True,
    )
    page: list[dict[str, Any]] = []
    taken: dict[str, int] = dict.fromkeys(heads, 0)
    for _, _, name, n in merged:
        if len(page) == limit:
            break
        page.append(heads[name][0][n])
        taken[name] = n + 1
    for name, (keys, more) in heads.items():
        if taken[name] == len(keys) and not more:
            positions[name] = _DONE
        elif taken[name]:
            positions[name] = _index_key(keys[taken[name] - 1])
    finished = all(positions.get(each.value) == _DONE for each in statuses)
    next_cursor = None if finished else _encode_cursor({"k": kind, "p": positions})
    return JobPage(await _summaries(store, page), next_cursor)


async def _summaries(store: JobStore, keys: list[dict[str, Any]]) -> list[JobItem]:
    """The summary items of ``keys``, in their order (a job deleted meanwhile is left out)."""
    raw_items = await batch_get(
        store.dynamodb,
        store.table,
        [{"pk": encode(key["pk"]), "sk": encode(JOB_SK)} for key in keys],
        what="dynamodb get listed jobs",
        policy=store.policy,
    )
    by_id = {job.export_id: job for job in map(job_from_item, raw_items)}
    return [by_id[key["pk"]] for key in keys if key["pk"] in by_id]


def file_view(values: dict[str, Any]) -> dict[str, Any]:
    """A file result as ``GET /jobs/{id}/files`` shows it."""
    view: dict[str, Any] = {
        "fileId": values["fileId"],
        "name": values.get("name"),
        "status": "done" if values["status"] == "DONE" else "failed",
        "entriesUploaded": values.get("entriesUploaded", 0),
        "entriesSkipped": values.get("entriesSkipped", 0),
        "entriesRejected": values.get("entriesRejected", 0),
        "bytesUploaded": values.get("bytesUploaded", 0),
        "sizeBytes": values.get("sizeBytes", 0),
        "updatedAt": values.get("updatedAt"),
    }
    if view["status"] == "failed":
        view["error"] = " ".join(str(values.get("error") or "no reason recorded").split())
    return view


async def list_files(
    store: JobStore,
    export_id: str,
    status: str | None = None,
    *,
    limit: int = 100,
    cursor: str | None = None,
) -> FilePage:
    """The export's file results in file-ID order, optionally only ``done`` or ``failed``."""
    if status not in (None, "done", "failed"):
        msg = f"status must be done or failed, not {status!r}"
        raise ValueError(msg)
    if not 1 <= limit <= MAX_LIMIT:
        msg = f"limit must be 1 to {MAX_LIMIT}, not {limit}"
        raise ValueError(msg)
    kind = f"files:{export_id}:{status}"
    start = None if cursor is None else _decode_cursor(cursor, kind).get("after")
    if cursor is not None and not isinstance(start, dict):
        msg = f"cursor {cursor[:40]!r} is not one of this listing"
        raise BadCursor(msg)
    names = {f"#f{n}": field for n, field in enumerate(_FILE_FIELDS)}
    placeholder = {field: name for name, field in names.items()}
    condition = f"{placeholder['kind']} = :file"
    values = {":pk": encode(export_id), ":prefix": encode(FILE_PREFIX), ":file": encode("file")}
    if status is not None:
        condition += f" AND {placeholder['status']} = :status"
        values[":status"] = encode("DONE" if status == "done" else "FAILED")
    found: list[dict[str, Any]] = []
    while True:
        kwargs: dict[str, Any] = {
            "TableName": store.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "FilterExpression": condition,
            "ProjectionExpression": ", ".join(["sk", *names]),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            # Items the filter drops count too: never more than the page is asked.
            "Limit": limit - len(found),
        }
        if start is not None:
            kwargs["ExclusiveStartKey"] = {name: encode(value) for name, value in start.items()}
        response = await aws_call(
            "dynamodb list files", store.dynamodb.query, policy=store.policy, **kwargs
        )
        found += [file_view(decode_item(raw)) for raw in response.get("Items") or []]
        last = response.get("LastEvaluatedKey")
        start = None if not last else decode_item(last)
        if start is None or len(found) >= limit:
            break
    next_cursor = None if start is None else _encode_cursor({"k": kind, "after": start})
    return FilePage(found, next_cursor)
