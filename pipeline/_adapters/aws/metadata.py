"""The metadata table: which entries an export is expected to contain.

Key ``exportId`` (S, HASH) + ``path`` (S, RANGE); optional ``sizeBytes`` (N)
and ``sha256`` (S). Entries are looked up in batches (BatchGetItem, 100 keys a
call, AWS's limit) rather than one GetItem each, because a ZIP can hold tens
of thousands of entries. BatchGetItem may leave keys unprocessed when the
table is throttled; those are asked for again with backoff, and only a run of
rounds without any progress gives up. Chunks are fetched one after the other:
a caller that needs more throughput runs several lookups at once.

:func:`all_paths` reads every path of an export (Query, paginated, projecting
only ``path``) to count the items no ZIP contained (``entriesMissing``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from pipeline._adapters.aws.batchget import batch_get
from pipeline._adapters.aws.clients import AwsClient, aws_call
from pipeline._core.backoff import AWS_POLICY, Backoff

__all__ = ["MetadataItem", "all_paths", "lookup", "to_attributes"]

# "path" is a DynamoDB reserved word; every name goes through a placeholder.
_NAMES = {"#p": "path", "#s": "sizeBytes", "#h": "sha256"}


@attrs.frozen
class MetadataItem:
    """What the export promises about one entry; ``None`` where it promises nothing.

    ``problem`` says why the item itself is malformed (a size that is not a
    whole number, a SHA-256 that is not 64 hex digits): no entry can match
    such an item, so its entry is rejected with that reason, and only it.
    """

    path: str
    size_bytes: int | None = None
    sha256: str | None = None
    problem: str | None = None

    def mismatch(self, size: int, sha256_hex: str) -> str | None:
        """Why an entry of ``size`` and ``sha256_hex`` does not match, ``None`` when it does."""
        if self.size_bytes is not None and self.size_bytes != size:
            return f"size {size} differs from the metadata's {self.size_bytes}"
        if self.sha256 is not None and self.sha256.lower() != sha256_hex:
            return "SHA-256 differs from the metadata's"
        return None


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def to_attributes(export_id: str, item: MetadataItem) -> dict[str, Any]:
    """The item as DynamoDB attribute values (the table's format)."""
    attributes: dict[str, Any] = {"exportId": {"S": export_id}, "path": {"S": item.path}}
    if item.size_bytes is not None:
        attributes["sizeBytes"] = {"N": str(item.size_bytes)}
    if item.sha256 is not None:
        attributes["sha256"] = {"S": item.sha256}
    return attributes


def _from_attributes(raw: dict[str, Any]) -> MetadataItem:
    path = str(raw["path"]["S"])
    size: int | None = None
    problems: list[str] = []
    if "sizeBytes" in raw:
        number = raw["sizeBytes"].get("N")
        try:
            value = Decimal(number)
        except (InvalidOperation, TypeError):
            value = Decimal("NaN")
        if not value.is_finite() or value != value.to_integral_value() or value < 0:
            problems.append(f"sizeBytes {number!r} is not a whole number")
        else:
            size = int(value)
    sha = raw.get("sha256", {}).get("S")
    sha = sha.lower() if sha else None
    if sha is not None and not _SHA256_HEX.fullmatch(sha):
        problems.append("sha256 is not 64 hex digits")
        sha = None
    problem = f"metadata item is malformed: {'; '.join(problems)}" if problems else None
    return MetadataItem(path=path, size_bytes=size, sha256=sha, problem=problem)


async def lookup(
    dynamodb: AwsClient,
    table: str,
    export_id: str,
    paths: Sequence[str],
    *,
    policy: Backoff = AWS_POLICY,
) -> dict[str, MetadataItem]:
    """The metadata items of ``paths`` that exist, by path.

    Paths without an item are simply absent from the answer; a path given
    twice is asked for once. Raises :class:`RetriesExhausted` when DynamoDB
    keeps every remaining key unprocessed through ``policy``'s attempts.
    """
    keys = [{"exportId": {"S": export_id}, "path": {"S": path}} for path in dict.fromkeys(paths)]
    raw_items = await batch_get(
        dynamodb,
        table,
        keys,
        what="dynamodb metadata batch get",
        policy=policy,
        projection="#p, #s, #h",
        names=_NAMES,
    )
    items = (_from_attributes(raw) for raw in raw_items)
    return {item.path: item for item in items}


async def all_paths(
    dynamodb: AwsClient,
    table: str,
    export_id: str,
    *,
    policy: Backoff = AWS_POLICY,
) -> set[str]:
    """Every ``path`` the metadata table holds for ``export_id``."""
    paths: set[str] = set()
    start_key: dict[str, Any] | None = None
    while True:
        kwargs: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": "exportId = :e",
            "ExpressionAttributeValues": {":e": {"S": export_id}},
            "ProjectionExpression": "#p",
            "ExpressionAttributeNames": {"#p": "path"},
        }
        if start_key is not None:
            kwargs["ExclusiveStartKey"] = start_key
        response = await aws_call(
            "dynamodb metadata query", dynamodb.query, policy=policy, **kwargs
        )
        paths.update(str(raw["path"]["S"]) for raw in response.get("Items") or [])
        start_key = response.get("LastEvaluatedKey")
        if not start_key:
            return paths
