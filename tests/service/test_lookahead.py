"""Metadata looked up a window ahead of the reader: pipeline._service.lookahead, against moto."""

from __future__ import annotations

import uuid

import pytest

from pipeline._adapters.aws.clients import AwsClients
from pipeline._adapters.aws.metadata import MetadataItem, MetadataTable
from pipeline._core.backoff import Backoff
from pipeline._core.zip.format import CentralEntry
from pipeline._service.lookahead import AheadLookup
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


def entries(names: list[str]) -> list[CentralEntry]:
    return [
        CentralEntry(name, name.encode(), 8, 0, 0, 0, 0, index * 100)
        for index, name in enumerate(names)
    ]


async def test_answers_in_stream_order_holding_one_window(clients: AwsClients, table: str) -> None:
    """Every entry gets its item (or None) in stream order, never more than a window held."""
    names = [f"d/{i:03d}.txt" for i in range(250)]
    items = [MetadataItem(path=name, size_bytes=i) for i, name in enumerate(names) if i % 3]
    await seed_metadata(clients.dynamodb, table, "exp-1", items, policy=FAST)
    listing = entries(["d/", *names[:100], "d/sub/", *names[100:]])
    ahead = AheadLookup(MetadataTable(clients.dynamodb, table, FAST), "exp-1", listing, window=40)
    expected = {item.path: item for item in items}
    for name in names:
        assert await ahead.get(name) == expected.get(name)
        assert len(ahead._window) < 40


async def test_asked_again_or_out_of_order(clients: AwsClients, table: str) -> None:
    """A name asked twice in a row, or one the window does not hold, is still answered."""
    names = [f"n{i}" for i in range(30)]
    items = [MetadataItem(path=name, size_bytes=len(name)) for name in names]
    await seed_metadata(clients.dynamodb, table, "exp-2", items, policy=FAST)
    ahead = AheadLookup(
        MetadataTable(clients.dynamodb, table, FAST), "exp-2", entries(names), window=10
    )
    assert await ahead.get("n0") == items[0]
    # Opened, then refused while inflating: the uploader asks again.
    assert await ahead.get("n0") == items[0]
    assert await ahead.get("n25") == items[25]
    assert await ahead.get("not-listed") is None
    assert await ahead.get("n1") == items[1]


def test_window_must_be_positive() -> None:
    """A window of no names is a programming error."""
    with pytest.raises(ValueError, match="window"):
        AheadLookup(MetadataTable(None, "t"), "e", [], window=0)  # type: ignore[arg-type]
