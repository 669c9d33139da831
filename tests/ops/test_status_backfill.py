"""``provision --backfill-index``: old summary items get ``jobStatus``, nothing else changes."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio

import pipeline._adapters.aws.statusbackfill as backfill_module
import pipeline.ops.provision as cli
from pipeline._adapters.aws.clients import AwsClients
from pipeline._adapters.aws.jobitems import STATUS_INDEX
from pipeline._adapters.aws.statusbackfill import backfill_status_index
from pipeline._core.backoff import Backoff
from pipeline.testing.moto import provision_fresh

FAST = Backoff(max_attempts=3, base=0.001, cap=0.01)
Item = dict[str, Any]


def _job(export_id: str, status: str, created: str, *, indexed: bool = False) -> Item:
    """A summary item as the previous version wrote it (``indexed``: as this one does)."""
    item: Item = {
        "pk": {"S": export_id},
        "sk": {"S": "job"},
        "status": {"S": status},
        "createdAt": {"S": created},
        "updatedAt": {"S": created},
        "filesTotal": {"N": "1"},
    }
    if indexed:
        item["jobStatus"] = {"S": status}
    return item


# Items of other kinds, each with what would match if the filter were loose.
OTHERS: list[Item] = [
    {
        "pk": {"S": "exp-old-a"},
        "sk": {"S": "file#f1"},
        "kind": {"S": "file"},
        "status": {"S": "FAILED"},
        "createdAt": {"S": "2026-01-01T00:00:00Z"},
    },
    {"pk": {"S": "#control"}, "sk": {"S": "pause#export-jobs"}, "paused": {"BOOL": True}},
    {"pk": {"S": "#outbox"}, "sk": {"S": "exp-old-a"}, "since": {"S": "2026-01-01T00:00:00Z"}},
]


async def _put(aws: AwsClients, table: str, items: list[Item]) -> None:
    for item in items:
        await aws.dynamodb.put_item(TableName=table, Item=item)


async def _listed(aws: AwsClients, table: str, status: str) -> set[str]:
    """Export IDs the status index lists under ``status``."""
    response = await aws.dynamodb.query(
        TableName=table,
        IndexName=STATUS_INDEX,
        KeyConditionExpression="jobStatus = :s",
        ExpressionAttributeValues={":s": {"S": status}},
    )
    return {item["pk"]["S"] for item in response["Items"]}


async def _get(aws: AwsClients, table: str, item: Item) -> Item:
    key = {"pk": item["pk"], "sk": item["sk"]}
    response = await aws.dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)
    found: Item = response["Item"]
    return found


def test_public_surface_is_complete() -> None:
    """Every name in __all__ exists, once, sorted."""
    assert backfill_module.__all__ == sorted(set(backfill_module.__all__))
    assert all(hasattr(backfill_module, name) for name in backfill_module.__all__)


async def test_backfill_lists_old_jobs_and_touches_nothing_else(
    aws_endpoint: str, clients: AwsClients, capsys: pytest.CaptureFixture[str]
) -> None:
    """After --backfill-index the index lists the old jobs; file, control and outbox
    items are as they were; a second run updates nothing."""
    name, urls = await provision_fresh(clients)
    table = f"jobs-{name}"
    jobs = [
        _job("exp-old-a", "FAILED", "2026-01-01T00:00:00Z"),
        _job("exp-old-b", "COMPLETED", "2026-01-02T00:00:00Z"),
        _job("exp-new", "FAILED", "2026-01-03T00:00:00Z", indexed=True),
    ]
    await _put(clients, table, [*jobs, *OTHERS])
    assert await _listed(clients, table, "FAILED") == {"exp-new"}
    env = {
        "AWS_ENDPOINT_URL": aws_endpoint,
        "AWS_REGION": "us-east-1",
        "SQS_EXPORT_JOBS_URL": urls.export_jobs_url,
        "S3_BUCKET_NAME": f"bucket-{name}",
        "DYNAMODB_METADATA_TABLE": f"metadata-{name}",
        "DYNAMODB_JOBS_TABLE": table,
    }
    outputs = []
    for _ in range(2):
        run = functools.partial(cli.main, ["--backfill-index"], env)
        assert await trio.to_thread.run_sync(run) == 0
        outputs.append(capsys.readouterr().out)

    assert "scanned 6 items, updated 2 of 2 jobs" in outputs[0], outputs[0]
    assert "scanned 6 items, updated 0 of 0 jobs" in outputs[1], outputs[1]
    assert await _listed(clients, table, "FAILED") == {"exp-old-a", "exp-new"}
    assert await _listed(clients, table, "COMPLETED") == {"exp-old-b"}
    old_a = await _get(clients, table, jobs[0])
    assert old_a == {**jobs[0], "jobStatus": {"S": "FAILED"}}
    for item in OTHERS:
        assert await _get(clients, table, item) == item


class _ServiceWritesMeanwhile:
    """The real client, with the service moving one scanned job on before the copy."""

    def __init__(self, aws: AwsClients, table: str, export_id: str) -> None:
        self._dynamodb = aws.dynamodb
        self._table = table
        self._export_id = export_id

    async def scan(self, **kwargs: Any) -> Any:
        page = await self._dynamodb.scan(**kwargs)
        if any(item["pk"]["S"] == self._export_id for item in page.get("Items", [])):
            # What change_update writes: status and jobStatus together.
            await self._dynamodb.update_item(
                TableName=self._table,
                Key={"pk": {"S": self._export_id}, "sk": {"S": "job"}},
                UpdateExpression="SET #s = :s, jobStatus = :s",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": {"S": "WAITING"}},
            )
        return page

    async def update_item(self, **kwargs: Any) -> Any:
        return await self._dynamodb.update_item(**kwargs)


async def test_a_status_written_meanwhile_is_kept(clients: AwsClients) -> None:
    """A job whose status the service changes between scan and copy keeps the service's
    jobStatus and counts as raced; the rest are copied across pages of one item."""
    name, _ = await provision_fresh(clients)
    table = f"jobs-{name}"
    jobs = [_job(f"exp-{n}", "FAILED", f"2026-01-0{n}T00:00:00Z") for n in range(1, 4)]
    await _put(clients, table, [*jobs, *OTHERS])
    client = _ServiceWritesMeanwhile(clients, table, "exp-2")

    done = await backfill_status_index(client, table, policy=FAST, page_size=1)

    assert (done.scanned, done.missing, done.updated, done.raced) == (6, 3, 2, 1)
    assert await _listed(clients, table, "FAILED") == {"exp-1", "exp-3"}
    assert await _listed(clients, table, "WAITING") == {"exp-2"}
