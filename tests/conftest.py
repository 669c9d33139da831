"""Shared fixtures: a real moto server over HTTP, the tests' AWS."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline.testing.moto import moto_server

# botocore reads these; moto accepts any credentials.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """URL of a moto server subprocess shared by the whole session."""
    with moto_server() as url:
        yield url


@pytest.fixture
async def clients(aws_endpoint: str) -> AsyncIterator[AwsClients]:
    """S3, SQS and DynamoDB clients against the shared moto server."""
    async with open_aws_clients(region="us-east-1", endpoint_url=aws_endpoint, pool_size=4) as c:
        yield c
