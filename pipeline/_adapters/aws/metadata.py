"""The metadata table: which entries an export is expected to contain.

Key ``exportId`` (S, HASH) + ``path`` (S, RANGE); optional ``sizeBytes`` (N)
and ``sha256`` (S). Entries are looked up in batches (BatchGetItem, 100 keys a
call, AWS's limit) rather than one GetItem each, because a ZIP can hold tens
of thousands of entries. BatchGetItem may leave keys unprocessed when the
table is throttled; those are asked for again with backoff, and only a run of
rounds without any progress gives up. Chunks are fetched one after the other:
a caller that needs more throughput runs several lookups at once.

:meth:`MetadataTable.all_paths` reads every path of an export (Query, paginated, projecting
only ``path``) to count the items no ZIP contained (``entriesMissing``).
:meth:`MetadataTable.all_items` reads a small export's items whole, in one
Query: for the only ZIP of an export, both its lookups and ``entriesMissing``.

:class:`MetadataTable` is the table as the service is handed it: the client,
the table's name and the retry policy, made once where the graph is wired.

What an item promises and whether an entry keeps it is decided in
:mod:`pipeline._core.verdicts`; this module only fetches and stores items.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from pipeline._adapters.aws.batchget import batch_get
from pipeline._adapters.aws.clients import aws_call
from pipeline._adapters.aws.clienttypes import DynamoDbClient
from pipeline._core.backoff import AWS_POLICY, Backoff
from pipeline._core.verdicts import MetadataItem, item_from_fields

__all__ = ["MetadataItem", "MetadataTable", "to_attributes"]

# "path" is a DynamoDB reserved word; every name goes through a placeholder.
_NAMES = {"#p": "path", "#s": "sizeBytes", "#h": "sha256"}


def to_attributes(export_id: str, item: MetadataItem) -> dict[str, Any]:
    """The item as DynamoDB attribute values (the table's format)."""
    attributes: dict[str, Any] = {"exportId": {"S": export_id}, "path": {"S": item.path}}
    if item.size_bytes is not None:
        attributes["sizeBytes"] = {"N": str(item.size_bytes)}
    if item.sha256 is not None:
        attributes["sha256"] = {"S": item.sha256}
    return attributes


def _from_attributes(raw: dict[str, Any]) -> MetadataItem:
    fields: dict[str, str | None] = {"sha256": raw.get("sha256", {}).get("S")}
    if "sizeBytes" in raw:
        fields["sizeBytes"] = raw["sizeBytes"].get("N")
    return item_from_fields(str(raw["path"]["S"]), fields)


@attrs.frozen
class MetadataTable:
    """The metadata table (``DYNAMODB_METADATA_TABLE``): an export's expected entries."""

    dynamodb: DynamoDbClient
    name: str
    policy: Backoff = AWS_POLICY

    async def lookup(self, export_id: str, paths: Sequence[str]) -> dict[str, MetadataItem]:
        """The metadata items of ``paths`` that exist, by path.

        Paths without an item are simply absent from the answer; a path given
        twice is asked for once. Raises :class:`RetriesExhausted` when DynamoDB
        keeps every remaining key unprocessed through the policy's attempts.
        """
        keys = [
            {"exportId": {"S": export_id}, "path": {"S": path}} for path in dict.fromkeys(paths)
        ]
        raw_items = await batch_get(
            self.dynamodb,
            self.name,
            keys,
            what="dynamodb metadata batch get",
            policy=self.policy,
            projection="#p, #s, #h",
            names=_NAMES,
        )
        items = (_from_attributes(raw) for raw in raw_items)
        return {item.path: item for item in items}

    async def all_paths(self, export_id: str) -> set[str]:
        """Every ``path`` the table holds for ``export_id``."""
        paths: set[str] = set()
        start_key: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": self.name,
                "KeyConditionExpression": "exportId = :e",
                "ExpressionAttributeValues": {":e": {"S": export_id}},
                "ProjectionExpression": "#p",
                "ExpressionAttributeNames": {"#p": "path"},
            }
            if start_key is not None:
                kwargs["ExclusiveStartKey"] = start_key
            response = await aws_call(
                "dynamodb metadata query", self.dynamodb.query, policy=self.policy, **kwargs
            )
            paths.update(str(raw["path"]["S"]) for raw in response.get("Items") or [])
            start_key = response.get("LastEvaluatedKey")
            if not start_key:
                return paths

    async def all_items(self, export_id: str, *, most: int) -> dict[str, MetadataItem] | None:
        """Every item of ``export_id`` by path, or ``None`` when it has more than ``most``.

        One Query (``Limit`` one over ``most``) when there are few; the caller of
        a larger export looks its entries up a window at a time instead.
        """
        items: dict[str, MetadataItem] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": "exportId = :e",
            "ExpressionAttributeValues": {":e": {"S": export_id}},
            "ProjectionExpression": "#p, #s, #h",
            "ExpressionAttributeNames": _NAMES,
            "Limit": most + 1,
        }
        while True:
            response = await aws_call(
                "dynamodb metadata query", self.dynamodb.query, policy=self.policy, **kwargs
            )
            for raw in response.get("Items") or []:
                item = _from_attributes(raw)
                items[item.path] = item
            if len(items) > most:
                return None
            start_key = response.get("LastEvaluatedKey")
            if not start_key:
                return items
            kwargs["ExclusiveStartKey"] = start_key
