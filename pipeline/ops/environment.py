"""What the operator commands read of the service's environment, read one way.

The commands run beside the service (a laptop, a task in the cluster) with
its settings: the same AWS endpoint and region, the same queue URLs.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from pipeline._adapters.aws.clients import AwsClients, open_aws_clients

__all__ = ["QUEUES", "aws_from", "queue_url_from"]

# The queues a command may name, and the variable that holds each one's URL.
QUEUES = {"export-jobs": "SQS_EXPORT_JOBS_URL", "download-tasks": "SQS_DOWNLOAD_TASKS_URL"}


@asynccontextmanager
async def aws_from(env: Mapping[str, str], *, pool_size: int) -> AsyncIterator[AwsClients]:
    """AWS clients for ``AWS_REGION`` (default us-east-1) and ``AWS_ENDPOINT_URL`` (if set)."""
    async with open_aws_clients(
        region=env.get("AWS_REGION", "").strip() or "us-east-1",
        endpoint_url=env.get("AWS_ENDPOINT_URL", "").strip() or None,
        pool_size=pool_size,
    ) as aws:
        yield aws


def queue_url_from(env: Mapping[str, str], queue: str, *, command: str) -> str | None:
    """The URL of ``queue`` (a key of :data:`QUEUES`); None, said in one line, when unset."""
    variable = QUEUES[queue]
    url = env.get(variable, "").strip()
    if not url:
        print(
            f"pipeline {command}: configuration error: {variable} is required but not set",
            file=sys.stderr,
        )
        return None
    return url
