"""Shared fixtures: a real moto server over HTTP, the tests' AWS."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pipeline._moto import moto_server

# botocore reads these; moto accepts any credentials.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """URL of a moto server subprocess shared by the whole session."""
    with moto_server() as url:
        yield url
