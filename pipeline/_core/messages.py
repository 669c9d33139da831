"""Message bodies in and out: export jobs (contract 1) and download tasks.

Decoding is strict and total: any body either becomes a value or raises
:class:`PoisonMessage` with a one-line reason, so the receiver can send it to
the dead-letter queue once instead of retrying it forever. Bodies may come
wrapped in an SNS notification envelope, which is unwrapped first.

The download task is this service's own message between the orchestrator and
the workers (``docs/contract.md``); it carries a version so that a newer
orchestrator and an older worker can be deployed side by side and disagree
loudly instead of silently. A task carries its export's priority, which a
version-1 reader without it ignores.

An export job may ask for the high lane (``"priority": "high"``) and for a
delayed start (``"notBefore"``, an ISO-8601 time with its zone); both are
checked like the rest of the body, and written back out when the service
sends the job on (a pending export, a parked delayed one).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

from pipeline._core.lanes import Priority
from pipeline._errors import PoisonMessage

__all__ = [
    "DOWNLOAD_TASK_VERSION",
    "EXPORT_ID_PATTERN",
    "DownloadTask",
    "ExportJob",
    "decode_download_task",
    "decode_export_job",
    "encode_download_task",
    "encode_export_job",
    "export_id_problem",
    "iso_utc",
    "parse_not_before",
    "stated_correlation_id",
]

_EXPORT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# What an export ID may be (contract 1), for those who check one before sending it.
EXPORT_ID_PATTERN = _EXPORT_ID
# Correlation IDs end up in every log line; keep them printable and short.
_CORRELATION_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
DOWNLOAD_TASK_VERSION = 1
# One message may name many exports, but not so many that one poison-free body
# occupies the service for a day; SQS caps a body at 256 KiB anyway.
MAX_EXPORTS_PER_MESSAGE = 1000


@attrs.frozen
class ExportJob:
    """One export-job message: the exports to process and the correlation ID."""

    export_ids: tuple[str, ...]
    correlation_id: str
    priority: Priority = Priority.NORMAL
    # No file of the job starts before this time (UTC); None: at once.
    not_before: dt.datetime | None = None
    # The run of the job each export is sent for (the service's own messages:
    # a retry, a hand-back, the sweeper): a message of an older run starts
    # nothing (``runGenerations`` in the body; absent in messages from outside).
    generations: Mapping[str, int] = attrs.field(factory=dict)


@attrs.frozen
class DownloadTask:
    """One ZIP file of an export, to be processed by a worker."""

    export_id: str
    correlation_id: str
    file_id: str
    name: str
    download_url: str
    size_bytes: int
    priority: Priority = Priority.NORMAL


def export_id_problem(export_id: object) -> str | None:
    """Why ``export_id`` is not a valid export ID (contract 1), or None when it is."""
    if isinstance(export_id, str) and _EXPORT_ID.match(export_id):
        return None
    shown = json.dumps(export_id)[:140]
    return f"export ID {shown} is not 1-128 characters of [A-Za-z0-9._:-]"


def stated_correlation_id(body: str) -> str | None:
    """The ``correlationId`` a body states, even when the body is otherwise poison.

    The poison log line carries it, so a submitter who printed it finds the
    line; None when the body names none (or none that is printable).
    """
    try:
        document = _unwrap_sns(_parse_json(body))
    except PoisonMessage:
        return None
    if not isinstance(document, dict):
        return None
    stated = document.get("correlationId")
    if isinstance(stated, str) and _CORRELATION_ID.match(stated):
        return stated
    return None


def _parse_json(body: str) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, RecursionError) as err:
        msg = f"body is not valid JSON ({err})"
        raise PoisonMessage(msg) from None


def _unwrap_sns(document: Any) -> Any:
    if isinstance(document, dict) and document.get("Type") == "Notification":
        inner = document.get("Message")
        if not isinstance(inner, str):
            msg = "SNS envelope has no string 'Message'"
            raise PoisonMessage(msg)
        return _parse_json(inner)
    return document


def decode_export_job(body: str, *, new_correlation_id: str | None = None) -> ExportJob:
    """Decode an export-job body, unwrapping SNS; raise :class:`PoisonMessage` when invalid.

    A missing ``correlationId`` is generated (``new_correlation_id`` when given,
    for tests; otherwise a random one).
    """
    document = _unwrap_sns(_parse_json(body))
    if not isinstance(document, dict):
        msg = f"body must be a JSON object, not {type(document).__name__}"
        raise PoisonMessage(msg)
    ids = document.get("exportIds")
    if ids is None:
        msg = "body has no 'exportIds'"
        raise PoisonMessage(msg)
    if not isinstance(ids, list) or not ids:
        msg = "'exportIds' must be a non-empty list"
        raise PoisonMessage(msg)
    if len(ids) > MAX_EXPORTS_PER_MESSAGE:
        msg = f"'exportIds' has {len(ids)} IDs, more than {MAX_EXPORTS_PER_MESSAGE}"
        raise PoisonMessage(msg)
    for export_id in ids:
        problem = export_id_problem(export_id)
        if problem is not None:
            raise PoisonMessage(problem)
    correlation_id = document.get("correlationId")
    if correlation_id is None:
        correlation_id = new_correlation_id or f"c-{uuid.uuid4().hex[:12]}"
    elif not isinstance(correlation_id, str) or not _CORRELATION_ID.match(correlation_id):
        msg = "'correlationId' must be 1-128 printable characters"
        raise PoisonMessage(msg)
    # A resubmitted body may name an export twice; once is enough.
    unique = tuple(dict.fromkeys(ids))
    generations = _generations(document.get("runGenerations", {}), unique)
    return ExportJob(
        export_ids=unique,
        correlation_id=correlation_id,
        generations=generations,
        priority=_priority(document),
        not_before=parse_not_before(document.get("notBefore")),
    )


def _generations(value: Any, export_ids: tuple[str, ...]) -> dict[str, int]:
    if not isinstance(value, dict) or not all(
        export_id in export_ids and type(run) is int and run > 0 for export_id, run in value.items()
    ):
        msg = "'runGenerations' must map export IDs of the message to positive integers"
        raise PoisonMessage(msg)
    return dict(value)


def _priority(document: dict[str, Any]) -> Priority:
    value = document.get("priority", Priority.NORMAL.value)
    try:
        return Priority(value)
    except ValueError:
        shown = json.dumps(value)[:40]
        msg = f'\'priority\' must be "high" or "normal", not {shown}'
        raise PoisonMessage(msg) from None


def parse_not_before(value: Any) -> dt.datetime | None:
    """A ``notBefore`` value as an aware UTC time (None for None); raise
    :class:`PoisonMessage` when it is not ISO-8601 with a zone."""
    if value is None:
        return None
    when = None
    if isinstance(value, str) and len(value) <= 64:
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            when = None
    if when is None or when.tzinfo is None:
        shown = json.dumps(value)[:70]
        msg = (
            "'notBefore' must be an ISO-8601 time with its zone"
            f" (e.g. 2026-01-31T22:00:00Z), not {shown}"
        )
        raise PoisonMessage(msg)
    return when.astimezone(dt.UTC)


def iso_utc(when: dt.datetime) -> str:
    """An aware time as ISO-8601 UTC with a ``Z`` (how ``notBefore`` is written)."""
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def encode_export_job(job: ExportJob) -> str:
    """The body of an export-job message (used to hand back pending exports).

    ``priority`` and ``notBefore`` are written only when they are not the
    defaults, so a plain job's body stays as the contract shows it.
    """
    document: dict[str, Any] = {
        "exportIds": list(job.export_ids),
        "correlationId": job.correlation_id,
    }
    if job.generations:
        document["runGenerations"] = dict(job.generations)
    if job.priority is not Priority.NORMAL:
        document["priority"] = job.priority.value
    if job.not_before is not None:
        document["notBefore"] = iso_utc(job.not_before)
    return json.dumps(document)


def encode_download_task(task: DownloadTask) -> str:
    """The body of a download-task message, version :data:`DOWNLOAD_TASK_VERSION`."""
    return json.dumps(
        {
            "version": DOWNLOAD_TASK_VERSION,
            "exportId": task.export_id,
            "correlationId": task.correlation_id,
            "priority": task.priority.value,
            "file": {
                "fileId": task.file_id,
                "name": task.name,
                "downloadUrl": task.download_url,
                "sizeBytes": task.size_bytes,
            },
        },
        separators=(",", ":"),
    )


def decode_download_task(body: str) -> DownloadTask:
    """Decode a download-task body; raise :class:`PoisonMessage` when invalid."""
    document = _unwrap_sns(_parse_json(body))
    if not isinstance(document, dict):
        msg = "download task must be a JSON object"
        raise PoisonMessage(msg)
    version = document.get("version")
    if version != DOWNLOAD_TASK_VERSION:
        msg = f"download task version {version!r} is not {DOWNLOAD_TASK_VERSION}"
        raise PoisonMessage(msg)
    file = document.get("file")
    export_id = document.get("exportId")
    correlation_id = document.get("correlationId")
    if not isinstance(export_id, str) or not _EXPORT_ID.match(export_id):
        msg = "download task has no valid 'exportId'"
        raise PoisonMessage(msg)
    if not isinstance(correlation_id, str) or not isinstance(file, dict):
        msg = "download task needs 'correlationId' and 'file'"
        raise PoisonMessage(msg)
    fields = ("fileId", "name", "downloadUrl")
    if not all(isinstance(file.get(key), str) for key in fields) or not isinstance(
        file.get("sizeBytes"), int
    ):
        msg = "download task 'file' needs string fileId, name, downloadUrl and int sizeBytes"
        raise PoisonMessage(msg)
    return DownloadTask(
        export_id=export_id,
        correlation_id=correlation_id,
        file_id=file["fileId"],
        name=file["name"],
        download_url=file["downloadUrl"],
        size_bytes=file["sizeBytes"],
        priority=_priority(document),
    )
