"""Looking across all jobs: the one query that is not about a single export.

A Scan of the whole jobs table (filtered, paged): its read units grow with the
table, so it serves the sweeper's rare rounds, never a hot path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline._adapters.aws.clients import aws_call
from pipeline._adapters.aws.jobitems import JOB_SK, JobItem, encode, format_time, job_from_item
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._core.accounting import JobStatus

__all__ = ["running_jobs_idle_since"]


async def running_jobs_idle_since(jobs: JobStore, cutoff: datetime) -> list[JobItem]:
    """RUNNING jobs whose summary item has not changed since ``cutoff``."""
    found: list[JobItem] = []
    kwargs: dict[str, Any] = {
        "TableName": jobs.table,
        "FilterExpression": "sk = :job AND #status = :running AND updatedAt < :cutoff",
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": {
            ":job": encode(JOB_SK),
            ":running": encode(JobStatus.RUNNING.value),
            ":cutoff": encode(format_time(cutoff)),
        },
    }
    while True:
        response = await aws_call(
            "dynamodb scan for idle jobs", jobs.dynamodb.scan, policy=jobs.policy, **kwargs
        )
        found += [job_from_item(raw) for raw in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        if not last:
            return found
        kwargs["ExclusiveStartKey"] = last
