"""Paused queues, shared by every process through control items in the jobs table.

One item per queue under ``pk = "#control"``, a key no export can have
(export IDs are ``[A-Za-z0-9._:-]``), ``sk = "pause#<queue>"``, with
``paused`` (bool) and ``updatedAt``. Being in the table, a pause survives a
restart of every process; each process reads the items on a clock it keeps
(:class:`~pipeline._service.pause.PauseGate`) and stops or restarts
receiving from the queue.
"""

from __future__ import annotations

from pipeline._adapters.aws.clients import aws_call
from pipeline._adapters.aws.jobitems import decode_item, encode, format_time, utc_now
from pipeline._adapters.aws.jobstore import JobStore

__all__ = ["CONTROL_PK", "QUEUES", "read_pauses", "set_paused"]

CONTROL_PK = "#control"
# The queues a pause names, as the contract spells them.
QUEUES = ("export-jobs", "download-tasks")
_PREFIX = "pause#"


async def set_paused(store: JobStore, queue: str, paused: bool) -> None:
    """Pause (or resume) ``queue`` for every process."""
    if queue not in QUEUES:
        msg = f"queue must be one of {', '.join(QUEUES)}, not {queue!r}"
        raise ValueError(msg)
    await aws_call(
        "dynamodb set pause",
        store.dynamodb.put_item,
        policy=store.policy,
        TableName=store.table,
        Item={
            "pk": encode(CONTROL_PK),
            "sk": encode(_PREFIX + queue),
            "paused": encode(paused),
            "updatedAt": encode(format_time(utc_now())),
        },
    )


async def read_pauses(store: JobStore) -> dict[str, bool]:
    """Whether each queue is paused (a queue never paused is not)."""
    response = await aws_call(
        "dynamodb read pauses",
        store.dynamodb.query,
        policy=store.policy,
        TableName=store.table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
        ExpressionAttributeValues={":pk": encode(CONTROL_PK), ":prefix": encode(_PREFIX)},
        ConsistentRead=True,
    )
    found = dict.fromkeys(QUEUES, False)
    for raw in response.get("Items") or []:
        values = decode_item(raw)
        queue = str(values["sk"])[len(_PREFIX) :]
        if queue in found:
            found[queue] = bool(values.get("paused", False))
    return found
