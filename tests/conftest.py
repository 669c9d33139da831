"""Shared fixtures: a real moto server over HTTP, the tests' AWS."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import settings

from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline.testing.moto import moto_server

# The suite imports every test module in each xdist worker and starts the
# service and its commands in dozens of subprocesses: with PYTHONDONTWRITEBYTECODE
# set (as in this image), each of them compiled the package again and pytest
# rewrote every test module again. The bytecode goes to __pycache__ (ignored by
# git); the workers and subprocesses inherit the environment from here.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
    sys.dont_write_bytecode = False

# botocore reads these; moto accepts any credentials.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

# The suite draws the same examples on every run, so CI passes or fails on the
# code alone; HYPOTHESIS_PROFILE=explore draws fresh ones to hunt for new cases.
settings.register_profile("suite", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the slow tests first, the system ones before the rest.

    With ``-n 2 --maxschedchunk 1`` (pyproject) each worker takes the next
    test when it is done with its own, so the long runs start at once and the
    many short tests fill the gaps: no worker is left with a long test at the end.
    """
    items.sort(
        key=lambda item: (
            item.get_closest_marker("slow") is None,
            "tests/system/" not in item.nodeid,
        )
    )


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
