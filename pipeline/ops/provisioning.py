"""Create the service's AWS resources, for the local mode and the tests.

In production the deployment creates them; here :func:`provision` does the
same, idempotently, so it can run at every start of the local mode: each
queue with a dead-letter queue and a redrive policy (so a poison message ends
there after ``max_receive_count`` deliveries), both tables with the
contract's key schemas (on-demand capacity; the jobs table with its sparse
status index, added to a table made before it), and the bucket with a lifecycle
rule that removes the parts of multipart uploads a killed process could not
abort.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs
import trio

from pipeline._adapters.aws.clients import AwsClients, aws_call
from pipeline._adapters.aws.clienttypes import DynamoDbClient, EventsClient, S3Client, SqsClient
from pipeline._adapters.aws.jobitems import LIST_STATUS, STATUS_INDEX
from pipeline._adapters.aws.joboutbox import DETAIL_TYPE as EVENT_DETAIL_TYPE
from pipeline._adapters.aws.joboutbox import SOURCE as EVENT_SOURCE
from pipeline._adapters.aws.metadata import MetadataItem, to_attributes
from pipeline._adapters.aws.s3sink import STAGING_PREFIX
from pipeline._adapters.retry import pause
from pipeline._core.backoff import AWS_POLICY, Backoff
from pipeline._errors import AwsRejected, Fault, RetriesExhausted

__all__ = [
    "ProvisionedUrls",
    "provision",
    "provision_event_listener",
    "seed_metadata",
    "status_index",
]

# DynamoDB's limit of writes per BatchWriteItem.
_BATCH_WRITE_ITEMS = 25
# SQS's longest retention, so a dead letter waits two weeks for a person.
_DLQ_RETENTION_SECONDS = 14 * 24 * 60 * 60
_TABLE_ACTIVE_DEADLINE = 60.0
_ALREADY_EXISTS = frozenset({"BucketAlreadyOwnedByYou", "ResourceInUseException"})


@attrs.frozen
class ProvisionedUrls:
    """The queue URLs that :func:`provision` created or found."""

    export_jobs_url: str
    export_jobs_dlq_url: str
    download_tasks_url: str | None = None
    download_tasks_dlq_url: str | None = None
    # The high lane's queues, when asked for.
    export_jobs_high_url: str | None = None
    export_jobs_high_dlq_url: str | None = None
    download_tasks_high_url: str | None = None
    download_tasks_high_dlq_url: str | None = None


async def _queue_with_dlq(
    sqs: SqsClient,
    name: str,
    *,
    visibility_timeout: int,
    max_receive_count: int,
    policy: Backoff,
) -> tuple[str, str]:
    dlq = await aws_call(
        "sqs create dead-letter queue",
        sqs.create_queue,
        policy=policy,
        QueueName=f"{name}-dlq",
        Attributes={"MessageRetentionPeriod": str(_DLQ_RETENTION_SECONDS)},
    )
    dlq_url = str(dlq["QueueUrl"])
    arn = await aws_call(
        "sqs get dead-letter queue arn",
        sqs.get_queue_attributes,
        policy=policy,
        QueueUrl=dlq_url,
        AttributeNames=["QueueArn"],
    )
    attributes = {
        "VisibilityTimeout": str(visibility_timeout),
        "RedrivePolicy": json.dumps(
            {
                "deadLetterTargetArn": arn["Attributes"]["QueueArn"],
                "maxReceiveCount": str(max_receive_count),
            }
        ),
    }
    try:
        queue = await aws_call(
            "sqs create queue",
            sqs.create_queue,
            policy=policy,
            QueueName=name,
            Attributes=attributes,
        )
        url = str(queue["QueueUrl"])
    except AwsRejected as err:
        # The queue exists with other attributes: make them ours.
        if err.code not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
        found = await aws_call(
            "sqs get queue url", sqs.get_queue_url, policy=policy, QueueName=name
        )
        url = str(found["QueueUrl"])
    # Also for a queue that existed: attributes converge to what was asked.
    await aws_call(
        "sqs set queue attributes",
        sqs.set_queue_attributes,
        policy=policy,
        QueueUrl=url,
        Attributes=attributes,
    )
    return url, dlq_url


def status_index() -> dict[str, Any]:
    """The jobs table's sparse index: summary items by status, newest first.

    Keyed on ``jobStatus`` (only summary items carry it) and ``createdAt``;
    keys only, so the counts a running job writes never rewrite the index
    (DynamoDB writes a keys-only index only when one of its keys changes).
    """
    return {
        "IndexName": STATUS_INDEX,
        "KeySchema": [
            {"AttributeName": LIST_STATUS, "KeyType": "HASH"},
            {"AttributeName": "createdAt", "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "KEYS_ONLY"},
    }


async def _table(
    dynamodb: DynamoDbClient,
    name: str,
    hash_key: str,
    range_key: str,
    policy: Backoff,
    *,
    index: dict[str, Any] | None = None,
) -> None:
    definitions = [
        {"AttributeName": hash_key, "AttributeType": "S"},
        {"AttributeName": range_key, "AttributeType": "S"},
    ]
    if index is not None:
        definitions += [
            {"AttributeName": key["AttributeName"], "AttributeType": "S"}
            for key in index["KeySchema"]
        ]
    kwargs: dict[str, Any] = {}
    if index is not None:
        kwargs["GlobalSecondaryIndexes"] = [index]
    try:
        await aws_call(
            "dynamodb create table",
            dynamodb.create_table,
            policy=policy,
            TableName=name,
            KeySchema=[
                {"AttributeName": hash_key, "KeyType": "HASH"},
                {"AttributeName": range_key, "KeyType": "RANGE"},
            ],
            AttributeDefinitions=definitions,
            BillingMode="PAY_PER_REQUEST",
            **kwargs,
        )
    except AwsRejected as err:
        if err.code not in _ALREADY_EXISTS:
            raise
    added = False
    with trio.fail_after(_TABLE_ACTIVE_DEADLINE):
        while True:
            described = await aws_call(
                "dynamodb describe table", dynamodb.describe_table, policy=policy, TableName=name
            )
            table = described["Table"]
            if table["TableStatus"] != "ACTIVE":
                await trio.sleep(0.5)
                continue
            present = {i["IndexName"] for i in table.get("GlobalSecondaryIndexes") or []}
            if index is None or index["IndexName"] in present:
                return
            if not added:
                # A table made before the index: add it (DynamoDB backfills it).
                await aws_call(
                    "dynamodb add index",
                    dynamodb.update_table,
                    policy=policy,
                    TableName=name,
                    AttributeDefinitions=definitions[2:],
                    GlobalSecondaryIndexUpdates=[{"Create": index}],
                )
                added = True
            await trio.sleep(0.5)


async def _bucket(s3: S3Client, name: str, policy: Backoff) -> None:
    kwargs: dict[str, Any] = {"Bucket": name}
    region = s3.meta.region_name
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        await aws_call("s3 create bucket", s3.create_bucket, policy=policy, **kwargs)
    except AwsRejected as err:
        if err.code not in _ALREADY_EXISTS:
            raise
    await aws_call(
        "s3 put bucket lifecycle",
        s3.put_bucket_lifecycle_configuration,
        policy=policy,
        Bucket=name,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "abort-incomplete-multipart-uploads",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                },
                {
                    # Staged large entries left by a process that died mid-commit.
                    "ID": "expire-staged-entries",
                    "Status": "Enabled",
                    "Filter": {"Prefix": STAGING_PREFIX},
                    "Expiration": {"Days": 1},
                },
            ]
        },
    )


async def provision(
    clients: AwsClients,
    *,
    bucket: str,
    metadata_table: str,
    jobs_table: str,
    export_jobs_queue: str,
    download_tasks_queue: str | None = None,
    export_jobs_high_queue: str | None = None,
    download_tasks_high_queue: str | None = None,
    visibility_timeout: int = 60,
    max_receive_count: int = 5,
    policy: Backoff = AWS_POLICY,
) -> ProvisionedUrls:
    """Create (or find) every resource; safe to run again with the same names.

    Queues are given by name (the high lane's only when asked for); their
    dead-letter queues are named ``<name>-dlq``. Raises :class:`AwsRejected`
    when a resource cannot be made (a bucket name owned by someone else, a
    bad name).
    """
    if max_receive_count < 1:
        msg = f"max_receive_count must be at least 1, not {max_receive_count}"
        raise ValueError(msg)
    await _bucket(clients.s3, bucket, policy)
    await _table(clients.dynamodb, metadata_table, "exportId", "path", policy)
    await _table(clients.dynamodb, jobs_table, "pk", "sk", policy, index=status_index())

    async def queue(name: str) -> tuple[str, str]:
        return await _queue_with_dlq(
            clients.sqs,
            name,
            visibility_timeout=visibility_timeout,
            max_receive_count=max_receive_count,
            policy=policy,
        )

    jobs_url, jobs_dlq = await queue(export_jobs_queue)
    optional: dict[str, str] = {}
    for kind, name in (
        ("download_tasks", download_tasks_queue),
        ("export_jobs_high", export_jobs_high_queue),
        ("download_tasks_high", download_tasks_high_queue),
    ):
        if name is not None:
            optional[f"{kind}_url"], optional[f"{kind}_dlq_url"] = await queue(name)
    return ProvisionedUrls(export_jobs_url=jobs_url, export_jobs_dlq_url=jobs_dlq, **optional)


async def seed_metadata(
    dynamodb: DynamoDbClient,
    table: str,
    export_id: str,
    items: Iterable[MetadataItem],
    *,
    policy: Backoff = AWS_POLICY,
) -> int:
    """Write metadata items, 25 to a call; returns how many distinct paths were written.

    A path given twice is written once, with its last item (DynamoDB refuses a
    batch that names a key twice). Items DynamoDB leaves unprocessed are sent
    again with backoff; :class:`RetriesExhausted` when they never go.
    """
    by_path = {item.path: item for item in items}
    requests = [
        {"PutRequest": {"Item": to_attributes(export_id, item)}} for item in by_path.values()
    ]
    for start in range(0, len(requests), _BATCH_WRITE_ITEMS):
        pending = requests[start : start + _BATCH_WRITE_ITEMS]
        attempt = 0
        while pending:
            response = await aws_call(
                "dynamodb seed metadata",
                dynamodb.batch_write_item,
                policy=policy,
                RequestItems={table: pending},
            )
            pending = (response.get("UnprocessedItems") or {}).get(table) or []
            if pending:
                attempt += 1
                if policy.gives_up_after(attempt):
                    msg = f"dynamodb seed metadata: {len(pending)} items never written"
                    raise RetriesExhausted(msg, fault=Fault.INFRASTRUCTURE)
                await pause(
                    policy,
                    attempt,
                    dependency="dynamodb",
                    what="dynamodb seed metadata",
                    error=f"{len(pending)} items unprocessed",
                )
    return len(by_path)


async def provision_event_listener(
    events: EventsClient, sqs: SqsClient, bus: str, queue: str, *, policy: Backoff = AWS_POLICY
) -> str:
    """An event bus (unless ``default``) and a rule on it sending the service's events to a queue.

    What a consumer of the lifecycle events sets up (docs/operations.md); for
    the local mode and the tests. Returns the queue's URL.
    """
    if bus != "default":
        try:
            await aws_call("events create bus", events.create_event_bus, policy=policy, Name=bus)
        except AwsRejected as err:
            if err.code != "ResourceAlreadyExistsException":
                raise
    created = await aws_call("sqs create queue", sqs.create_queue, policy=policy, QueueName=queue)
    url: str = created["QueueUrl"]
    attributes = await aws_call(
        "sqs get queue attributes",
        sqs.get_queue_attributes,
        policy=policy,
        QueueUrl=url,
        AttributeNames=["QueueArn"],
    )
    rule = f"{queue}-export-job-events"
    pattern = {"source": [EVENT_SOURCE], "detail-type": [EVENT_DETAIL_TYPE]}
    await aws_call(
        "events put rule",
        events.put_rule,
        policy=policy,
        Name=rule,
        EventBusName=bus,
        EventPattern=json.dumps(pattern),
    )
    target = {"Id": "queue", "Arn": attributes["Attributes"]["QueueArn"]}
    await aws_call(
        "events put targets",
        events.put_targets,
        policy=policy,
        Rule=rule,
        EventBusName=bus,
        Targets=[target],
    )
    return url
