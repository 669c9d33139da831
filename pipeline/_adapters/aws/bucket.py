"""The output bucket: where an export's entries land in S3, and how one is written there.

One value made where the graph is wired: the S3 client, the bucket
(``S3_BUCKET_NAME``), the key prefix (``S3_PREFIX``), the retry policy, and
the aborts owed on it. An entry's key is decided here (contract 4), its
upload and the check of an object already there go through it, so the file
stage names the entry and the bucket does the rest
(:mod:`pipeline._adapters.aws.s3sink`).
"""

from __future__ import annotations

import attrs
import trio

from pipeline._adapters.aws.clienttypes import S3Client
from pipeline._adapters.aws.s3objects import existing_sha256
from pipeline._adapters.aws.s3orphans import OwedAborts
from pipeline._adapters.aws.s3sink import EntryUpload, open_entry_upload
from pipeline._core.backoff import AWS_POLICY, Backoff

__all__ = ["OutputBucket"]


@attrs.frozen
class OutputBucket:
    """The bucket exports are written to, under their prefix."""

    s3: S3Client
    name: str
    prefix: str = ""
    policy: Backoff = AWS_POLICY
    # Multipart uploads whose abort failed, tried again until gone (run by the graph).
    owed: OwedAborts = attrs.field(factory=OwedAborts)

    def object_key(self, export_id: str, path: str) -> str:
        """Where an entry of an export lands (contract 4)."""
        return f"{self.prefix}{export_id}/{path}"

    async def existing_sha256(self, key: str) -> str | None:
        """The ``sha256`` user metadata of the object at ``key``; ``None`` when absent."""
        return await existing_sha256(self.s3, self.name, key, policy=self.policy)

    async def open_entry_upload(
        self, key: str, *, expected_sha256: str | None, parts: trio.Nursery
    ) -> EntryUpload:
        """Start streaming one object to ``key``, its parts sent as tasks of ``parts``.

        See :func:`~pipeline._adapters.aws.s3sink.open_entry_upload`; an abort
        that fails is owed to :attr:`owed`.
        """
        return await open_entry_upload(
            self.s3,
            bucket=self.name,
            key=key,
            expected_sha256=expected_sha256,
            policy=self.policy,
            parts=parts,
            owed=self.owed,
        )
