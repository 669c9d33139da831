"""BatchGetItem in chunks of 100, with DynamoDB's unprocessed keys retried.

BatchGetItem may leave keys unprocessed when a table is throttled; they are
asked for again through the one retry wait (``pause``), and only rounds that
achieve nothing count towards the policy's attempts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline._adapters.aws.clients import aws_call
from pipeline._adapters.aws.clienttypes import DynamoDbClient
from pipeline._adapters.retry import pause
from pipeline._core.backoff import Backoff
from pipeline._errors import Fault, RetriesExhausted

__all__ = ["BATCH_GET_KEYS", "batch_get"]

# BatchGetItem takes at most 100 keys a call.
BATCH_GET_KEYS = 100


async def batch_get(
    dynamodb: DynamoDbClient,
    table: str,
    keys: Sequence[dict[str, Any]],
    *,
    what: str,
    policy: Backoff,
    projection: str | None = None,
    names: dict[str, str] | None = None,
    consistent: bool = False,
) -> list[dict[str, Any]]:
    """The raw items of ``keys`` that exist, in no particular order (whole without ``projection``).

    Raises :class:`RetriesExhausted` (our infrastructure) when DynamoDB keeps
    every remaining key unprocessed through ``policy``'s attempts.
    """
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), BATCH_GET_KEYS):
        pending = list(keys[start : start + BATCH_GET_KEYS])
        attempt = 0
        while pending:
            request: dict[str, Any] = {"Keys": pending}
            if projection is not None:
                request["ProjectionExpression"] = projection
            if names:
                request["ExpressionAttributeNames"] = names
            if consistent:
                request["ConsistentRead"] = True
            response = await aws_call(
                what, dynamodb.batch_get_item, policy=policy, RequestItems={table: request}
            )
            found.extend((response.get("Responses") or {}).get(table, []))
            left = ((response.get("UnprocessedKeys") or {}).get(table) or {}).get("Keys") or []
            if not left:
                break
            # Progress restarts the count: only rounds that achieve nothing add up.
            attempt = 1 if len(left) < len(pending) else attempt + 1
            if policy.gives_up_after(attempt):
                msg = f"{what}: {len(left)} keys still unprocessed after {attempt} attempts"
                raise RetriesExhausted(msg, fault=Fault.INFRASTRUCTURE)
            pending = left
            await pause(
                policy,
                attempt,
                dependency="dynamodb",
                what=what,
                error=f"{len(left)} keys unprocessed",
            )
    return found
