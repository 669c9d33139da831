"""Lifecycle events from a running service, read by a consumer through a rule and a queue."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from pipeline._adapters.aws.clients import AwsClients, open_aws_clients
from pipeline._adapters.aws.jobitems import EVENTS_OWED, EXPIRY_OWED, decode_item
from pipeline._adapters.aws.joboutbox import OUTBOX_PK, EventBus
from pipeline._adapters.aws.jobstore import JobStore
from pipeline._core.accounting import JobStatus
from pipeline._core.backoff import Backoff
from pipeline.ops.provisioning import provision_event_listener
from pipeline.testing.demo import build_zip, metadata_for
from pipeline.testing.moto import free_port
from tests.support.stack import Stack, open_stack

ADMIN = "admin-token-5678"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
ENTRIES = [("e/a.txt", b"alpha" * 50)]
FAST = Backoff(max_attempts=2, base=0.001, cap=0.01)


async def _status_is(stack: Stack, export_id: str, status: JobStatus) -> None:
    with trio.fail_after(60):
        while True:
            job = await stack.jobs.get_job(export_id)
            if job is not None and job.status is status:
                return
            await trio.sleep(0.1)


async def _read_events(aws: AwsClients, url: str, count: int) -> list[dict[str, Any]]:
    """The details of ``count`` events from the consumer's queue, in the order received."""
    found: list[dict[str, Any]] = []
    with trio.fail_after(60):
        while len(found) < count:
            response = await aws.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            for message in response.get("Messages", []):
                found.append(json.loads(message["Body"])["detail"])
                await aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return found


async def _items(stack: Stack, pk: str) -> list[dict[str, Any]]:
    response = await stack.aws.dynamodb.query(
        TableName=stack.jobs.table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": pk}},
        ConsistentRead=True,
    )
    return [decode_item(raw) for raw in response.get("Items", [])]


async def test_every_transition_arrives_in_order_per_job(aws_endpoint: str) -> None:
    """Four jobs on a running service: completed, unknown, cancelled-then-retried, and one
    whose process died after writing RUNNING: every transition into RUNNING or a final
    status arrives once per transition, in order per job, the dead one's RUNNING first."""
    async with (
        open_aws_clients(
            region="us-east-1", endpoint_url=aws_endpoint, pool_size=4, events=True
        ) as aws,
        open_stack(aws_endpoint) as stack,
    ):
        bus = f"bus-{stack.bucket}"
        url = await provision_event_listener(aws.events, aws.sqs, bus, f"ev-{stack.bucket}")
        for export_id in ("exp-ok", "exp-retried", "exp-dead"):
            stack.simulator.add_export(export_id, [("p.zip", build_zip(ENTRIES))])
            await stack.seed(export_id, metadata_for(ENTRIES))
        stack.simulator.set_status("exp-retried", "PENDING")
        # A process that wrote RUNNING and died before sending its event.
        async with open_aws_clients(
            region="us-east-1",
            endpoint_url=f"http://127.0.0.1:{free_port()}",
            pool_size=1,
            events=True,
        ) as unreachable:
            dying = JobStore(
                stack.aws.dynamodb, stack.jobs.table, FAST, events=EventBus(unreachable.events, bus)
            )
            died = await dying.begin_job("exp-dead", "c-dead", JobStatus.RUNNING)
        (owed,) = died.events_owed

        port = free_port()
        stop = await stack.run_service(HEALTH_PORT=str(port), ADMIN_TOKEN=ADMIN, EVENT_BUS_NAME=bus)
        await stack.send_job(["exp-ok", "exp-unknown", "exp-retried", "exp-dead"])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await _status_is(stack, "exp-retried", JobStatus.WAITING)
            assert (await client.post("/jobs/exp-retried/cancel", headers=AUTH)).status_code == 202
            stack.simulator.set_status("exp-retried", "READY")
            assert (await client.post("/jobs/exp-retried/retry", headers=AUTH)).status_code == 202
        for export_id in ("exp-ok", "exp-unknown", "exp-dead"):
            await stack.wait_final(export_id)
        await _status_is(stack, "exp-retried", JobStatus.COMPLETED)
        details = await _read_events(aws, url, 8)
        # Every debt settled: events cleared and outbox items gone; a job of one
        # file ended in its record, its result item expiring with the job.
        with trio.fail_after(60):
            while True:
                if not await _items(stack, OUTBOX_PK):
                    break
                await trio.sleep(0.1)
        items = await _items(stack, "exp-ok")
        assert {item["expiresAt"] for item in items} == {items[0]["expiresAt"]}
        assert all(EVENTS_OWED not in item and EXPIRY_OWED not in item for item in items)
        stop.set()

    by_job: dict[str, list[str]] = {}
    for detail in details:
        by_job.setdefault(detail["exportId"], []).append(detail["status"])
    assert by_job == {
        "exp-ok": ["RUNNING", "COMPLETED"],
        "exp-unknown": ["FAILED"],
        "exp-retried": ["CANCELLED", "RUNNING", "COMPLETED"],
        "exp-dead": ["RUNNING", "COMPLETED"],
    }
    assert len({detail["transitionId"] for detail in details}) == 8
    dead = [detail for detail in details if detail["exportId"] == "exp-dead"]
    assert dead[0]["transitionId"] == owed.transition_id
    assert [
        detail["runGeneration"] for detail in details if detail["exportId"] == "exp-retried"
    ] == [
        1,
        2,
        2,
    ]
