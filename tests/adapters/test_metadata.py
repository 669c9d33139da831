"""Metadata lookups against moto: batched gets and the paginated path listing."""

from __future__ import annotations

import uuid

import pytest

import pipeline._adapters.aws.metadata as metadata_module
from pipeline._adapters.aws.clients import AwsClients
from pipeline._adapters.aws.metadata import MetadataItem, MetadataTable
from pipeline._core.backoff import Backoff
from pipeline.ops.provisioning import seed_metadata

FAST = Backoff(max_attempts=3, base=0.001, cap=0.01)


@pytest.fixture
async def table(clients: AwsClients) -> str:
    """A fresh metadata table with the contract's key schema."""
    name = f"meta-{uuid.uuid4().hex}"
    await clients.dynamodb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "exportId", "KeyType": "HASH"},
            {"AttributeName": "path", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "exportId", "AttributeType": "S"},
            {"AttributeName": "path", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def test_public_surface_is_complete() -> None:
    """Every name in __all__ exists, once."""
    assert len(set(metadata_module.__all__)) == len(metadata_module.__all__)
    assert all(hasattr(metadata_module, name) for name in metadata_module.__all__)


async def test_lookup_over_many_batches(clients: AwsClients, table: str) -> None:
    """250 items over three BatchGetItem chunks, with missing and duplicate paths."""
    items = [
        MetadataItem(
            path=f"dir/file-{i:04}.txt",
            size_bytes=i if i % 3 else None,
            sha256=f"{i:064x}" if i % 2 else None,
        )
        for i in range(250)
    ]
    await seed_metadata(clients.dynamodb, table, "exp-1", items, policy=FAST)
    # Another export's items must not leak in.
    await seed_metadata(clients.dynamodb, table, "exp-2", [MetadataItem("dir/other")])
    paths = [item.path for item in items] + [f"missing-{i}" for i in range(10)]
    paths += ["dir/file-0001.txt", "dir/file-0002.txt", "dir/other"]
    found = await MetadataTable(clients.dynamodb, table, FAST).lookup("exp-1", paths)
    assert found == {item.path: item for item in items}


async def test_lookup_of_nothing(clients: AwsClients, table: str) -> None:
    """An empty path list makes no call and finds nothing."""
    assert await MetadataTable(clients.dynamodb, table).lookup("exp-1", []) == {}


async def test_sha256_is_lower_cased(clients: AwsClients, table: str) -> None:
    """A sha256 stored in upper case is compared in lower case."""
    await clients.dynamodb.put_item(
        TableName=table,
        Item={"exportId": {"S": "e"}, "path": {"S": "p"}, "sha256": {"S": "AB" * 32}},
    )
    found = await MetadataTable(clients.dynamodb, table).lookup("e", ["p"])
    assert found["p"].sha256 == "ab" * 32


async def test_malformed_items_say_why_and_spoil_nothing_else(
    clients: AwsClients, table: str
) -> None:
    """A bad sizeBytes or sha256 marks that item malformed; the other items read as usual."""
    for path, extra in (
        ("odd", {"sizeBytes": {"N": "1.5"}}),
        ("short", {"sha256": {"S": "abc"}}),
        ("fine", {"sizeBytes": {"N": "3"}, "sha256": {"S": "ab" * 32}}),
    ):
        await clients.dynamodb.put_item(
            TableName=table, Item={"exportId": {"S": "e"}, "path": {"S": path}, **extra}
        )
    found = await MetadataTable(clients.dynamodb, table).lookup("e", ["odd", "short", "fine"])
    malformed = "metadata item is malformed"
    assert found["odd"].problem == f"{malformed}: sizeBytes '1.5' is not a whole number"
    assert found["short"].problem == f"{malformed}: sha256 is not 64 hex digits"
    assert found["fine"] == MetadataItem(path="fine", size_bytes=3, sha256="ab" * 32)


async def test_all_paths_pages_past_one_megabyte(clients: AwsClients, table: str) -> None:
    """All 1,200 paths of ~1 KB each (over DynamoDB's 1 MB page) are listed."""
    items = [MetadataItem(path=f"{i:05}/" + "p" * 1000) for i in range(1200)]
    assert await seed_metadata(clients.dynamodb, table, "big", items) == 1200
    page = await clients.dynamodb.query(
        TableName=table,
        KeyConditionExpression="exportId = :e",
        ExpressionAttributeValues={":e": {"S": "big"}},
    )
    assert "LastEvaluatedKey" in page  # the listing really does need pages
    assert await MetadataTable(clients.dynamodb, table, FAST).all_paths("big") == {
        item.path for item in items
    }


async def test_all_paths_of_unknown_export(clients: AwsClients, table: str) -> None:
    """An export without items has no paths."""
    assert await MetadataTable(clients.dynamodb, table).all_paths("nobody") == set()
