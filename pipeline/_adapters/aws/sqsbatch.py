"""SQS batch calls: entries ten to a call, failures on AWS's side sent again.

The rounds every batch call of :mod:`pipeline._adapters.aws.sqs` goes through
(a module of their own so that one stays under the size limit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs

from pipeline._adapters.retry import pause
from pipeline._core.backoff import Backoff

__all__ = [
    "MAX_BATCH",
    "BatchCall",
    "EntryFailure",
    "batch_rounds",
    "chunks_of_ten",
    "failures",
]

# SQS's limit of entries per batch call.
MAX_BATCH = 10


@attrs.frozen
class EntryFailure:
    sender_fault: bool
    code: str | None
    reason: str


# One batch round: send the entries, get back the failed ones by entry index.
BatchCall = Callable[[list[tuple[int, Any]]], Awaitable[dict[int, EntryFailure]]]


async def batch_rounds(
    entries: Sequence[Any],
    call: BatchCall,
    chunks: Callable[[list[tuple[int, Any]]], list[list[tuple[int, Any]]]],
    *,
    policy: Backoff,
    what: str,
) -> dict[int, EntryFailure]:
    """Send ``entries`` in chunks, resending AWS-side failures per ``policy``.

    Returns the entries that failed for good: sender faults at once, AWS-side
    faults after the last attempt.
    """
    pending = list(enumerate(entries))
    failed: dict[int, EntryFailure] = {}
    attempt = 0
    while pending:
        attempt += 1
        retry_next: list[tuple[int, Any]] = []
        for chunk in chunks(pending):
            by_index = dict(chunk)
            for index, failure in (await call(chunk)).items():
                if failure.sender_fault or policy.gives_up_after(attempt):
                    failed[index] = failure
                else:
                    retry_next.append((index, by_index[index]))
        pending = retry_next
        if pending:
            await pause(
                policy,
                attempt,
                dependency="sqs",
                what=what,
                error=f"{len(pending)} entries failed on the AWS side",
            )
    return failed


def chunks_of_ten(pending: list[tuple[int, Any]]) -> list[list[tuple[int, Any]]]:
    return [pending[i : i + MAX_BATCH] for i in range(0, len(pending), MAX_BATCH)]


def failures(response: dict[str, Any]) -> dict[int, EntryFailure]:
    return {
        int(item["Id"]): EntryFailure(
            sender_fault=bool(item.get("SenderFault", False)),
            code=item.get("Code"),
            reason=f"{item.get('Code', 'error')}: {item.get('Message', '')}".strip(),
        )
        for item in response.get("Failed") or []
    }
