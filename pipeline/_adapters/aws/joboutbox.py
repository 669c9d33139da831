"""Work a job transition owes once written: its lifecycle event, its items' expiry.

An event sent before its transition is written could announce a change that
never happened; one sent after it is lost if the process dies in between. So
the transition's own conditional write appends the event to the summary
item's ``eventsOwed`` list (:func:`~.jobitems.change_update`), and the event
is sent after it and then cleared: whoever sends, sends the whole list from
its front, so a job's events go out in the order of its transitions (the
list is appended to by conditional writes, which DynamoDB applies one at a
time). The same write puts an outbox item (``pk = "#outbox"``, ``sk =
<exportId>``) in one transaction; it is deleted once the job owes nothing. So
what a process that died owed is found by one Query (:func:`owed_jobs`), not
a Scan of the table, and sent by the sweeper of another process. At least
once: a repeat carries the same ``transitionId``.

Retention works the same way: the write that ends a job sets ``expiresAt``
on the summary item and ``expiryOwed``; the job's other items (file results,
path pieces) are then given the same ``expiresAt`` (or lose it, when the job
is retried) and the mark is cleared.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs
import structlog
import trio

from pipeline._adapters.aws.clients import aws_call, refused_item
from pipeline._adapters.aws.clienttypes import EventsClient
from pipeline._adapters.aws.jobitems import (
    EVENTS_OWED,
    EXPIRY_OWED,
    JOB_SK,
    JobItem,
    OwedEvent,
    decode_item,
    encode,
    format_time,
    item_key,
    job_document,
    job_from_item,
    parse_time,
)
from pipeline._core.backoff import AWS_POLICY, Backoff
from pipeline._errors import AwsRejected, AwsUnavailable, PipelineError

if TYPE_CHECKING:
    from pipeline._adapters.aws.jobstore import JobStore

__all__ = [
    "DETAIL_TYPE",
    "OUTBOX_PK",
    "SOURCE",
    "EventBus",
    "drop_outbox_item",
    "event_detail",
    "outbox_item",
    "owed_jobs",
    "settle_owed",
]

log = structlog.get_logger("pipeline.events")

SOURCE = "export-pipeline"
# The partition of outbox items (not an export ID: those have no "#").
OUTBOX_PK = "#outbox"
DETAIL_TYPE = "Export Job Status Changed"
# Items of one job given their expiry at once.
STAMPS_AT_ONCE = 16
# Clearing sent events races other senders; each refused clear reads again.
CLEAR_ATTEMPTS = 5


@attrs.frozen
class EventBus:
    """The EventBridge bus lifecycle events go to (``EVENT_BUS_NAME``)."""

    events: EventsClient
    name: str
    policy: Backoff = AWS_POLICY

    async def put(self, detail: dict[str, Any]) -> None:
        """Put one event; a failed entry is retried like a throttled call."""

        async def put_events(**kwargs: Any) -> Any:
            response = await self.events.put_events(**kwargs)
            if response.get("FailedEntryCount"):
                (entry,) = response["Entries"]
                msg = f"eventbridge put events: {entry.get('ErrorMessage') or 'entry failed'}"
                raise AwsUnavailable(msg, code=entry.get("ErrorCode"))
            return response

        entry = {
            "Source": SOURCE,
            "DetailType": DETAIL_TYPE,
            "Detail": json.dumps(detail),
            "EventBusName": self.name,
        }
        await aws_call("events put events", put_events, policy=self.policy, Entries=[entry])


def event_detail(job: JobItem, owed: OwedEvent) -> dict[str, Any]:
    """The event's detail: the summary item as it stands, with the transition's status and time.

    Sent right after the transition (the usual case) it is the item as that
    write left it; sent later for a process that died, the counts are newer.
    """
    return {
        **job_document(job),
        "status": owed.status.value,
        "updatedAt": format_time(owed.at),
        "runGeneration": owed.generation,
        "transitionId": owed.transition_id,
    }


async def settle_owed(store: JobStore, job: JobItem) -> None:
    """Send the job's owed events in order and clear them; give its items their expiry.

    A failure is logged, not raised: the transition stands, and the sweeper
    sends what is still owed.
    """
    try:
        dropped = False
        if job.events_owed and store.events is not None:
            for owed in job.events_owed:
                await store.events.put(event_detail(job, owed))
            dropped = await _clear_events(store, job)
        if job.expiry_owed:
            await _follow_expiry(store, job)
        if not dropped:
            await drop_outbox_item(store, job.export_id)
    except PipelineError as err:
        log.warning(
            "job's events or expiry not settled; the sweeper settles them",
            exportId=job.export_id,
            error=str(err),
        )


async def _clear_events(store: JobStore, job: JobItem) -> bool:
    """Take the sent events off the front of ``eventsOwed`` (others may have been appended).

    Whether the outbox item went too: when the job then owes nothing at all
    (every event sent, no expiry to follow), one transaction clears the events
    and deletes the outbox item, instead of a write for each.
    """
    sent = {owed.transition_id for owed in job.events_owed}
    owed = [item.transition_id for item in job.events_owed]
    expiry_owed = job.expiry_owed
    for _ in range(CLEAR_ATTEMPTS):
        mine = 0
        while mine < len(owed) and owed[mine] in sent:
            mine += 1
        if not mine:
            return False
        names = {"#o": EVENTS_OWED, "#id": "id"}
        values = {":first": encode(owed[0]), ":n": encode(len(owed))}
        condition = "#o[0].#id = :first AND size(#o) = :n"
        # All of it: the attribute goes, so the sweeper's scan no longer finds the job.
        if mine == len(owed):
            expression = "REMOVE #o"
        else:
            expression = "REMOVE " + ", ".join(f"#o[{n}]" for n in range(mine))
        clear = {
            "TableName": store.table,
            "Key": item_key(job.export_id, JOB_SK),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        last = mine == len(owed) and not expiry_owed
        try:
            if last:
                names["#m"] = EXPIRY_OWED
                clear["ConditionExpression"] = f"{condition} AND attribute_not_exists(#m)"
                outbox = item_key(OUTBOX_PK, job.export_id)
                await aws_call(
                    "dynamodb clear owed events",
                    store.dynamodb.transact_write_items,
                    policy=store.policy,
                    TransactItems=[
                        {"Update": {**clear, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}},
                        {"Delete": {"TableName": store.table, "Key": outbox}},
                    ],
                )
            else:
                await aws_call(
                    "dynamodb clear owed events",
                    store.dynamodb.update_item,
                    policy=store.policy,
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    **clear,
                )
            return last
        except AwsRejected as err:
            if err.code != "ConditionalCheckFailedException":
                raise
            raw = refused_item(err)
        fresh = job_from_item(raw) if raw is not None else await store.get_job(job.export_id)
        owed = [] if fresh is None else [item.transition_id for item in fresh.events_owed]
        expiry_owed = fresh is not None and fresh.expiry_owed
    return False


async def _follow_expiry(store: JobStore, job: JobItem) -> None:
    """Give every other item of the job the summary item's ``expiresAt`` (or none), then clear."""
    keys = await _other_keys(store, job.export_id)

    async def stamp(key: dict[str, Any]) -> None:
        async with limiter:
            kwargs: dict[str, Any] = {"UpdateExpression": "REMOVE expiresAt"}
            if job.expires_at is not None:
                kwargs = {
                    "UpdateExpression": "SET expiresAt = :e",
                    "ExpressionAttributeValues": {":e": encode(job.expires_at)},
                }
            try:
                await aws_call(
                    "dynamodb set item expiry",
                    store.dynamodb.update_item,
                    policy=store.policy,
                    TableName=store.table,
                    Key=key,
                    # Never create an item that went meanwhile (a forgotten failed file).
                    ConditionExpression="attribute_exists(pk)",
                    **kwargs,
                )
            except AwsRejected as err:
                if err.code != "ConditionalCheckFailedException":
                    raise

    limiter = trio.CapacityLimiter(STAMPS_AT_ONCE)
    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(stamp, key)
    # Only if the job's expiry is still the one followed: a retry or a new end
    # since has set the mark again, for its own expiry.
    if job.expires_at is None:
        condition, values = "attribute_not_exists(expiresAt)", {}
    else:
        condition, values = "expiresAt = :e", {":e": encode(job.expires_at)}
    try:
        await aws_call(
            "dynamodb clear expiry mark",
            store.dynamodb.update_item,
            policy=store.policy,
            TableName=store.table,
            Key=item_key(job.export_id, JOB_SK),
            UpdateExpression="REMOVE #m",
            ConditionExpression=condition,
            ExpressionAttributeNames={"#m": EXPIRY_OWED},
            **({"ExpressionAttributeValues": values} if values else {}),
        )
    except AwsRejected as err:
        if err.code != "ConditionalCheckFailedException":
            raise


async def _other_keys(store: JobStore, export_id: str) -> list[dict[str, Any]]:
    """The keys of the job's items other than the summary item."""
    keys: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": store.table,
        "KeyConditionExpression": "pk = :pk",
        "ProjectionExpression": "pk, sk",
        "ExpressionAttributeValues": {":pk": encode(export_id)},
        "ConsistentRead": True,
    }
    while True:
        response = await aws_call(
            "dynamodb query job items", store.dynamodb.query, policy=store.policy, **kwargs
        )
        for raw in response.get("Items") or []:
            if decode_item(raw)["sk"] != JOB_SK:
                keys.append({"pk": raw["pk"], "sk": raw["sk"]})
        start = response.get("LastEvaluatedKey")
        if not start:
            return keys
        kwargs["ExclusiveStartKey"] = start


def outbox_item(export_id: str, at: datetime) -> dict[str, Any]:
    """The item that names a job owing work, under one partition the sweeper queries."""
    return {"pk": encode(OUTBOX_PK), "sk": encode(export_id), "since": encode(format_time(at))}


async def owed_jobs(store: JobStore) -> list[tuple[str, datetime]]:
    """The exports whose jobs owe events or an expiry, with since when (one Query)."""
    found: list[tuple[str, datetime]] = []
    kwargs: dict[str, Any] = {
        "TableName": store.table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": encode(OUTBOX_PK)},
        "ConsistentRead": True,
    }
    while True:
        response = await aws_call(
            "dynamodb query owed work", store.dynamodb.query, policy=store.policy, **kwargs
        )
        for raw in response.get("Items") or []:
            values = decode_item(raw)
            found.append((values["sk"], parse_time(values["since"])))
        start = response.get("LastEvaluatedKey")
        if not start:
            return found
        kwargs["ExclusiveStartKey"] = start


async def drop_outbox_item(store: JobStore, export_id: str) -> bool:
    """Delete the job's outbox item if the job owes nothing (checked in the same transaction)."""
    try:
        await aws_call(
            "dynamodb drop outbox item",
            store.dynamodb.transact_write_items,
            policy=store.policy,
            TransactItems=[
                {
                    "ConditionCheck": {
                        "TableName": store.table,
                        "Key": item_key(export_id, JOB_SK),
                        "ConditionExpression": (
                            "attribute_not_exists(#o) AND attribute_not_exists(#m)"
                        ),
                        "ExpressionAttributeNames": {"#o": EVENTS_OWED, "#m": EXPIRY_OWED},
                    }
                },
                {
                    "Delete": {
                        "TableName": store.table,
                        "Key": item_key(OUTBOX_PK, export_id),
                    }
                },
            ],
        )
    except AwsRejected as err:
        if err.code != "ConditionalCheckFailedException":
            raise
        return False
    return True
