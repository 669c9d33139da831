"""The jobs table's items: their keys, their attribute encoding, and update expressions.

What :class:`~pipeline._adapters.aws.jobstore.JobStore` stores, without the
calls that store it: the summary item as a :class:`JobItem`, camelCase
attribute names, DynamoDB attribute values, ISO-8601 times, the compressed
path lists of file results, and :class:`Update`, which builds an UpdateItem
expression with a placeholder for every name and value.

Items under ``pk = <exportId>``:

- ``sk = "job"``: the contract's summary item (``status``, counts,
  ``correlationId``, ``createdAt``/``updatedAt`` in ISO-8601 UTC, ``error``,
  ``bytesTotal`` once listed), plus ``listingDone``, ``waitingSince``,
  ``bytesFinished`` and ``runGeneration`` (the lifecycle's run counter,
  :mod:`pipeline._core.lifecycle`); ``eventsOwed`` (lifecycle events written
  with their transition, not yet sent: :mod:`.jobevents`), ``expiresAt``
  once final (retention) and ``expiryOwed`` while the other items of the job
  have yet to follow it. And ``jobStatus``, a copy of ``status`` that only
  summary items carry, written with it: the partition key of the sparse index
  :data:`STATUS_INDEX` (sort key ``createdAt``, keys only) that lists jobs by
  status. File items have a ``status`` of their own (DONE/FAILED), so the
  index cannot key on ``status``.
- ``sk = "file#<fileId>"`` (``kind = "file"``): ``status`` DONE/FAILED, the
  file's counts, ``name``, ``error`` and ``seenPaths``, the paths of the
  file's entries that had a metadata item, needed once, at the end, to count
  ``entriesMissing`` across files. They are stored as a zlib-compressed JSON
  array (JSON rather than newline-joined text, so any path survives intact).
- ``sk = "file#<fileId>#paths#<writeId>#<n>"`` (``kind = "paths"``): when
  the compressed paths exceed :data:`PATHS_CHUNK_BYTES` (DynamoDB items are
  limited to 400 KB), piece ``n >= 1`` of them; piece 0 is in the file item.
  ``writeId`` is derived from the compressed bytes. The pieces are written
  before the file item that names them; pieces of a record that was refused
  (the file had a result already) are deleted again.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from pipeline._core.accounting import FileResult, JobStatus, JobSummary, file_counts
from pipeline._core.lifecycle import Change, Expect

__all__ = [
    "EVENTS_OWED",
    "EXPIRY_OWED",
    "FILE_PREFIX",
    "JOB_SK",
    "LIST_STATUS",
    "PATHS_CHUNK_BYTES",
    "STATUS_INDEX",
    "JobItem",
    "OwedEvent",
    "Update",
    "change_condition",
    "change_update",
    "converter",
    "counts_update",
    "decode_item",
    "encode",
    "format_time",
    "item_key",
    "job_document",
    "job_from_item",
    "pack_paths",
    "parse_time",
    "piece_sk",
    "unpack_paths",
    "utc_now",
]


EVENTS_OWED = "eventsOwed"
EXPIRY_OWED = "expiryOwed"
# Room under DynamoDB's 400 KB item limit for the rest of the file item.
PATHS_CHUNK_BYTES = 300_000
JOB_SK = "job"
# The jobs table's sparse index of summary items: partition key LIST_STATUS,
# sort key createdAt, keys only (so a progress write never rewrites it).
STATUS_INDEX = "by-status"
LIST_STATUS = "jobStatus"
FILE_PREFIX = "file#"


@attrs.frozen
class OwedEvent:
    """One lifecycle event owed: written with its transition, cleared once sent."""

    transition_id: str
    status: JobStatus
    at: datetime
    generation: int


@attrs.frozen
class JobItem:
    """The summary item of one export, as stored."""

    export_id: str
    status: JobStatus
    correlation_id: str | None
    # Timezone-aware UTC; stored as ISO-8601 text ending in "Z".
    created_at: datetime
    updated_at: datetime
    listing_done: bool
    summary: JobSummary
    error: str | None = None
    # When this submission began waiting on a PENDING export (EXPORT_MAX_WAIT_SECONDS
    # counts from here, not from the first createdAt of a resubmitted export).
    waiting_since: datetime | None = None
    # Sum of the listed files' sizeBytes, once the listing is done.
    bytes_total: int | None = None
    # Sum of the listed sizeBytes of the files with a result (the service's own
    # attribute ``bytesFinished``): the job's progress.
    bytes_finished: int = 0
    # The job's run (``runGeneration``): 1 when created, one more per rerun;
    # 0 for an item written before runs were counted.
    generation: int = 0
    # Retention: epoch seconds when the table's TTL may delete the final job.
    expires_at: int | None = None
    # Lifecycle events written with their transition and not yet sent, oldest first.
    events_owed: tuple[OwedEvent, ...] = ()
    # The job's other items still to get (or lose) ``expiresAt``.
    expiry_owed: bool = False

    @property
    def files_total(self) -> int:
        """ZIP files listed (0 until the listing is done)."""
        return self.summary.files_total


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _make_converter() -> cattrs.Converter:
    """Field names in the table are camelCase; the values stay Python values."""
    converter = cattrs.Converter()
    for cls in (JobSummary, FileResult):
        renames: dict[str, Any] = {
            field.name: override(rename=_camel(field.name)) for field in attrs.fields(cls)
        }
        converter.register_unstructure_hook(
            cls, make_dict_unstructure_fn(cls, converter, **renames)
        )
        converter.register_structure_hook(cls, make_dict_structure_fn(cls, converter, **renames))
    return converter


converter = _make_converter()


def encode(value: Any) -> dict[str, Any]:
    """One Python value as a DynamoDB attribute value."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes):
        return {"B": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, list | tuple):
        return {"L": [encode(item) for item in value]}
    if isinstance(value, dict):
        return {"M": {name: encode(item) for name, item in value.items()}}
    msg = f"cannot store {type(value).__name__} in the jobs table"
    raise TypeError(msg)


def decode(attribute: dict[str, Any]) -> Any:
    ((kind, value),) = attribute.items()
    if kind == "N":
        return int(value)
    if kind == "NULL":
        return None
    if kind == "L":
        return [decode(item) for item in value]
    if kind == "M":
        return decode_item(value)
    return value


def decode_item(raw: dict[str, Any]) -> dict[str, Any]:
    return {name: decode(attribute) for name, attribute in raw.items()}


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def pack_paths(paths: frozenset[str]) -> bytes:
    return zlib.compress(json.dumps(sorted(paths)).encode(), 6)


def unpack_paths(blob: bytes) -> frozenset[str]:
    if not blob:
        return frozenset()
    return frozenset(json.loads(zlib.decompress(blob)))


class Update:
    """Builds an UpdateItem expression with placeholders for every name and value."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self.sets: list[str] = []
        self.removes: list[str] = []
        self.adds: list[str] = []

    def name(self, attribute: str) -> str:
        placeholder = f"#n{len(self.names)}"
        self.names[placeholder] = attribute
        return placeholder

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = encode(value)
        return placeholder

    def set(self, attribute: str, value: Any) -> None:
        self.sets.append(f"{self.name(attribute)} = {self.value(value)}")

    def append(self, attribute: str, items: list[Any]) -> None:
        """Append ``items`` to a list attribute (created when absent)."""
        name = self.name(attribute)
        empty = self.value([])
        added = self.value(items)
        self.sets.append(f"{name} = list_append(if_not_exists({name}, {empty}), {added})")

    def set_if_absent(self, attribute: str, value: Any) -> None:
        name = self.name(attribute)
        self.sets.append(f"{name} = if_not_exists({name}, {self.value(value)})")

    def add(self, attribute: str, amount: int) -> None:
        """Add ``amount`` to a number attribute (0 when it is absent)."""
        self.adds.append(f"{self.name(attribute)} {self.value(amount)}")

    def remove(self, attribute: str) -> None:
        self.removes.append(self.name(attribute))

    def status_in(self, statuses: Iterable[JobStatus]) -> str:
        name = self.name("status")
        values = ", ".join(self.value(status.value) for status in statuses)
        return f"{name} IN ({values})"

    def kwargs(self, condition: str | None) -> dict[str, Any]:
        expression = "SET " + ", ".join(self.sets)
        if self.adds:
            expression += " ADD " + ", ".join(self.adds)
        if self.removes:
            expression += " REMOVE " + ", ".join(self.removes)
        kwargs: dict[str, Any] = {
            "UpdateExpression": expression,
            "ExpressionAttributeNames": self.names,
            "ExpressionAttributeValues": self.values,
        }
        if condition is not None:
            kwargs["ConditionExpression"] = condition
        return kwargs


def counts_update(result: FileResult, at: str, *, sign: int = 1) -> Update:
    """``ADD`` of a file's counts and size (times ``sign``) to the summary item."""
    update = Update()
    for name, value in converter.unstructure(file_counts(result)).items():
        if name not in ("filesTotal", "entriesMissing") and value:
            update.add(name, sign * value)
    if result.size_bytes:
        update.add("bytesFinished", sign * result.size_bytes)
    update.set("updatedAt", at)
    return update


def item_key(pk: str, sk: str) -> dict[str, Any]:
    """The table's key of the item ``pk`` / ``sk`` (a job's summary, a file result, a piece...)."""
    return {"pk": encode(pk), "sk": encode(sk)}


def piece_sk(file_id: str, write_id: str, n: int) -> str:
    """The sort key of piece ``n`` of a file result's seen paths."""
    return f"{FILE_PREFIX}{file_id}#paths#{write_id}#{n}"


def job_from_item(raw: dict[str, Any]) -> JobItem:
    """The summary item as stored, read back into a :class:`JobItem`."""
    values = decode_item(raw)
    return JobItem(
        export_id=values["pk"],
        status=JobStatus(values["status"]),
        correlation_id=values.get("correlationId"),
        created_at=parse_time(values["createdAt"]),
        updated_at=parse_time(values["updatedAt"]),
        listing_done=bool(values.get("listingDone", False)),
        summary=converter.structure(values, JobSummary),
        error=values.get("error"),
        waiting_since=parse_time(values["waitingSince"]) if "waitingSince" in values else None,
        bytes_total=values.get("bytesTotal"),
        bytes_finished=values.get("bytesFinished", 0),
        generation=values.get("runGeneration", 0),
        expires_at=values.get("expiresAt"),
        events_owed=tuple(
            OwedEvent(
                transition_id=owed["id"],
                status=JobStatus(owed["status"]),
                at=parse_time(owed["at"]),
                generation=owed["run"],
            )
            for owed in values.get(EVENTS_OWED, [])
        ),
        expiry_owed=bool(values.get(EXPIRY_OWED, False)),
    )


def job_document(job: JobItem) -> dict[str, Any]:
    """The summary item's contract attributes (section 3) and ``exportId``, as JSON values."""
    document: dict[str, Any] = {
        "exportId": job.export_id,
        "status": job.status.value,
        **converter.unstructure(job.summary),
        "correlationId": job.correlation_id,
        "createdAt": format_time(job.created_at),
        "updatedAt": format_time(job.updated_at),
    }
    if job.bytes_total is not None:
        document["bytesTotal"] = job.bytes_total
    if job.error is not None:
        document["error"] = job.error
    return document


def change_update(
    change: Change,
    *,
    transition_id: str | None = None,
    expires_at: int | None = None,
    follow_expiry: bool = True,
) -> Update:
    """The UpdateItem of a lifecycle :class:`Change`.

    ``transition_id``: an event is owed, appended to ``eventsOwed`` in the
    same write. ``expires_at`` (a write that ends the job, with retention on)
    sets ``expiresAt``; a write that takes a final job back to work removes
    it, whatever the retention now. Either marks the job's other items as
    owed the same (``expiryOwed``), unless ``follow_expiry`` is false: the
    same write gives them theirs.
    """
    update = Update()
    at = format_time(change.at)
    update.set("status", change.status.value)
    update.set(LIST_STATUS, change.status.value)
    if transition_id is not None:
        owed = {"id": transition_id, "status": change.status.value, "at": at}
        update.append(EVENTS_OWED, [{**owed, "run": change.generation}])
    if expires_at is not None:
        update.set("expiresAt", expires_at)
        if follow_expiry:
            update.set(EXPIRY_OWED, True)
    elif change.reopens_job:
        update.remove("expiresAt")
        update.set(EXPIRY_OWED, True)
    update.set("runGeneration", change.generation)
    update.set("updatedAt", at)
    if change.new_run:
        update.set_if_absent("createdAt", at)
        for name, value in converter.unstructure(JobSummary()).items():
            # One expression may not name an attribute twice: filesTotal set below.
            if not (name == "filesTotal" and change.files_total is not None):
                update.set_if_absent(name, value)
    if change.correlation_id is not None:
        update.set("correlationId", change.correlation_id)
    if change.waiting_since is not None:
        update.set("waitingSince", format_time(change.waiting_since))
    elif not change.keep_waiting_since:
        update.remove("waitingSince")
    if change.error is None:
        update.remove("error")
    else:
        update.set("error", change.error)
    if change.listed is not None:
        update.set("listingDone", change.listed)
    if change.summary is not None:
        for name, value in converter.unstructure(change.summary).items():
            update.set(name, value)
    elif change.files_total is not None:
        update.set("filesTotal", change.files_total)
    if change.bytes_total is not None:
        update.set("bytesTotal", change.bytes_total)
    return update


def change_condition(update: Update, expect: Expect) -> str:
    """The condition that the item is as the caller saw it."""
    if expect.absent:
        return f"attribute_not_exists({update.name('pk')})"
    generation = update.name("runGeneration")
    if expect.generation:
        run = f"{generation} = {update.value(expect.generation)}"
    else:
        run = f"attribute_not_exists({generation})"
    return f"{update.status_in(sorted(expect.statuses))} AND {run}"
