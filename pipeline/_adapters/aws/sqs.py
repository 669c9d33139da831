"""SQS in our types: receive, delete, extend leases, send, find the dead-letter queue.

Thin wrappers; every call goes through :func:`pipeline._adapters.aws.clients.aws_call`. Two
decisions live here rather than in the callers:

- Batch calls report per-entry failures. For visibility changes a failed entry
  means the lease on that message is gone (another consumer may own it), so
  :func:`change_visibility_batch` returns the failed receipt handles instead
  of raising: the caller cancels exactly the work of those messages. Entries
  that failed on AWS's side (``SenderFault`` false) are retried first.
- A receipt handle SQS calls invalid on a single call becomes
  :class:`LeaseLost`, since that is what it means to the caller.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from pipeline._adapters.aws.clients import aws_call
from pipeline._adapters.aws.clienttypes import SqsClient
from pipeline._adapters.aws.sqsbatch import (
    MAX_BATCH,
    EntryFailure,
    batch_rounds,
    chunks_of_ten,
    failures,
)
from pipeline._core.backoff import AWS_POLICY, Backoff
from pipeline._errors import AwsRejected, Fault, LeaseLost, RetriesExhausted

__all__ = [
    "MAX_BATCH",
    "MAX_VISIBILITY",
    "REASON_ATTRIBUTE",
    "ReceivedMessage",
    "change_visibility",
    "change_visibility_batch",
    "dead_letter_queue_url",
    "delete",
    "delete_batch",
    "queue_visibility_timeout",
    "receive",
    "send",
    "send_batch",
]

# SQS's limit on a whole SendMessageBatch payload (the sum of the bodies).
_MAX_BATCH_BYTES = 256 * 1024
_MAX_WAIT_SECONDS = 20
# The message attribute that says why the service dead-lettered a message itself.
REASON_ATTRIBUTE = "pipeline-reason"
# Enough for any one-line reason; SQS would take 256 KiB.
_MAX_ATTRIBUTE_CHARS = 1000
MAX_VISIBILITY = 12 * 60 * 60
# Codes that mean "this receipt handle no longer holds the message".
_LEASE_LOST_CODES = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "InvalidParameterValue",
        "AWS.SimpleQueueService.MessageNotInflight",
        "MessageNotInflight",
    }
)


@attrs.frozen
class ReceivedMessage:
    """One received message and what SQS tells about its deliveries."""

    message_id: str
    receipt_handle: str
    body: str
    # 1 on the first delivery; grows with every redelivery.
    receive_count: int
    sent_at: datetime | None
    first_received_at: datetime | None
    # The message's own string attributes (asked for with ``with_attributes``).
    attributes: dict[str, str] = attrs.field(factory=dict)


def _timestamp(attrs_: dict[str, str], name: str) -> datetime | None:
    raw = attrs_.get(name)
    if raw is None:
        return None
    return datetime.fromtimestamp(int(raw) / 1000, tz=UTC)


def _message(raw: dict[str, Any]) -> ReceivedMessage:
    attributes: dict[str, str] = raw.get("Attributes") or {}
    return ReceivedMessage(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        body=raw.get("Body", ""),
        receive_count=int(attributes.get("ApproximateReceiveCount", "1")),
        sent_at=_timestamp(attributes, "SentTimestamp"),
        first_received_at=_timestamp(attributes, "ApproximateFirstReceiveTimestamp"),
        attributes={
            name: str(value["StringValue"])
            for name, value in (raw.get("MessageAttributes") or {}).items()
            if "StringValue" in value
        },
    )


def _check_visibility(seconds: int) -> None:
    if not 0 <= seconds <= MAX_VISIBILITY:
        msg = f"visibility timeout must be 0..{MAX_VISIBILITY} seconds, not {seconds}"
        raise ValueError(msg)


async def receive(
    sqs: SqsClient,
    queue_url: str,
    *,
    max_messages: int,
    wait_seconds: int,
    visibility_timeout: int | None = None,
    with_attributes: bool = False,
    policy: Backoff = AWS_POLICY,
) -> list[ReceivedMessage]:
    """Receive up to ``max_messages`` (1..10), long-polling ``wait_seconds`` (0..20).

    ``with_attributes`` asks for the messages' own attributes too (see
    :data:`REASON_ATTRIBUTE`).

    Returns an empty list when the poll ends with nothing. Cancelling the
    caller abandons the poll; messages SQS handed out in the meantime come
    back after their visibility timeout.
    """
    if not 1 <= max_messages <= MAX_BATCH:
        msg = f"max_messages must be 1..{MAX_BATCH}, not {max_messages}"
        raise ValueError(msg)
    if not 0 <= wait_seconds <= _MAX_WAIT_SECONDS:
        msg = f"wait_seconds must be 0..{_MAX_WAIT_SECONDS}, not {wait_seconds}"
        raise ValueError(msg)
    kwargs: dict[str, Any] = {
        "QueueUrl": queue_url,
        "MaxNumberOfMessages": max_messages,
        "WaitTimeSeconds": wait_seconds,
        "MessageSystemAttributeNames": [
            "ApproximateReceiveCount",
            "SentTimestamp",
            "ApproximateFirstReceiveTimestamp",
        ],
    }
    if with_attributes:
        kwargs["MessageAttributeNames"] = ["All"]
    if visibility_timeout is not None:
        _check_visibility(visibility_timeout)
        kwargs["VisibilityTimeout"] = visibility_timeout
    response = await aws_call("sqs receive", sqs.receive_message, policy=policy, **kwargs)
    return [_message(raw) for raw in response.get("Messages") or []]


async def delete(
    sqs: SqsClient,
    queue_url: str,
    receipt_handle: str,
    *,
    policy: Backoff = AWS_POLICY,
) -> None:
    """Delete a handled message; :class:`LeaseLost` if the handle is no longer valid."""
    try:
        await aws_call(
            "sqs delete",
            sqs.delete_message,
            policy=policy,
            QueueUrl=queue_url,
            ReceiptHandle=receipt_handle,
        )
    except AwsRejected as err:
        if err.code in _LEASE_LOST_CODES:
            raise LeaseLost(f"sqs delete: lease lost: {err}") from err
        raise


async def change_visibility(
    sqs: SqsClient,
    queue_url: str,
    receipt_handle: str,
    seconds: int,
    *,
    policy: Backoff = AWS_POLICY,
) -> None:
    """Set one message's visibility timeout; 0 hands it back to the queue at once.

    Raises :class:`LeaseLost` when SQS no longer accepts the receipt handle.
    """
    _check_visibility(seconds)
    try:
        await aws_call(
            "sqs change visibility",
            sqs.change_message_visibility,
            policy=policy,
            QueueUrl=queue_url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=seconds,
        )
    except AwsRejected as err:
        if err.code in _LEASE_LOST_CODES:
            raise LeaseLost(f"sqs change visibility: lease lost: {err}") from err
        raise


async def change_visibility_batch(
    sqs: SqsClient,
    queue_url: str,
    entries: Sequence[tuple[str, int]],
    *,
    policy: Backoff = AWS_POLICY,
) -> set[str]:
    """Set the visibility timeout of many messages: ``(receipt_handle, seconds)`` pairs.

    Returns the receipt handles whose change failed for good. A failure
    reported as the sender's (an invalid or expired handle) means the lease is
    lost; failures on AWS's side are retried per ``policy`` and reported only
    when they persist. A whole call refused by AWS (no such queue) raises.
    """
    for _, seconds in entries:
        _check_visibility(seconds)

    async def call(chunk: list[tuple[int, Any]]) -> dict[int, EntryFailure]:
        response = await aws_call(
            "sqs change visibility batch",
            sqs.change_message_visibility_batch,
            policy=policy,
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(index), "ReceiptHandle": handle, "VisibilityTimeout": seconds}
                for index, (handle, seconds) in chunk
            ],
        )
        return failures(response)

    failed = await batch_rounds(
        entries, call, chunks_of_ten, policy=policy, what="sqs change visibility batch"
    )
    return {entries[index][0] for index in failed}


async def delete_batch(
    sqs: SqsClient,
    queue_url: str,
    receipt_handles: Sequence[str],
    *,
    policy: Backoff = AWS_POLICY,
) -> dict[str, str]:
    """Delete many handled messages, ten to a call; the handles not deleted, with why.

    A failure reported as the sender's (an invalid or expired handle) means
    the lease was lost; failures on AWS's side are retried per ``policy`` and
    reported only when they persist. A whole call refused by AWS raises.
    """

    async def call(chunk: list[tuple[int, Any]]) -> dict[int, EntryFailure]:
        response = await aws_call(
            "sqs delete batch",
            sqs.delete_message_batch,
            policy=policy,
            QueueUrl=queue_url,
            Entries=[{"Id": str(index), "ReceiptHandle": handle} for index, handle in chunk],
        )
        return failures(response)

    failed = await batch_rounds(
        receipt_handles, call, chunks_of_ten, policy=policy, what="sqs delete batch"
    )
    return {receipt_handles[index]: failure.reason for index, failure in failed.items()}


def _chunks_by_size(pending: list[tuple[int, Any]]) -> list[list[tuple[int, Any]]]:
    # Ten entries at most, and at most 256 KiB of bodies in one call.
    chunks: list[list[tuple[int, Any]]] = []
    current: list[tuple[int, Any]] = []
    size = 0
    for index, (body, delay) in pending:
        body_size = len(body.encode())
        if current and (len(current) == MAX_BATCH or size + body_size > _MAX_BATCH_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append((index, (body, delay)))
        size += body_size
    if current:
        chunks.append(current)
    return chunks


async def send_batch(
    sqs: SqsClient,
    queue_url: str,
    bodies: Sequence[str | tuple[str, int]],
    *,
    policy: Backoff = AWS_POLICY,
) -> None:
    """Send every body (or ``(body, delay_seconds)`` pair), ten to a call.

    Entries SQS failed on its side are sent again per ``policy``. When some
    entry never goes, :class:`AwsRejected` (the sender's fault, e.g. a body too
    large) or :class:`RetriesExhausted` is raised naming how many failed; the
    others were sent (at-least-once: the caller may send them all again).
    """
    entries = [(body, 0) if isinstance(body, str) else body for body in bodies]
    for _, delay in entries:
        if not 0 <= delay <= 900:
            msg = f"delay_seconds must be 0..900, not {delay}"
            raise ValueError(msg)

    async def call(chunk: list[tuple[int, Any]]) -> dict[int, EntryFailure]:
        response = await aws_call(
            "sqs send batch",
            sqs.send_message_batch,
            policy=policy,
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(index), "MessageBody": body, "DelaySeconds": delay}
                for index, (body, delay) in chunk
            ],
        )
        return failures(response)

    failed = await batch_rounds(
        entries, call, _chunks_by_size, policy=policy, what="sqs send batch"
    )
    if failed:
        # Name a sender fault when there is one: it is what a person must fix.
        first = min(failed.values(), key=lambda failure: not failure.sender_fault)
        msg = (
            f"sqs send batch: {len(failed)} of {len(entries)} messages not sent: "
            f"{' '.join(first.reason.split())}"
        )
        if first.sender_fault:
            raise AwsRejected(msg, code=first.code)
        raise RetriesExhausted(msg, fault=Fault.INFRASTRUCTURE)


async def send(
    sqs: SqsClient,
    queue_url: str,
    body: str,
    delay_seconds: int = 0,
    *,
    attributes: dict[str, str] | None = None,
    policy: Backoff = AWS_POLICY,
) -> str:
    """Send one message, with string ``attributes`` when given; returns its message ID."""
    extra: dict[str, Any] = {}
    if attributes:
        extra["MessageAttributes"] = {
            name: {"DataType": "String", "StringValue": value[:_MAX_ATTRIBUTE_CHARS] or "-"}
            for name, value in attributes.items()
        }
    response = await aws_call(
        "sqs send",
        sqs.send_message,
        policy=policy,
        QueueUrl=queue_url,
        MessageBody=body,
        DelaySeconds=delay_seconds,
        **extra,
    )
    return str(response["MessageId"])


async def _attributes(
    sqs: SqsClient, queue_url: str, names: list[str], policy: Backoff
) -> dict[str, str]:
    response = await aws_call(
        "sqs get queue attributes",
        sqs.get_queue_attributes,
        policy=policy,
        QueueUrl=queue_url,
        AttributeNames=names,
    )
    return dict(response.get("Attributes") or {})


async def queue_visibility_timeout(
    sqs: SqsClient, queue_url: str, *, policy: Backoff = AWS_POLICY
) -> int:
    """The queue's default visibility timeout, in seconds."""
    attributes = await _attributes(sqs, queue_url, ["VisibilityTimeout"], policy)
    return int(attributes["VisibilityTimeout"])


async def dead_letter_queue_url(
    sqs: SqsClient, queue_url: str, *, policy: Backoff = AWS_POLICY
) -> str | None:
    """The URL of the queue's dead-letter queue, ``None`` when it has no redrive policy.

    Read from the ``RedrivePolicy``'s ``deadLetterTargetArn``
    (``arn:aws:sqs:<region>:<account>:<name>``) and resolved with GetQueueUrl.
    """
    attributes = await _attributes(sqs, queue_url, ["RedrivePolicy"], policy)
    raw = attributes.get("RedrivePolicy")
    if not raw:
        return None
    arn = str(json.loads(raw)["deadLetterTargetArn"])
    parts = arn.split(":")
    if len(parts) != 6 or parts[2] != "sqs":
        msg = f"sqs dead-letter queue: not an SQS queue ARN: {arn!r}"
        raise AwsRejected(msg)
    account, name = parts[4], parts[5]
    response = await aws_call(
        "sqs get dead-letter queue url",
        sqs.get_queue_url,
        policy=policy,
        QueueName=name,
        QueueOwnerAWSAccountId=account,
    )
    return str(response["QueueUrl"])
