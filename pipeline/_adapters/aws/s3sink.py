"""Stream one ZIP entry into S3 so that no partial object is ever visible.

S3 makes an object visible only when a PutObject or a CompleteMultipartUpload
succeeds, never in between; that is the whole guarantee. So an entry is
written in one of two ways, chosen by its size as it streams in:

- up to one part (:data:`PART_SIZE`): the bytes are buffered and sent with a
  single PutObject at :meth:`EntryUpload.commit`;
- larger: a multipart upload is started when the buffer first outgrows one
  part, and every full part is sent as it fills (its written pieces whole, up
  to :data:`MAX_PART_SIZE`), up to :data:`PARTS_IN_FLIGHT`
  at once given a nursery (the next part is inflated while S3 takes the last
  ones); the writer waits for a free slot, so memory stays at a few parts
  whatever the entry's size. :meth:`EntryUpload.abort` (or a failure) stops
  the parts in flight and aborts the upload; S3 discards its parts.

The written bytes are never copied into a part: a part is a list of them
(:mod:`pipeline._adapters.aws.s3parts`). Each part and each PutObject carries
``x-amz-checksum-crc32``, computed with isal, which S3 checks on arrival; no
payload is signed (see :mod:`pipeline._adapters.aws.clients`).

The object's user metadata ``sha256`` must hold the digest of its bytes. A
multipart upload fixes its metadata at CreateMultipartUpload, before the bytes
are seen. When the caller knows the expected digest (the metadata item gives
it, and the caller checks the digest equals it before committing) it goes in
there. When not, the parts go to a staging key outside the exports
(:data:`STAGING_PREFIX`), and the finished staging object is copied once to
its key with the digest (``MetadataDirective=REPLACE``), then deleted: the
final object appears in one step, with its ``sha256``, or not at all. The
cost is S3's server-side copy of the object (CopyObject is limited to 5 GiB,
above ``MAX_ENTRY_SIZE_MB``'s default of 4 GiB). A staging object left by a
process that died between the copy and the delete is removed by the bucket's
lifecycle rule for the staging prefix.

Every call goes through :func:`pipeline._adapters.aws.clients.aws_call`; a retried part resends
the same bytes under the same part number, which S3 treats as a replacement.
No upload is left open (:mod:`pipeline._adapters.aws.s3orphans`): an abort
that fails is owed and retried in the background, and starting a multipart
upload first aborts the entry's older ones (a process killed mid-upload, a
staged upload whose abort was lost). The bucket's lifecycle rule
``AbortIncompleteMultipartUpload`` (installed by
:func:`pipeline.ops.provisioning.provision`) bounds the rest.
"""

from __future__ import annotations

import re
import uuid
from types import TracebackType
from typing import Any, Self

import structlog
import trio

from pipeline._adapters.aws.clients import aws_call
from pipeline._adapters.aws.clienttypes import S3Client
from pipeline._adapters.aws.s3objects import existing_sha256, head_object
from pipeline._adapters.aws.s3orphans import (
    OpenUpload,
    OwedAborts,
    abort_older_uploads,
    abort_upload,
    staging_prefix,
    upload_prefix,
)
from pipeline._adapters.aws.s3parts import Part, PartBody, PartWindow, Pieces
from pipeline._core.backoff import AWS_POLICY, Backoff
from pipeline._errors import AwsRejected, PipelineError

__all__ = [
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "PARTS_IN_FLIGHT",
    "PART_SIZE",
    "STAGING_PREFIX",
    "EntryUpload",
    "existing_sha256",
    "open_entry_upload",
]

log = structlog.get_logger("pipeline.s3sink")

# S3's smallest part (except the last).
MIN_PART_SIZE = 5 * 1024 * 1024
# Big enough that S3's 10,000-part limit allows 78 GiB objects and the
# per-request overhead is small; small enough that 20 entries in flight hold
# a few hundred MiB at most.
PART_SIZE = 8 * 1024 * 1024
# Parts of one entry in flight at once (given a nursery): enough to keep S3
# busy while the next part is inflated, each one part of memory.
PARTS_IN_FLIGHT = 3
# A part may run over PART_SIZE by up to a quarter rather than cut a written
# piece: the side of a cut piece is sent as a view, which h11 copies into a
# new buffer, and its CRC-32 is computed again (issue 22).
MAX_PART_SIZE = PART_SIZE + PART_SIZE // 4
# Where large entries without a known digest are assembled before their one
# copy to the export's prefix; outside every export, expired by a lifecycle rule.
STAGING_PREFIX = ".pipeline-staging/"
# Aborting is cleanup: it gets a short deadline of its own, shielded.
_ABORT_DEADLINE = 2.0
_ABORT_POLICY = Backoff(max_attempts=3, base=0.2, cap=1.0)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _check_sha256(value: str, name: str) -> None:
    if not _SHA256_HEX.fullmatch(value):
        msg = f"{name} must be 64 lower-case hex digits, not {value!r}"
        raise ValueError(msg)


class EntryUpload:
    """One entry on its way into S3; see the module docstring for how.

    Call :meth:`write` with the bytes in order, then :meth:`commit` once. On
    any failure or cancellation call :meth:`abort` (or use ``async with``,
    which aborts unless committed). After ``commit`` or ``abort`` the upload
    is closed: ``write``/``commit`` raise ``RuntimeError``, ``abort`` is a no-op.
    Not safe to use from two tasks at once.
    """

    def __init__(
        self,
        s3: S3Client,
        *,
        bucket: str,
        key: str,
        expected_sha256: str | None,
        policy: Backoff,
        part_size: int,
        window: PartWindow,
        owed: OwedAborts | None = None,
    ) -> None:
        self._s3 = s3
        # Where an abort that fails is remembered, to be tried again later.
        self._owed = owed
        self._bucket = bucket
        self._key = key
        self._expected = expected_sha256
        # Where the parts go: the key itself when the digest is known up front,
        # else a staging key, copied to the key with its digest at commit.
        self._upload_key = key if expected_sha256 is not None else _staging_key(key)
        self._policy = policy
        self._part_size = part_size
        self._max_part = part_size + part_size // 4  # as MAX_PART_SIZE to PART_SIZE
        self._buffer = Pieces()
        self._window = window
        self._upload_id: str | None = None
        self._next_part = 1
        self._parts: dict[int, dict[str, Any]] = {}
        self._written = 0
        self._closed = False
        self._committed = False

    @property
    def bytes_written(self) -> int:
        """Bytes given to :meth:`write` so far."""
        return self._written

    @property
    def buffered_bytes(self) -> int:
        """Bytes written and not yet in a part (at most about one part)."""
        return self._buffer.size

    @property
    def parts_in_flight(self) -> int:
        """Parts being sent right now (at most :data:`PARTS_IN_FLIGHT`)."""
        return self._window.in_flight

    @property
    def committed(self) -> bool:
        """Whether the object is in S3."""
        return self._committed

    def _check_open(self, action: str) -> None:
        if self._closed:
            state = "committed" if self._committed else "aborted"
            msg = f"cannot {action} s3://{self._bucket}/{self._key}: upload already {state}"
            raise RuntimeError(msg)

    async def write(self, data: bytes, crc32: int | None = None) -> None:
        """Add the entry's next bytes; sends a part whenever one is full.

        ``data`` is kept, not copied, until its part is sent: it must not
        change meanwhile (``bytes`` cannot). ``crc32``, the CRC-32 of ``data``
        when the caller has it, spares reading the bytes again for the part
        checksums. A part sent earlier that failed raises here. On failure
        the upload is aborted before the error propagates.
        """
        self._check_open("write to")
        self._buffer.add(data, crc32)
        self._written += len(data)
        try:
            self._window.raise_failure()
            # Strictly more than one part: an entry of exactly one part stays
            # a single PutObject. The pieces go whole when they overshoot the
            # part by little (see MAX_PART_SIZE); a large write is cut.
            while (buffered := self._buffer.size) > self._part_size:
                size = buffered if buffered <= self._max_part else self._part_size
                await self._send_part(self._buffer.take(size))
        except BaseException:
            await self.abort()
            raise

    async def _start_multipart(self) -> str:
        # What an earlier attempt at this entry left open goes first (one listing).
        prefix = upload_prefix(self._upload_key, self._key, STAGING_PREFIX)
        exact = prefix == self._upload_key
        await abort_older_uploads(self._s3, self._bucket, prefix, exact=exact, policy=self._policy)
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Key": self._upload_key}
        if self._expected is not None:
            kwargs["Metadata"] = {"sha256": self._expected}
        response = await aws_call(
            "s3 create multipart upload",
            self._s3.create_multipart_upload,
            policy=self._policy,
            # Each part then carries its CRC-32, and the completion lists them.
            ChecksumAlgorithm="CRC32",
            **kwargs,
        )
        upload_id = str(response["UploadId"])
        self._upload_id = upload_id
        return upload_id

    async def _send_part(self, part: Part) -> None:
        """Send ``part`` as the next part number, in the window (waits for a free slot)."""
        upload_id = self._upload_id or await self._start_multipart()
        number = self._next_part
        self._next_part += 1

        async def attempt(checksum: str) -> Any:
            return await self._s3.upload_part(
                Bucket=self._bucket,
                Key=self._upload_key,
                UploadId=upload_id,
                PartNumber=number,
                Body=PartBody(part.buffers),
                ContentLength=part.size,
                ChecksumCRC32=checksum,
            )

        async def send() -> None:
            checksum = part.checksum
            response = await aws_call(
                f"s3 upload part {number}", attempt, checksum, policy=self._policy
            )
            self._parts[number] = {
                "PartNumber": number,
                "ETag": response["ETag"],
                "ChecksumCRC32": checksum,
            }

        await self._window.submit(send)

    async def commit(self, sha256_hex: str) -> int:
        """Make the object visible with metadata ``sha256``; returns the bytes written.

        ``sha256_hex`` is the digest of everything written, which the caller
        has computed (and checked against ``expected_sha256`` when that was
        given: a different digest here is a bug and raises ``ValueError``
        after aborting). On failure or cancellation the upload is aborted and
        no object is left (except in the metadata-copy window described in
        the module docstring).
        """
        self._check_open("commit")
        try:
            _check_sha256(sha256_hex, "sha256_hex")
            if self._expected is not None and sha256_hex != self._expected:
                msg = (
                    f"s3://{self._bucket}/{self._key}: digest {sha256_hex} differs "
                    f"from the expected {self._expected}"
                )
                raise ValueError(msg)
            if self._upload_id is None:
                await self._put(sha256_hex)
            else:
                await self._complete(sha256_hex)
        except BaseException:
            await self.abort()
            raise
        self._closed = self._committed = True
        self._buffer.clear()
        return self._written

    async def _put(self, sha256_hex: str) -> None:
        data = self._buffer.take(self._buffer.size)
        checksum = data.checksum

        async def attempt() -> Any:
            return await self._s3.put_object(
                Bucket=self._bucket,
                Key=self._key,
                Body=PartBody(data.buffers),
                ContentLength=data.size,
                ChecksumCRC32=checksum,
                Metadata={"sha256": sha256_hex},
            )

        await aws_call("s3 put object", attempt, policy=self._policy)

    async def _complete(self, sha256_hex: str) -> None:
        assert self._upload_id is not None
        if self._buffer.size:
            await self._send_part(self._buffer.take(self._buffer.size))
        await self._window.drain()
        parts = [self._parts[number] for number in sorted(self._parts)]
        try:
            await aws_call(
                "s3 complete multipart upload",
                self._s3.complete_multipart_upload,
                policy=self._policy,
                Bucket=self._bucket,
                Key=self._upload_key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
            )
        except AwsRejected as err:
            # A retried Complete whose first answer was lost finds the upload
            # gone: it succeeded if the object is there with our length.
            if err.code != "NoSuchUpload" or not await self._object_is_ours(sha256_hex):
                raise
        # The upload is complete: nothing is left to abort.
        self._upload_id = None
        if self._upload_key != self._key:
            await self._publish_staged(sha256_hex)

    async def _publish_staged(self, sha256_hex: str) -> None:
        """Copy the staging object to its key with its digest, once; then drop it."""
        staged = {"Bucket": self._bucket, "Key": self._upload_key}
        try:
            await aws_call(
                "s3 copy staged object with sha256",
                self._s3.copy_object,
                policy=self._policy,
                Bucket=self._bucket,
                Key=self._key,
                CopySource=staged,
                MetadataDirective="REPLACE",
                Metadata={"sha256": sha256_hex},
                # The copy's own checksum, of the whole object (not the parts').
                ChecksumAlgorithm="CRC32",
            )
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(_ABORT_DEADLINE):
                try:
                    await aws_call(
                        "s3 delete staged object",
                        self._s3.delete_object,
                        policy=_ABORT_POLICY,
                        **staged,
                    )
                except PipelineError as err:
                    # The staging prefix's lifecycle rule removes it later.
                    log.warning("staged object not deleted", key=self._upload_key, error=str(err))

    async def _object_is_ours(self, sha256_hex: str) -> bool:
        head = await head_object(self._s3, self._bucket, self._upload_key, self._policy)
        if head is None or int(head.get("ContentLength", -1)) != self._written:
            return False
        stored = (head.get("Metadata") or {}).get("sha256")
        return self._expected is None or stored == sha256_hex

    async def abort(self) -> None:
        """Drop the upload; a no-op after commit or a previous abort.

        Parts in flight are cancelled and waited for, then a started multipart
        upload is aborted, shielded from cancellation with its own short
        deadline. A failure is not raised (nothing is visible anyway): the
        abort is owed, tried again later (see the module docstring).
        """
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:  # nothing was sent, nothing is in flight
            return
        upload = OpenUpload(self._bucket, self._upload_key, upload_id)
        failure = "timed out"
        with trio.CancelScope(shield=True), trio.move_on_after(_ABORT_DEADLINE):
            # A part that lands after the abort would be kept by S3 until the
            # lifecycle rule: none may be in flight.
            await self._window.stop()
            try:
                await abort_upload(self._s3, upload, policy=_ABORT_POLICY)
                return
            except PipelineError as err:
                failure = str(err)
        log.warning("abort failed", key=self._key, upload_id=upload_id, error=failure)
        if self._owed is not None:
            self._owed.owe(self._s3, upload)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.abort()


async def open_entry_upload(
    s3: S3Client,
    *,
    bucket: str,
    key: str,
    expected_sha256: str | None,
    policy: Backoff = AWS_POLICY,
    part_size: int = PART_SIZE,
    parts: trio.Nursery | None = None,
    parts_in_flight: int = PARTS_IN_FLIGHT,
    owed: OwedAborts | None = None,
) -> EntryUpload:
    """Start streaming one object to ``s3://bucket/key``; nothing is sent yet.

    ``expected_sha256`` (lower-case hex) is the digest the metadata item
    promises, when it gives one: it saves a copy for large entries.
    ``part_size`` must be at least S3's 5 MiB minimum. With ``parts``, a
    nursery that outlives the upload, up to ``parts_in_flight`` parts are
    sent at once as its tasks; without, one after another by the writer.
    An abort that fails is handed to ``owed``, to be tried again later.
    """
    if expected_sha256 is not None:
        _check_sha256(expected_sha256, "expected_sha256")
    if part_size < MIN_PART_SIZE:
        msg = f"part_size must be at least {MIN_PART_SIZE} bytes, not {part_size}"
        raise ValueError(msg)
    # Nothing to send yet (the multipart upload starts with the second part),
    # but an async function checkpoints, as trio's conventions expect.
    await trio.lowlevel.checkpoint()
    return EntryUpload(
        s3,
        bucket=bucket,
        key=key,
        expected_sha256=expected_sha256,
        policy=policy,
        part_size=part_size,
        window=PartWindow(parts, parts_in_flight),
        owed=owed,
    )


def _staging_key(key: str) -> str:
    return f"{staging_prefix(STAGING_PREFIX, key)}{uuid.uuid4().hex}"
