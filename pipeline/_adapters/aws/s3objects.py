"""Reading what S3 already holds of an entry: an object's head and its ``sha256``."""

from __future__ import annotations

from typing import Any, Protocol

from pipeline._adapters.aws.clients import aws_call
from pipeline._adapters.aws.clienttypes import AwsAnswer
from pipeline._core.backoff import AWS_POLICY, Backoff
from pipeline._errors import AwsRejected

__all__ = ["ObjectHeads", "existing_sha256", "head_object"]

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class ObjectHeads(Protocol):
    """The S3 call these reads make (an aiobotocore S3 client has it)."""

    async def head_object(self, **kwargs: Any) -> AwsAnswer: ...


async def head_object(
    s3: ObjectHeads, bucket: str, key: str, policy: Backoff
) -> dict[str, Any] | None:
    """The object's head (length, user metadata), ``None`` when there is none."""
    try:
        response: dict[str, Any] = await aws_call(
            "s3 head object", s3.head_object, policy=policy, Bucket=bucket, Key=key
        )
    except AwsRejected as err:
        if err.code in _NOT_FOUND_CODES:
            return None
        raise
    return response


async def existing_sha256(
    s3: ObjectHeads, bucket: str, key: str, *, policy: Backoff = AWS_POLICY
) -> str | None:
    """The ``sha256`` user metadata of an existing object; ``None`` when absent.

    ``None`` both when there is no object and when it has no ``sha256``, so a
    caller that finds the digest it expects can skip the upload, and
    otherwise uploads. (Without ``s3:ListBucket`` S3 answers a missing key
    with 403, which raises :class:`AwsRejected`.)
    """
    head = await head_object(s3, bucket, key, policy)
    if head is None:
        return None
    stored = (head.get("Metadata") or {}).get("sha256")
    return str(stored) if stored else None
