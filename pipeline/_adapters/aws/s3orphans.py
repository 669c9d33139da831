"""No multipart upload left open: aborts that failed are owed, older uploads are cleared.

An open multipart upload costs its parts' storage until it is aborted, and it
is invisible in the bucket's listing. Two ways one could stay open, and what
is done about each:

- An abort that fails (S3 down past the abort's few quick attempts, during
  shutdown or after a failed part) is not forgotten: it is *owed*
  (:class:`OwedAborts`) and tried again in the background, with growing
  pauses, until S3 answers that the upload is gone. Once at shutdown too,
  shielded and briefly.
- A process killed mid-upload cannot abort at all. The key of an entry's
  upload is known in advance (the object's key, or a staging prefix made from
  it, see :func:`upload_prefix`), so starting an entry's upload first lists
  the open uploads under that prefix (one ``ListMultipartUploads``) and aborts
  them (:func:`abort_older_uploads`): whoever uploads the entry next clears
  what an earlier attempt left.

The bucket's lifecycle rule ``AbortIncompleteMultipartUpload`` still bounds
what neither reaches (an entry never uploaded again).
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

import attrs
import structlog
import trio

from pipeline._adapters.aws.clients import aws_call
from pipeline._adapters.aws.clienttypes import AwsAnswer
from pipeline._core.backoff import AWS_POLICY, Backoff
from pipeline._errors import AwsRejected, PipelineError

__all__ = [
    "MultipartCalls",
    "OpenUpload",
    "OwedAborts",
    "abort_older_uploads",
    "abort_upload",
    "staging_prefix",
    "upload_prefix",
]

log = structlog.get_logger("pipeline.s3orphans")

# The pause between rounds of owed aborts: first, and at most.
FIRST_PAUSE_SECONDS = 2.0
MAX_PAUSE_SECONDS = 60.0
# One owed abort's attempts per round: the round itself is retried.
_ROUND_POLICY = Backoff(max_attempts=2, base=0.2, cap=1.0)
# At shutdown: one last round, shielded, within this.
_LAST_ROUND_SECONDS = 2.0


class MultipartCalls(Protocol):
    """The S3 calls made here (an aiobotocore S3 client has them)."""

    async def list_multipart_uploads(self, **kwargs: Any) -> AwsAnswer: ...

    async def abort_multipart_upload(self, **kwargs: Any) -> AwsAnswer: ...


@attrs.frozen
class OpenUpload:
    """A multipart upload by its bucket, key and ID."""

    bucket: str
    key: str
    upload_id: str


def staging_prefix(staging_root: str, key: str) -> str:
    """Where the staged uploads of ``key`` go: one prefix per key, of fixed length."""
    return f"{staging_root}{hashlib.sha256(key.encode()).hexdigest()[:32]}/"


def upload_prefix(upload_key: str, key: str, staging_root: str) -> str:
    """The prefix under which earlier uploads of the entry at ``key`` are found."""
    return upload_key if upload_key == key else staging_prefix(staging_root, key)


async def abort_upload(s3: MultipartCalls, upload: OpenUpload, *, policy: Backoff) -> None:
    """Abort ``upload``; an upload already gone counts as aborted."""
    try:
        await aws_call(
            "s3 abort multipart upload",
            s3.abort_multipart_upload,
            policy=policy,
            Bucket=upload.bucket,
            Key=upload.key,
            UploadId=upload.upload_id,
        )
    except AwsRejected as err:
        if err.code != "NoSuchUpload":
            raise


async def abort_older_uploads(
    s3: MultipartCalls,
    bucket: str,
    prefix: str,
    *,
    exact: bool,
    policy: Backoff = AWS_POLICY,
) -> int:
    """Abort the open uploads under ``prefix`` (``exact``: of that key only); how many.

    Called before an entry's upload starts, so every upload found is older.
    One listing page (up to 1,000 uploads) is plenty for one entry's key.
    """
    response = await aws_call(
        "s3 list multipart uploads",
        s3.list_multipart_uploads,
        policy=policy,
        Bucket=bucket,
        Prefix=prefix,
    )
    found = [
        OpenUpload(bucket, str(item["Key"]), str(item["UploadId"]))
        for item in response.get("Uploads") or []
        if not exact or item["Key"] == prefix
    ]
    for upload in found:
        await abort_upload(s3, upload, policy=policy)
    if found:
        log.info("older uploads of the entry aborted", prefix=prefix, count=len(found))
    return len(found)


class OwedAborts:
    """Aborts that failed, tried again by :meth:`run` until S3 confirms each.

    :meth:`owe` never blocks and never fails: the upload that could not be
    aborted is remembered, and the caller goes on.
    """

    def __init__(self) -> None:
        self._owed: dict[OpenUpload, MultipartCalls] = {}
        self._wake = trio.Event()

    def __len__(self) -> int:
        return len(self._owed)

    def owe(self, s3: MultipartCalls, upload: OpenUpload) -> None:
        """Remember ``upload`` to be aborted later through ``s3``."""
        log.info("abort owed; tried again later", key=upload.key, upload_id=upload.upload_id)
        self._owed[upload] = s3
        self._wake.set()

    async def settle(self) -> None:
        """Try every owed abort once; those that fail again stay owed."""
        for upload, s3 in list(self._owed.items()):
            try:
                await abort_upload(s3, upload, policy=_ROUND_POLICY)
            except PipelineError as err:
                log.debug("owed abort failed again", key=upload.key, error=str(err))
                continue
            self._owed.pop(upload, None)
            log.info("owed abort done", key=upload.key, upload_id=upload.upload_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Settle owed aborts until cancelled; then one last round, shielded and brief."""
        task_status.started()
        pause = FIRST_PAUSE_SECONDS
        try:
            while True:
                if not self._owed:
                    await self._wake.wait()
                    self._wake = trio.Event()
                    pause = FIRST_PAUSE_SECONDS
                await trio.sleep(pause)
                await self.settle()
                pause = min(pause * 2, MAX_PAUSE_SECONDS)
        finally:
            if self._owed:
                with trio.CancelScope(shield=True), trio.move_on_after(_LAST_ROUND_SECONDS):
                    await self.settle()
                if self._owed:
                    # The next upload of each entry, or the lifecycle rule, clears them.
                    log.warning("aborts still owed at exit", count=len(self._owed))
