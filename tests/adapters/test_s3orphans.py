"""No multipart upload left open: failed aborts owed and retried, older uploads cleared."""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any

import pytest
import trio

from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline._adapters.aws.s3orphans import (
    OpenUpload,
    OwedAborts,
    abort_older_uploads,
    staging_prefix,
)
from pipeline._adapters.aws.s3sink import MIN_PART_SIZE, STAGING_PREFIX, open_entry_upload
from pipeline._core.backoff import Backoff
from tests.support.faultproxy import Fault, FaultProxy, serve_fault_proxy
from tests.support.waiting import eventually

FAST = Backoff(max_attempts=2, base=0.001, cap=0.01)
PART = MIN_PART_SIZE
# Over one part: the upload is multipart from the second part on.
DATA = os.urandom(PART + 1024)


@pytest.fixture
async def bucket(clients: AwsClients) -> str:
    """A fresh bucket."""
    name = f"b-{uuid.uuid4().hex}"
    await clients.s3.create_bucket(Bucket=name)
    return name


async def open_uploads(clients: AwsClients, bucket: str) -> list[dict[str, Any]]:
    listing = await clients.s3.list_multipart_uploads(Bucket=bucket)
    return list(listing.get("Uploads", []))


async def _started(
    clients: AwsClients, bucket: str, key: str, *, expected: str | None, owed: OwedAborts | None
) -> Any:
    """An entry upload of ``DATA`` with its multipart upload started, left open."""
    upload = await open_entry_upload(
        clients.s3,
        bucket=bucket,
        key=key,
        expected_sha256=expected,
        policy=FAST,
        part_size=PART,
        owed=owed,
    )
    await upload.write(DATA)
    return upload


class TestOlderUploads:
    async def test_only_the_keys_own_uploads_are_aborted(
        self, clients: AwsClients, bucket: str
    ) -> None:
        """Of uploads of ``a/b`` and ``a/bc``, an exact clear of ``a/b`` aborts only its own."""
        for key in ("a/b", "a/b", "a/bc"):
            await clients.s3.create_multipart_upload(Bucket=bucket, Key=key)
        aborted = await abort_older_uploads(clients.s3, bucket, "a/b", exact=True)
        assert aborted == 2
        assert [item["Key"] for item in await open_uploads(clients, bucket)] == ["a/bc"]

    @pytest.mark.parametrize("known_digest", [True, False])
    async def test_a_new_upload_of_an_entry_clears_what_an_earlier_one_left(
        self, clients: AwsClients, bucket: str, known_digest: bool
    ) -> None:
        """An upload left open (its process killed) is aborted when the entry is uploaded
        again, whether the parts go to the key or to its staging prefix; other keys stay."""
        digest = hashlib.sha256(DATA).hexdigest()
        expected = digest if known_digest else None
        await _started(clients, bucket, "exports/e/big.bin", expected=expected, owed=None)
        await _started(clients, bucket, "exports/e/other.bin", expected=expected, owed=None)
        (left, other) = sorted(
            await open_uploads(clients, bucket), key=lambda item: item["Initiated"]
        )
        if not known_digest:
            assert left["Key"].startswith(staging_prefix(STAGING_PREFIX, "exports/e/big.bin"))
        again = await _started(clients, bucket, "exports/e/big.bin", expected=expected, owed=None)
        await again.commit(digest)
        remaining = await open_uploads(clients, bucket)
        assert [item["UploadId"] for item in remaining] == [other["UploadId"]]


class TestOwedAborts:
    async def test_an_abort_that_failed_is_done_once_s3_answers(
        self, aws_endpoint: str, clients: AwsClients, bucket: str
    ) -> None:
        """S3 refusing the abort leaves the upload owed, not lost; a later round aborts it."""
        proxy = FaultProxy(aws_endpoint)
        owed = OwedAborts()
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_fault_proxy, proxy)
            async with open_aws_clients(region="us-east-1", endpoint_url=url, pool_size=2) as aws:
                upload = await _started(aws, bucket, "exports/e/big.bin", expected=None, owed=owed)
                outage = proxy.add(
                    Fault("s3", "AbortMultipartUpload", "status", times=1000, status=503)
                )
                await upload.abort()
                assert len(owed) == 1
                assert len(await open_uploads(clients, bucket)) == 1
                await owed.settle()
                assert len(owed) == 1  # still down: still owed
                outage.times = 0
                await owed.settle()
            nursery.cancel_scope.cancel()
        assert len(owed) == 0
        assert await open_uploads(clients, bucket) == []

    async def test_run_settles_in_the_background(self, clients: AwsClients, bucket: str) -> None:
        """An upload owed while run() is going is aborted by it without being asked."""
        owed = OwedAborts()
        upload = await clients.s3.create_multipart_upload(Bucket=bucket, Key="k")
        async with trio.open_nursery() as nursery:
            await nursery.start(owed.run)
            owed.owe(clients.s3, OpenUpload(bucket, "k", upload["UploadId"]))

            async def settled() -> bool:
                return not owed

            await eventually(settled, within=60)
            nursery.cancel_scope.cancel()
        assert await open_uploads(clients, bucket) == []
