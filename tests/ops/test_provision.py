"""Provisioning against moto: queues with dead-letter queues, tables, bucket, seeding."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pipeline.ops.provisioning as provision_module
from pipeline._adapters.aws.clients import AwsClients
from pipeline._adapters.aws.metadata import MetadataItem, MetadataTable
from pipeline._adapters.aws.sqs import (
    change_visibility,
    dead_letter_queue_url,
    queue_visibility_timeout,
    receive,
    send,
)
from pipeline._core.backoff import Backoff
from pipeline.ops.provisioning import provision, seed_metadata

FAST = Backoff(max_attempts=3, base=0.001, cap=0.01)


def names() -> dict[str, Any]:
    """Fresh resource names for one test (the moto server is shared)."""
    tag = uuid.uuid4().hex[:12]
    return {
        "bucket": f"bucket-{tag}",
        "metadata_table": f"meta-{tag}",
        "jobs_table": f"jobs-{tag}",
        "export_jobs_queue": f"export-jobs-{tag}",
        "download_tasks_queue": f"download-tasks-{tag}",
        "export_jobs_high_queue": f"export-jobs-high-{tag}",
        "download_tasks_high_queue": f"download-tasks-high-{tag}",
    }


def test_public_surface_is_complete() -> None:
    """Every name in __all__ exists, once."""
    assert len(set(provision_module.__all__)) == len(provision_module.__all__)
    assert all(hasattr(provision_module, name) for name in provision_module.__all__)


async def test_provision_creates_everything(clients: AwsClients) -> None:
    """Queues (the high lane's too) get their DLQ and redrive policy; tables their key
    schemas; bucket its rule."""
    given = names()
    urls = await provision(clients, visibility_timeout=45, max_receive_count=3, **given)
    for url, dlq in [
        (urls.export_jobs_url, urls.export_jobs_dlq_url),
        (urls.download_tasks_url, urls.download_tasks_dlq_url),
        (urls.export_jobs_high_url, urls.export_jobs_high_dlq_url),
        (urls.download_tasks_high_url, urls.download_tasks_high_dlq_url),
    ]:
        assert url is not None
        assert dlq is not None
        assert await dead_letter_queue_url(clients.sqs, url) == dlq
        assert await queue_visibility_timeout(clients.sqs, url) == 45
        attrs = await clients.sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["RedrivePolicy"]
        )
        assert int(json.loads(attrs["Attributes"]["RedrivePolicy"])["maxReceiveCount"]) == 3
    for table, keys in [
        (given["metadata_table"], ["exportId", "path"]),
        (given["jobs_table"], ["pk", "sk"]),
    ]:
        described = (await clients.dynamodb.describe_table(TableName=table))["Table"]
        assert [k["AttributeName"] for k in described["KeySchema"]] == keys
        assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    rules = await clients.s3.get_bucket_lifecycle_configuration(Bucket=given["bucket"])
    assert rules["Rules"][0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


async def test_provision_is_idempotent(clients: AwsClients) -> None:
    """A second run with the same names succeeds and finds the same queues."""
    given = names()
    for optional in ("download_tasks_queue", "export_jobs_high_queue", "download_tasks_high_queue"):
        del given[optional]
    first = await provision(clients, **given, policy=FAST)
    second = await provision(clients, **given, visibility_timeout=90, policy=FAST)
    assert first == second
    assert first.download_tasks_url is None
    assert first.export_jobs_high_url is None
    assert await queue_visibility_timeout(clients.sqs, first.export_jobs_url) == 90


async def test_poison_message_ends_in_dlq(clients: AwsClients) -> None:
    """A message received more than max_receive_count times moves to the DLQ."""
    urls = await provision(clients, max_receive_count=1, **names())
    await send(clients.sqs, urls.export_jobs_url, "not json")
    (message,) = await receive(clients.sqs, urls.export_jobs_url, max_messages=1, wait_seconds=0)
    await change_visibility(clients.sqs, urls.export_jobs_url, message.receipt_handle, 0)
    assert await receive(clients.sqs, urls.export_jobs_url, max_messages=1, wait_seconds=0) == []
    (dead,) = await receive(clients.sqs, urls.export_jobs_dlq_url, max_messages=1, wait_seconds=0)
    assert dead.body == "not json"


async def test_seed_metadata_in_batches(clients: AwsClients) -> None:
    """60 items over three BatchWriteItem calls, a duplicate path written once (last wins)."""
    given = names()
    await provision(clients, **given)
    items = [MetadataItem(f"p{i}", i, None) for i in range(60)]
    items.append(MetadataItem("p0", 999, "f" * 64))
    table = given["metadata_table"]
    assert await seed_metadata(clients.dynamodb, table, "e", items, policy=FAST) == 60
    found = await MetadataTable(clients.dynamodb, table, FAST).lookup(
        "e", [f"p{i}" for i in range(60)]
    )
    assert len(found) == 60
    assert found["p0"] == MetadataItem("p0", 999, "f" * 64)
