"""The one-time copy of ``status`` into ``jobStatus`` for summary items written before the index.

The sparse index :data:`~.jobitems.STATUS_INDEX` holds only items with
``jobStatus``; the service sets it with every status write, but a summary item
written by an earlier version has ``status`` alone and stays out of
``GET /jobs`` and ``POST /jobs/retry`` until its next status change. This scans
the jobs table (paged, filtered to such items) and copies the status over.

Each copy is conditional: ``jobStatus`` still absent and ``status`` still the
value scanned. A running service that changes the status meanwhile writes
``jobStatus`` itself, so its write wins and this one is refused and counted as
raced, never overwriting it. Running it again finds nothing to copy. Like any
Scan its reads grow with the table: an operator's step after an upgrade, never
something the service does.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs

from pipeline._adapters.aws.clients import aws_call
from pipeline._adapters.aws.clienttypes import AwsAnswer
from pipeline._adapters.aws.jobitems import JOB_SK, LIST_STATUS, encode
from pipeline._core.backoff import AWS_POLICY, Backoff
from pipeline._errors import AwsRejected

__all__ = ["Backfilled", "ScanAndUpdate", "backfill_status_index"]

_CONDITION_FAILED = "ConditionalCheckFailedException"


class ScanAndUpdate(Protocol):
    """The DynamoDB calls the backfill makes (an aiobotocore DynamoDB client has them)."""

    async def scan(self, **kwargs: Any) -> AwsAnswer: ...

    async def update_item(self, **kwargs: Any) -> AwsAnswer: ...


@attrs.frozen
class Backfilled:
    """What one backfill did."""

    # Items the Scan read (every kind, before the filter).
    scanned: int
    # Summary items found with ``status`` and without ``jobStatus``.
    missing: int
    # Of those, items that got ``jobStatus`` from this run.
    updated: int
    # Of those, items the service changed between the scan and the copy (it set ``jobStatus``).
    raced: int


async def backfill_status_index(
    dynamodb: ScanAndUpdate,
    table: str,
    *,
    policy: Backoff = AWS_POLICY,
    page_size: int | None = None,
) -> Backfilled:
    """Give every summary item of ``table`` that lacks it ``jobStatus = status``.

    Throttles and connection trouble are retried per ``policy``
    (:func:`~.clients.aws_call`); ``page_size`` caps the items one Scan
    page reads (None: DynamoDB's 1 MB pages).
    """
    scan: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "sk = :job AND attribute_exists(#s) AND attribute_not_exists(#ls)",
        "ProjectionExpression": "pk, sk, #s",
        "ExpressionAttributeNames": {"#s": "status", "#ls": LIST_STATUS},
        "ExpressionAttributeValues": {":job": encode(JOB_SK)},
    }
    if page_size is not None:
        scan["Limit"] = page_size
    scanned = missing = updated = raced = 0
    while True:
        page = await aws_call(
            "dynamodb scan for unindexed jobs", dynamodb.scan, policy=policy, **scan
        )
        scanned += int(page.get("ScannedCount", 0))
        for item in page.get("Items", []):
            missing += 1
            if await _copy_status(dynamodb, table, item, policy):
                updated += 1
            else:
                raced += 1
        last = page.get("LastEvaluatedKey")
        if not last:
            return Backfilled(scanned=scanned, missing=missing, updated=updated, raced=raced)
        scan["ExclusiveStartKey"] = last


async def _copy_status(
    dynamodb: ScanAndUpdate, table: str, item: dict[str, Any], policy: Backoff
) -> bool:
    """Copy the scanned ``status`` into ``jobStatus``; False when the item changed meanwhile."""
    try:
        await aws_call(
            "dynamodb copy status to index key",
            dynamodb.update_item,
            policy=policy,
            TableName=table,
            Key={"pk": item["pk"], "sk": item["sk"]},
            UpdateExpression="SET #ls = #s",
            ConditionExpression="attribute_not_exists(#ls) AND #s = :s",
            ExpressionAttributeNames={"#s": "status", "#ls": LIST_STATUS},
            # The value as scanned, type and all: equal only if nobody wrote since.
            ExpressionAttributeValues={":s": item["status"]},
        )
    except AwsRejected as err:
        if err.code != _CONDITION_FAILED:
            raise
        return False
    return True
