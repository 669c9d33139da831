"""Streaming entries into S3 (moto): byte-identical objects, sha256 metadata, no partials."""

from __future__ import annotations

import hashlib
import os
import uuid
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from botocore.exceptions import ClientError

import pipeline._adapters.aws.s3sink as s3sink_module
from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline._adapters.aws.s3sink import (
    MIN_PART_SIZE,
    STAGING_PREFIX,
    EntryUpload,
    existing_sha256,
    open_entry_upload,
)
from pipeline._core.backoff import Backoff
from pipeline._errors import AwsRejected, PipelineError
from tests.support.faultproxy import Fault, FaultProxy, serve_fault_proxy

FAST = Backoff(max_attempts=3, base=0.001, cap=0.01)
PART = MIN_PART_SIZE
CHUNK = 256 * 1024


@pytest.fixture
async def bucket(clients: AwsClients) -> str:
    """A fresh bucket."""
    name = f"b-{uuid.uuid4().hex}"
    await clients.s3.create_bucket(Bucket=name)
    return name


async def open_upload(
    clients: AwsClients, bucket: str, key: str, expected: str | None = None
) -> EntryUpload:
    return await open_entry_upload(
        clients.s3, bucket=bucket, key=key, expected_sha256=expected, policy=FAST, part_size=PART
    )


async def write_all(upload: EntryUpload, data: bytes, *, with_crcs: bool = False) -> int:
    """Write in chunks (with their CRC-32s if asked); returns the most bytes ever buffered."""
    most = 0
    for start in range(0, len(data), CHUNK):
        chunk = data[start : start + CHUNK]
        await upload.write(chunk, zlib.crc32(chunk) if with_crcs else None)
        most = max(most, upload.buffered_bytes)
    return most


async def write_and_commit(upload: EntryUpload, data: bytes, digest: str) -> None:
    await write_all(upload, data)
    await upload.commit(digest)


async def get(clients: AwsClients, bucket: str, key: str) -> tuple[bytes, dict[str, Any]]:
    response = await clients.s3.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as body:
        data = await body.read()
    return data, response


async def keys(clients: AwsClients, bucket: str) -> list[str]:
    listing = await clients.s3.list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


async def open_uploads(clients: AwsClients, bucket: str) -> list[dict[str, Any]]:
    listing = await clients.s3.list_multipart_uploads(Bucket=bucket)
    return list(listing.get("Uploads", []))


@asynccontextmanager
async def clients_through(proxy: FaultProxy) -> AsyncIterator[AwsClients]:
    """AWS clients whose every call goes through ``proxy`` (served for the block)."""
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_fault_proxy, proxy)
        async with open_aws_clients(region="us-east-1", endpoint_url=url, pool_size=2) as aws:
            yield aws
        nursery.cancel_scope.cancel()


def test_public_surface_is_complete() -> None:
    """Every name in __all__ exists, once."""
    assert len(set(s3sink_module.__all__)) == len(s3sink_module.__all__)
    assert all(hasattr(s3sink_module, name) for name in s3sink_module.__all__)


class TestCommit:
    @pytest.mark.parametrize("size", [0, 1, 1000, PART])
    async def test_small_entry_is_one_put(
        self, clients: AwsClients, bucket: str, size: int
    ) -> None:
        """Up to one part: one PutObject, byte-identical, with sha256 metadata."""
        data = os.urandom(size)
        digest = hashlib.sha256(data).hexdigest()
        upload = await open_upload(clients, bucket, "exports/e/small.bin")
        await write_all(upload, data)
        assert await open_uploads(clients, bucket) == []
        assert await upload.commit(digest) == size
        body, response = await get(clients, bucket, "exports/e/small.bin")
        assert body == data
        assert response["Metadata"] == {"sha256": digest}
        assert "-" not in response["ETag"]  # not a multipart ETag

    @pytest.mark.parametrize("with_crcs", [True, False])
    @pytest.mark.parametrize("expected", [True, False])
    async def test_large_entry_is_multipart(
        self, clients: AwsClients, bucket: str, expected: bool, with_crcs: bool
    ) -> None:
        """Over one part: a multipart upload, byte-identical, sha256 set, pieces' CRCs or not."""
        data = os.urandom(2 * PART + 12345)
        digest = hashlib.sha256(data).hexdigest()
        upload = await open_upload(clients, bucket, "big.bin", digest if expected else None)
        most = await write_all(upload, data, with_crcs=with_crcs)
        assert most <= PART + CHUNK  # memory bounded by about one part
        assert await upload.commit(digest) == len(data)
        body, response = await get(clients, bucket, "big.bin")
        assert body == data
        assert response["Metadata"] == {"sha256": digest}
        assert await existing_sha256(clients.s3, bucket, "big.bin") == digest
        assert await open_uploads(clients, bucket) == []

    async def test_parts_take_written_pieces_whole(self, clients: AwsClients, bucket: str) -> None:
        """Pieces over a part by at most a quarter go whole; a larger write is cut at a part."""
        piece = os.urandom(PART * 3 // 10)
        big = os.urandom(2 * PART)
        data = piece * 4 + big
        upload = await open_upload(clients, bucket, "whole.bin")
        for _ in range(4):
            await upload.write(piece)
        await upload.write(big)
        [started] = await open_uploads(clients, bucket)
        listed = await clients.s3.list_parts(
            Bucket=bucket, Key=started["Key"], UploadId=started["UploadId"]
        )
        assert [part["Size"] for part in listed["Parts"]] == [4 * len(piece), PART]
        assert await upload.commit(hashlib.sha256(data).hexdigest()) == len(data)
        body, _ = await get(clients, bucket, "whole.bin")
        assert body == data

    async def test_nothing_visible_before_commit(self, clients: AwsClients, bucket: str) -> None:
        """Parts already sent are invisible: no object until commit, one open upload."""
        data = os.urandom(PART + CHUNK)
        upload = await open_upload(clients, bucket, "pending.bin")
        await write_all(upload, data)
        assert await keys(clients, bucket) == []
        assert await existing_sha256(clients.s3, bucket, "pending.bin") is None
        assert len(await open_uploads(clients, bucket)) == 1
        await upload.commit(hashlib.sha256(data).hexdigest())
        assert await keys(clients, bucket) == ["pending.bin"]

    async def test_wrong_digest_aborts(self, clients: AwsClients, bucket: str) -> None:
        """Committing a digest other than the expected one raises and leaves nothing."""
        data = os.urandom(PART + 1)
        upload = await open_upload(clients, bucket, "wrong.bin", "0" * 64)
        await write_all(upload, data)
        with pytest.raises(ValueError, match="differs"):
            await upload.commit(hashlib.sha256(data).hexdigest())
        assert await keys(clients, bucket) == []
        assert await open_uploads(clients, bucket) == []

    async def test_closed_upload_refuses_more(self, clients: AwsClients, bucket: str) -> None:
        """After commit, write and commit raise RuntimeError; abort is a no-op."""
        upload = await open_upload(clients, bucket, "done.bin")
        await upload.write(b"abc")
        await upload.commit(hashlib.sha256(b"abc").hexdigest())
        with pytest.raises(RuntimeError, match="committed"):
            await upload.write(b"more")
        with pytest.raises(RuntimeError, match="committed"):
            await upload.commit(hashlib.sha256(b"abc").hexdigest())
        await upload.abort()
        assert await keys(clients, bucket) == ["done.bin"]

    async def test_bad_digest_text_is_refused(self, clients: AwsClients, bucket: str) -> None:
        """Digests that are not 64 lower-case hex digits raise ValueError."""
        with pytest.raises(ValueError, match="expected_sha256"):
            await open_upload(clients, bucket, "k", "ABC")
        upload = await open_upload(clients, bucket, "k")
        with pytest.raises(ValueError, match="sha256_hex"):
            await upload.commit("A" * 64)


class TestAbort:
    async def test_abort_leaves_nothing(self, clients: AwsClients, bucket: str) -> None:
        """Abort after parts were sent leaves no object and no open upload; twice is fine."""
        upload = await open_upload(clients, bucket, "gone.bin")
        await write_all(upload, os.urandom(2 * PART + 1))
        assert len(await open_uploads(clients, bucket)) == 1
        await upload.abort()
        await upload.abort()
        assert await keys(clients, bucket) == []
        assert await open_uploads(clients, bucket) == []
        with pytest.raises(RuntimeError, match="aborted"):
            await upload.write(b"x")

    async def test_cancelled_write_aborts(self, clients: AwsClients, bucket: str) -> None:
        """A write cancelled mid-part, inside ``async with``, leaves no open upload."""
        upload = await open_upload(clients, bucket, "cancelled.bin")
        async with upload:
            await write_all(upload, os.urandom(PART + 1))
            with trio.move_on_after(0):
                await upload.write(os.urandom(PART))
        assert await keys(clients, bucket) == []
        assert await open_uploads(clients, bucket) == []

    async def test_context_keeps_a_committed_object(self, clients: AwsClients, bucket: str) -> None:
        """Leaving ``async with`` after commit keeps the object."""
        async with await open_upload(clients, bucket, "kept.bin") as upload:
            await upload.write(b"kept")
            await upload.commit(hashlib.sha256(b"kept").hexdigest())
        assert upload.committed
        assert await keys(clients, bucket) == ["kept.bin"]

    async def test_abort_of_a_small_entry(self, clients: AwsClients, bucket: str) -> None:
        """Aborting a buffered entry sends nothing."""
        upload = await open_upload(clients, bucket, "small.bin")
        await upload.write(b"x" * 10)
        await upload.abort()
        assert await keys(clients, bucket) == []


class TestExisting:
    async def test_missing_object_has_no_digest(self, clients: AwsClients, bucket: str) -> None:
        """existing_sha256 is None for a key that does not exist."""
        assert await existing_sha256(clients.s3, bucket, "nothing", policy=FAST) is None

    async def test_object_without_metadata(self, clients: AwsClients, bucket: str) -> None:
        """existing_sha256 is None for an object without sha256 metadata."""
        await clients.s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
        assert await existing_sha256(clients.s3, bucket, "plain") is None


class FlakyS3:
    """The real S3 client, except that the first call of each named operation is throttled."""

    def __init__(self, s3: Any, *flaky: str) -> None:
        self._s3 = s3
        self._flaky = set(flaky)

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._s3, name)
        if name not in self._flaky:
            return real

        async def once_throttled(**kwargs: Any) -> Any:
            if name not in self._flaky:
                return await real(**kwargs)
            self._flaky.discard(name)
            if "Body" in kwargs:
                kwargs["Body"].read()  # a failed attempt leaves its body consumed
            error = {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}
            raise ClientError(error, name)

        return once_throttled


class TestRetries:
    async def test_retried_part_resends_the_same_bytes(
        self, clients: AwsClients, bucket: str
    ) -> None:
        """Throttled part, put and complete calls are retried and the object is still exact."""
        data = os.urandom(PART + 1000)
        digest = hashlib.sha256(data).hexdigest()
        s3 = FlakyS3(clients.s3, "upload_part", "complete_multipart_upload")
        upload = await open_entry_upload(
            s3, bucket=bucket, key="flaky.bin", expected_sha256=digest, policy=FAST, part_size=PART
        )
        await write_all(upload, data)
        await upload.commit(digest)
        small = await open_entry_upload(
            FlakyS3(clients.s3, "put_object"),
            bucket=bucket,
            key="flaky-small.bin",
            expected_sha256=None,
            policy=FAST,
        )
        await small.write(b"small")
        await small.commit(hashlib.sha256(b"small").hexdigest())
        assert (await get(clients, bucket, "flaky.bin"))[0] == data
        assert (await get(clients, bucket, "flaky-small.bin"))[0] == b"small"


class TestStagedEntries:
    async def test_unknown_digest_is_staged_then_copied_once(
        self, clients: AwsClients, bucket: str
    ) -> None:
        """A large entry without a known digest is assembled outside the exports; only the
        final object, with its sha256, is left."""
        data = os.urandom(PART + 777)
        digest = hashlib.sha256(data).hexdigest()
        upload = await open_upload(clients, bucket, "exports/e/big.bin")
        await write_all(upload, data)
        (staging,) = await open_uploads(clients, bucket)
        assert staging["Key"].startswith(STAGING_PREFIX)
        await upload.commit(digest)
        assert await keys(clients, bucket) == ["exports/e/big.bin"]
        body, response = await get(clients, bucket, "exports/e/big.bin")
        assert body == data
        assert response["Metadata"] == {"sha256": digest}

    async def test_failed_copy_leaves_no_object_without_its_digest(
        self, aws_endpoint: str, bucket: str
    ) -> None:
        """When the one copy fails for good, there is no object at the key at all."""
        proxy = FaultProxy(aws_endpoint)
        # The copy is the only PutObject-shaped call of a staged upload.
        proxy.add(Fault("s3", "PutObject", "status", times=100))
        data = os.urandom(PART + 99)
        async with clients_through(proxy) as aws:
            upload = await open_upload(aws, bucket, "exports/e/half.bin")
            await write_all(upload, data)
            with pytest.raises(PipelineError):
                await upload.commit(hashlib.sha256(data).hexdigest())
        async with open_aws_clients(
            region="us-east-1", endpoint_url=aws_endpoint, pool_size=2
        ) as direct:
            assert await keys(direct, bucket) == []
            assert await open_uploads(direct, bucket) == []


class CountingS3:
    """The real S3 client, counting upload_part calls in flight; one part may fail for good."""

    def __init__(self, s3: Any, fail_part: int | None = None) -> None:
        self._s3 = s3
        self._fail_part = fail_part
        self.in_flight = 0
        self.most = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    async def upload_part(self, **kwargs: Any) -> Any:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            # Held until the writer has handed out every part it may: parts
            # overlap only if they are sent side by side.
            await trio.testing.wait_all_tasks_blocked()
            if kwargs["PartNumber"] == self._fail_part:
                error: Any = {"Error": {"Code": "AccessDenied"}}
                error["ResponseMetadata"] = {"HTTPStatusCode": 403}
                raise ClientError(error, "UploadPart")
            return await self._s3.upload_part(**kwargs)
        finally:
            self.in_flight -= 1


class TestPartsInFlight:
    async def test_parts_go_up_side_by_side(self, clients: AwsClients, bucket: str) -> None:
        """Given a nursery, up to parts_in_flight parts are sent at once; the object is exact."""
        data = os.urandom(6 * PART + 321)
        digest = hashlib.sha256(data).hexdigest()
        s3 = CountingS3(clients.s3)
        async with trio.open_nursery() as nursery:
            upload = await open_entry_upload(
                s3,
                bucket=bucket,
                key="wide.bin",
                expected_sha256=digest,
                policy=FAST,
                part_size=PART,
                parts=nursery,
                parts_in_flight=3,
            )
            most = await write_all(upload, data)
            assert upload.parts_in_flight <= 3
            await upload.commit(digest)
        assert s3.most == 3
        assert most <= PART + CHUNK
        body, response = await get(clients, bucket, "wide.bin")
        assert body == data
        assert response["Metadata"] == {"sha256": digest}
        assert await open_uploads(clients, bucket) == []

    async def test_a_failed_part_aborts_the_upload(self, clients: AwsClients, bucket: str) -> None:
        """A part refused for good surfaces from write or commit, and nothing is left in S3."""
        data = os.urandom(5 * PART)
        digest = hashlib.sha256(data).hexdigest()
        s3 = CountingS3(clients.s3, fail_part=2)
        async with trio.open_nursery() as nursery:
            upload = await open_entry_upload(
                s3,
                bucket=bucket,
                key="lost.bin",
                expected_sha256=digest,
                policy=FAST,
                part_size=PART,
                parts=nursery,
            )
            with pytest.raises(PipelineError, match="AccessDenied"):
                await write_and_commit(upload, data, digest)
            assert upload.parts_in_flight == 0
        assert await keys(clients, bucket) == []
        assert await open_uploads(clients, bucket) == []

    async def test_cancelled_mid_upload_leaves_nothing(
        self, clients: AwsClients, bucket: str
    ) -> None:
        """Cancelling the nursery with parts in flight still aborts the upload."""
        s3 = CountingS3(clients.s3)
        async with trio.open_nursery() as nursery:
            upload = await open_entry_upload(
                s3,
                bucket=bucket,
                key="cut.bin",
                expected_sha256=None,
                policy=FAST,
                part_size=PART,
                parts=nursery,
            )
            try:
                await write_all(upload, os.urandom(3 * PART))
                assert upload.parts_in_flight > 0
                nursery.cancel_scope.cancel()
                await trio.lowlevel.checkpoint()
            finally:
                await upload.abort()
        assert await keys(clients, bucket) == []
        assert await open_uploads(clients, bucket) == []


class TestPartChecksums:
    """Through the fault proxy, which checks x-amz-checksum-crc32 against the body as S3 does."""

    async def test_split_pieces_keep_checksums_right(self, aws_endpoint: str, bucket: str) -> None:
        """Pieces cut by part boundaries still give every part the CRC-32 of its bytes."""
        proxy = FaultProxy(aws_endpoint)
        data = os.urandom(2 * PART + 777)
        digest = hashlib.sha256(data).hexdigest()
        async with clients_through(proxy) as aws:
            upload = await open_upload(aws, bucket, "split.bin", digest)
            # Pieces of half a part: the third overshoots by more than the
            # slack a part may take (MAX_PART_SIZE), so the first part cuts it.
            step = PART // 2 - 7
            for start in range(0, len(data), step):
                piece = data[start : start + step]
                await upload.write(piece, zlib.crc32(piece))
            await upload.commit(digest)
            body, _ = await get(aws, bucket, "split.bin")
        assert body == data
        assert proxy.calls[("s3", "UploadPart")] == 2
        assert proxy.bad_digests == 0

    async def test_a_wrong_crc_fails_its_part(self, aws_endpoint: str, bucket: str) -> None:
        """A piece given a wrong CRC-32 makes its part's checksum wrong: S3 refuses it."""
        proxy = FaultProxy(aws_endpoint)
        data = os.urandom(2 * PART)
        async with clients_through(proxy) as aws:
            upload = await open_upload(aws, bucket, "bad.bin")
            # The first part is read (the piece, over the slack, is cut
            # there); the wrong CRC-32 reaches the last part, sent at commit.
            await upload.write(data, zlib.crc32(data) ^ 1)
            with pytest.raises(AwsRejected, match="BadDigest"):
                await upload.commit(hashlib.sha256(data).hexdigest())
            assert await keys(aws, bucket) == []
        assert proxy.bad_digests == 1
