"""The chaos benchmark's closing audit: exact, read straight from moto (not through the proxy).

Every export's final status, counts and (for FAILED) reason as its fixture
says; every object present with the right bytes and ``sha256`` metadata, and
no other object under the prefix; both queues and both dead-letter queues
empty; no job item left WAITING or RUNNING; no multipart upload open but
those begun before a SIGKILL (which the bucket's lifecycle rule removes).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import attrs
from chaos_fixtures import Fixture, sha256

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline._adapters.aws.clients import AwsClients
from pipeline._adapters.aws.jobstore import JobItem, JobStore
from pipeline._adapters.aws.sqs import REASON_ATTRIBUTE
from pipeline._core.accounting import JobStatus
from pipeline.ops.provisioning import ProvisionedUrls

__all__ = ["Audit", "audit", "queue_depths"]

PREFIX = "exports/"


@attrs.define
class Audit:
    """What the audit found; ``failures`` empty means it passed."""

    outcomes: dict[str, int] = attrs.field(factory=dict)
    objects_checked: int = 0
    depths: dict[str, int] = attrs.field(factory=dict)
    open_uploads: int = 0
    abandoned_uploads: int = 0
    unfinished_jobs: int = 0
    failures: list[str] = attrs.field(factory=list)


async def queue_depths(aws: AwsClients, urls: ProvisionedUrls) -> dict[str, int]:
    """Visible + in flight + delayed messages of each queue and dead-letter queue."""
    named = {
        "export-jobs": urls.export_jobs_url,
        "export-jobs DLQ": urls.export_jobs_dlq_url,
        "download-tasks": urls.download_tasks_url,
        "download-tasks DLQ": urls.download_tasks_dlq_url,
    }
    depths = {}
    for name, url in named.items():
        if url is None:
            continue
        response = await aws.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        depths[name] = sum(int(v) for v in response["Attributes"].values())
    return depths


async def _dead_letters(aws: AwsClients, url: str) -> list[str]:
    """One line per dead letter: its deliveries, the service's reason if it gave one, its body.

    A message the service dead-lettered carries its reason; one without came
    through the queue's redrive policy (received maxReceiveCount times).
    """
    answer = await aws.sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=0,
        VisibilityTimeout=0,
        AttributeNames=["ApproximateReceiveCount"],
        MessageAttributeNames=["All"],
    )
    lines = []
    for message in answer.get("Messages", []):
        received = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
        attributes = message.get("MessageAttributes", {})
        reason = attributes.get(REASON_ATTRIBUTE, {}).get("StringValue", "none: redrive policy")
        body = str(message.get("Body", ""))[:200]
        lines.append(f"  dead letter (received {received}, reason {reason}): {body}")
    return lines


async def final_jobs(jobs: JobStore, fixtures: list[Fixture]) -> dict[str, JobItem | None]:
    """Each export's job item (``None`` when there is none)."""
    found: dict[str, JobItem | None] = {}
    for fixture in fixtures:
        try:
            found[fixture.export_id] = await jobs.get_job(fixture.export_id)
        except KeyError:  # moto shows an item being created half-way
            found[fixture.export_id] = None
    return found


def _check_job(fixture: Fixture, job: JobItem | None, failures: list[str]) -> str:
    if job is None:
        failures.append(f"{fixture.export_id}: no job item")
        return "missing"
    if job.status is not fixture.status:
        failures.append(
            f"{fixture.export_id} ({fixture.shape}): {job.status.value}, "
            f"expected {fixture.status.value}; error: {job.error}"
        )
    elif job.summary != fixture.summary:
        failures.append(
            f"{fixture.export_id} ({fixture.shape}): counts {job.summary}, "
            f"expected {fixture.summary}; error: {job.error}"
        )
    elif fixture.reason is not None and fixture.reason not in (job.error or ""):
        failures.append(
            f"{fixture.export_id} ({fixture.shape}): reason {job.error!r} lacks {fixture.reason!r}"
        )
    return job.status.value


async def _objects(aws: AwsClients, bucket: str) -> list[str]:
    keys: list[str] = []
    paginator = aws.s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=PREFIX):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


async def _check_objects(
    aws: AwsClients, bucket: str, fixtures: list[Fixture], failures: list[str]
) -> int:
    expected = {
        f"{PREFIX}{f.export_id}/{path}": data for f in fixtures for path, data in f.objects.items()
    }
    present = set(await _objects(aws, bucket))
    for key in sorted(present - set(expected)):
        failures.append(f"extra object {key}")
    for key in sorted(set(expected) - present):
        failures.append(f"missing object {key}")
    checked = 0
    for key in sorted(present & set(expected)):
        response: Any = await aws.s3.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as body:
            data = await body.read()
        checked += 1
        if data != expected[key]:
            failures.append(f"object {key}: {len(data)} bytes differ from the entry's")
        if response["Metadata"] != {"sha256": sha256(expected[key])}:
            failures.append(f"object {key}: metadata {response['Metadata']}")
    return checked


async def _unfinished(aws: AwsClients, table: str) -> int:
    count = 0
    kwargs: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "sk = :job AND #status IN (:running, :waiting)",
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": {
            ":job": {"S": "job"},
            ":running": {"S": JobStatus.RUNNING.value},
            ":waiting": {"S": JobStatus.WAITING.value},
        },
    }
    while True:
        response = await aws.dynamodb.scan(**kwargs)
        count += len(response.get("Items", []))
        if not response.get("LastEvaluatedKey"):
            return count
        kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


async def audit(
    aws: AwsClients,
    jobs: JobStore,
    urls: ProvisionedUrls,
    bucket: str,
    fixtures: list[Fixture],
    sigkills: list[float],
) -> Audit:
    """Check everything the run must have left, exactly.

    ``sigkills``: when (epoch seconds) processes were killed outright; an
    upload begun before one of them is counted as abandoned, not a failure.
    """
    result = Audit()
    for fixture, job in zip(fixtures, (await final_jobs(jobs, fixtures)).values(), strict=True):
        outcome = _check_job(fixture, job, result.failures)
        result.outcomes[outcome] = result.outcomes.get(outcome, 0) + 1
    result.objects_checked = await _check_objects(aws, bucket, fixtures, result.failures)
    result.depths = await queue_depths(aws, urls)
    for name, depth in result.depths.items():
        if depth:
            result.failures.append(f"queue {name}: {depth} messages left")
    for dlq in (urls.export_jobs_dlq_url, urls.download_tasks_dlq_url):
        if dlq is not None:
            result.failures.extend(await _dead_letters(aws, dlq))
    uploads = (await aws.s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", [])
    result.open_uploads = len(uploads)
    for upload in uploads:
        # A process killed outright cannot abort its upload; the bucket's
        # lifecycle rule removes it a day later (moto does not run it).
        initiated = upload["Initiated"].timestamp()
        if any(killed >= initiated for killed in sigkills):
            result.abandoned_uploads += 1
        else:
            result.failures.append(f"multipart upload left open for {upload['Key']}")
    result.unfinished_jobs = await _unfinished(aws, jobs.table)
    if result.unfinished_jobs:
        result.failures.append(f"{result.unfinished_jobs} job items WAITING or RUNNING")
    return result
